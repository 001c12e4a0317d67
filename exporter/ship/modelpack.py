"""CNCF ModelPack (model-spec v1) artifacts: media types, the model config, the manifest, and reading one.

One raw layer per file, in path order: weights (``.onnx``, ``.bin``, ``.safetensors``, OpenVINO ``.xml``)
as ``weight.v1.raw``, tokenizer/config files as ``weight.config.v1.raw``, README/LICENSE as ``doc.v1.raw``,
and our narrowed ``manifest.json`` (nothing lost: parity, bench, provenance) as a ``doc.v1.raw`` layer at
path ``manifest.json`` (the config schema allows no extension field). Each layer carries
``org.cncf.model.filepath`` and ``org.cncf.model.file.metadata+json`` with fixed mode/uid/gid/mtime (the
spec's reproducibility rules), so the same variant always gives the same manifest digest.

The config (``application/vnd.cncf.model.config.v1+json``) is checked against the spec's JSON Schema
(``exporter/schema/modelpack-config.v1.schema.json``, copied from modelpack/model-spec) when written and read.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import PurePosixPath

import jsonschema

from exporter import kinds
from exporter import manifest as mf
from exporter.errors import IntegrityError
from exporter.ship.oci_docs import canonical_json, image_manifest
from exporter.ship.oci_ref import DIGEST_RE
from exporter.ship.package import FIXED_MTIME, check_layout, variant_files

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
CODE = "application/vnd.cncf.model.code.v1.raw"
DATASET = "application/vnd.cncf.model.dataset.v1.raw"
RAW_LAYER_TYPES = frozenset({WEIGHT, WEIGHT_CONFIG, DOC, CODE, DATASET})
FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
TITLE = "org.opencontainers.image.title"

# closed sets as data: which layer type a file is, by suffix / name
_WEIGHT_SUFFIXES = frozenset({".onnx", ".onnx_data", ".bin", ".safetensors", ".xml", ".pt", ".pth", ".gguf"})
_DOC_NAMES = frozenset({"readme.md", "license", "license.txt", "license.md", "notice"})
_CODE_SUFFIXES = frozenset({".py"})
# backend -> ModelPack config.format
_FORMAT = {"onnx": "onnx", "openvino": "openvino", "torch": "pytorch", "quanto": "pytorch"}


def layer_media_type(path: str) -> str:
    p = PurePosixPath(path)
    if path == mf.MANIFEST_NAME or p.name.lower() in _DOC_NAMES:
        return DOC
    if p.suffix.lower() in _WEIGHT_SUFFIXES:
        return WEIGHT
    if p.suffix.lower() in _CODE_SUFFIXES:
        return CODE
    return WEIGHT_CONFIG


@cache
def config_schema() -> dict:
    return json.loads(resources.files("exporter").joinpath("schema/modelpack-config.v1.schema.json").read_text())


def validate_config(doc: object, where: str) -> None:
    validator = jsonschema.Draft202012Validator(config_schema(), format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise IntegrityError(
            f"{where}: its ModelPack config is invalid at {at}: {error.message[:160]}.", "Refusing it."
        )


def _file_metadata(path: str, size: int) -> str:
    mtime = datetime.fromtimestamp(FIXED_MTIME, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {"name": PurePosixPath(path).name, "mode": 0o644, "uid": 0, "gid": 0, "size": size, "mtime": mtime}
    return json.dumps({**meta, "typeflag": 0}, separators=(",", ":"))


def files_of(narrowed: dict, manifest_json: bytes) -> list[dict]:
    """(path, sha256, size) records of every file a pull writes: the variant's, the shared, manifest.json."""
    vid = narrowed["variants"][0]["id"]
    recs = [{"path": r["path"], "sha256": r["sha256"], "size": r["size"]} for r in variant_files(narrowed, vid)]
    own = {"path": mf.MANIFEST_NAME, "sha256": hashlib.sha256(manifest_json).hexdigest(), "size": len(manifest_json)}
    return sorted([*recs, own], key=lambda r: r["path"])


def config_bytes(narrowed: dict, files: list[dict]) -> bytes:
    """The ModelPack config: the pin in ``descriptor.revision``, format/precision/quantisation of the variant."""
    v = narrowed["variants"][0]
    src = narrowed["source"]
    name = src.get("repo") or "model"
    precision = (v.get("build") or {}).get("precision") or v["precision"]  # openvino-bf16: class fp16, runs bf16
    config = {
        "format": _FORMAT.get(v["backend"], v["backend"]),
        "precision": precision,
        "capabilities": {"inputTypes": ["text"], "outputTypes": ["embedding"]},
    }
    if precision.startswith("int"):
        config["quantization"] = precision
    architectures = (narrowed.get("model") or {}).get("architecture")
    if isinstance(architectures, str):
        config["architecture"] = architectures
    descriptor = {
        "name": name,
        "title": f"{name} ({v['id']})",
        "version": v["id"],
        "revision": src.get("revision") or "",
        "createdAt": narrowed["created_at"],
        "family": kinds.of_manifest(narrowed).kind.value,
        "description": f"{v['id']} variant exported and parity-checked by exporter {narrowed['tool_version']}",
    }
    doc = {
        "descriptor": descriptor,
        "config": config,
        "modelfs": {"type": "layers", "diffIds": [f"sha256:{r['sha256']}" for r in files]},
    }
    validate_config(doc, "this variant")
    return canonical_json(doc)


