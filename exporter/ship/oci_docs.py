"""The OCI documents exporter pushes, built in one place: the media types, the image manifest (a config blob
described by its digest and size, the layers, the annotations) and the canonical JSON bytes a manifest is
pushed and digested as. Used by the exporter dialect (``exporter.ship.registry``) and the ModelPack dialect
(``exporter.ship.modelpack``); ``exporter.ship.oci_client`` sends them.
"""

from __future__ import annotations

import hashlib
import json

import oras.defaults

MANIFEST_MEDIA_TYPE = oras.defaults.default_manifest_media_type
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


def image_manifest(
    *, media_type: str, artifact_type: str, config_media_type: str, config: bytes, layers: list, annotations: dict
) -> dict:
    """An OCI image manifest document: ``config`` (the blob's bytes) described by its digest and size."""
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "artifactType": artifact_type,
        "config": {
            "mediaType": config_media_type,
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            "size": len(config),
        },
        "layers": layers,
        "annotations": annotations,
    }


def canonical_json(doc: dict) -> bytes:
    """The canonical bytes a manifest is pushed and digested as (sorted keys, no spaces, UTF-8)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
