"""What a registry already holds: ``exporter run`` skips a variant whose fingerprint (``exporter.fingerprint``)
is published under its default tag in the recipe's registry, and says so."""

from __future__ import annotations

import json
from collections.abc import Callable

from exporter.ship.oci_ref import Reference
from exporter.ship.registry import FINGERPRINT, client_for, variant_tag


def published_with(target: str, revision: str, wanted: dict[str, str], *, insecure: bool = False) -> dict[str, str]:
    """Variant id -> reference, for each variant of ``wanted`` (id -> fingerprint digest) whose default tag
    (``default_tag``: ``<sha12>-<variant>``) in the repository of ``target`` holds a manifest annotated with that
    same fingerprint (``FINGERPRINT``). RegistryError when the registry cannot be asked."""
    ref = Reference.parse(target)
    found = {}
    with client_for(ref, insecure, None) as client:
        for vid, digest in wanted.items():
            tag = variant_tag(revision, vid)
            if client.manifest_digest(ref.repository, tag) is None:
                continue
            data, _ = client.get_manifest(ref.repository, tag)
            try:
                held = (json.loads(data).get("annotations") or {}).get(FINGERPRINT)
            except (ValueError, AttributeError):
                held = None
            if held == digest:
                found[vid] = str(Reference(ref.host, ref.repository, tag))
    return found


def already_published(target: str | None, revision: str | None, wanted: dict[str, str], note: Callable[[str], None]):
    """``published_with`` for an export (``target``: its plan's ``publish``, a fleet recipe's; None: no registry),
    each found variant noted; a registry that cannot be asked costs only the rebuild, and the note says so."""
    from exporter.errors import ExporterError

    if not target or not wanted or not revision:
        return {}
    try:
        found = published_with(target, revision, wanted)
    except ExporterError as exc:
        note(f"Could not ask {target} what it holds ({exc.message}); building every variant")
        return {}
    for vid, where in found.items():
        note(f"{vid}: already published with the same fingerprint at {where}; not rebuilt")
    return found