def check_bound(cfg: dict, narrowed: dict, manifest_json: bytes, where: str) -> None:
    """Refuse a ModelPack config that is not exactly the one ``narrowed`` makes (name, revision, pin, format,
    diffIds...). The config blob itself is signed by nobody, but ``manifest.json`` is (it is a subject of the
    signature and of the attestation): rebuilt from it, the config is bound to what was signed, so a
    re-pushed manifest with a forged config fails with exit 4 instead of showing the forged name."""
    expected = json.loads(config_bytes(narrowed, files_of(narrowed, manifest_json)))
    if cfg == expected:
        return
    changed = sorted(
        f"{part}.{k}"
        for part in ("descriptor", "config", "modelfs")
        for k in set((cfg.get(part) or {}) | (expected.get(part) or {}))
        if (cfg.get(part) or {}).get(k) != (expected.get(part) or {}).get(k)
    ) or ["(its other fields)"]
    raise IntegrityError(
        f"{where}: its ModelPack config does not match its signed manifest.json ({', '.join(changed[:4])}).",
        "Refusing it; the config was changed after publishing.",
    )


def manifest_bytes(config: bytes, files: list[dict], annotations: dict[str, str], media_type: str) -> bytes:
    """The OCI image manifest (canonical JSON) of a ModelPack artifact."""
    layers = [
        {
            "mediaType": layer_media_type(r["path"]),
            "digest": f"sha256:{r['sha256']}",
            "size": r["size"],
            "annotations": {FILEPATH: r["path"], TITLE: r["path"], FILE_METADATA: _file_metadata(r["path"], r["size"])},
        }
        for r in files
    ]
    doc = image_manifest(
        media_type=media_type,
        artifact_type=ARTIFACT_TYPE,
        config_media_type=CONFIG_MEDIA_TYPE,
        config=config,
        layers=layers,
        annotations=annotations,
    )
    return canonical_json(doc)


def is_modelpack(doc: dict) -> bool:
    return doc.get("artifactType") == ARTIFACT_TYPE or (doc.get("config") or {}).get("mediaType") == CONFIG_MEDIA_TYPE


def read_layers(doc: dict, config: bytes, where: str) -> list[tuple[str, str, int]]:
    """(path, digest, size) per layer of a ModelPack manifest, after checking paths, types and diffIds."""
    try:
        cfg = json.loads(config)
    except ValueError as exc:
        raise IntegrityError(f"{where}: its ModelPack config is not JSON.", "Refusing it.") from exc
    validate_config(cfg, where)
    layers, retitled = [], []
    for i, layer in enumerate(doc.get("layers") or []):
        ann = layer.get("annotations") or {}
        path = ann.get(FILEPATH) or ann.get(TITLE)
        if TITLE in ann and FILEPATH in ann and ann[TITLE] != ann[FILEPATH]:
            retitled.append((i, str(ann[TITLE])[:80], str(ann[FILEPATH])[:80]))
        if layer.get("mediaType") not in RAW_LAYER_TYPES or not isinstance(path, str):
            raise IntegrityError(
                f"{where}: layer {i} is not a raw ModelPack file with a file path (tar layers are not read).",
                "Push each file as its own raw layer.",
            )
        size = layer.get("size")
        if not DIGEST_RE.match(str(layer.get("digest"))) or type(size) is not int or size < 0:
            raise IntegrityError(f"{where}: layer {i} has a malformed digest or size.", "Refusing it.")
        layers.append((path, layer["digest"], size))
    paths = [p for p, _, _ in layers]
    check_layout([p for p in paths if p != mf.MANIFEST_NAME], where)
    if paths.count(mf.MANIFEST_NAME) > 1 or any(p.startswith(mf.MANIFEST_NAME + "/") for p in paths):
        raise IntegrityError(f"{where} lists {mf.MANIFEST_NAME!r} twice or as a folder.", "Refusing it.")
    if cfg["modelfs"]["diffIds"] != [d for _, d, _ in layers]:
        raise IntegrityError(f"{where}: config.modelfs.diffIds do not match its layers.", "Refusing it.")
    if retitled:  # a client that writes by title would write elsewhere than the path checked; we write them equal
        i, title, path = retitled[0]
        raise IntegrityError(
            f"{where}: layer {i} is titled {title!r} but its file path is {path!r}.",
            "Refusing it; a layer's title and file path must be the same.",
        )
    return layers
