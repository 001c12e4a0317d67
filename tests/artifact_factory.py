"""Small, schema-valid artifact folders for package/registry tests.

``make_artifact`` writes real files (a few KiB each) in the artifact layout and a manifest whose records
match them, so every integrity check runs for real. With ``model_dir`` the shared files are a real
sentence-transformers folder (e.g. the tiny test model), so a pulled copy loads with the torch backend.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from exporter import manifest as mf
from exporter.fsutil import record_files

REVISION = "0123456789abcdef0123456789abcdef01234567"
SHA12 = REVISION[:12]
REPO = "acme/tiny-embedder"

_SHARED = {
    "config.json": b'{"architectures": ["BertModel"], "hidden_size": 32}\n',
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "WordPiece"}}\n',
    "modules.json": b'[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]\n',
    "1_Pooling/config.json": b'{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}\n',
}
# id -> (backend, precision, main file, extra files)
_VARIANTS = {
    "onnx": ("onnx", "fp32", "onnx/model.onnx", ()),
    "onnx-qint8": ("onnx", "int8", "onnx/model_qint8_avx2.onnx", ()),
    "openvino": ("openvino", "fp32", "openvino/openvino_model.xml", ("openvino/openvino_model.bin",)),
}


def _blob(name: str, size: int, seed: str) -> bytes:
    """Deterministic pseudo-random bytes (so two artifacts made alike are byte-identical)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{name}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _parity(passed: bool) -> dict:
    return {
        "cosine_min": 0.9999 if passed else 0.91,
        "cosine_mean": 0.99995 if passed else 0.95,
        "cosine_p01": 0.9999 if passed else 0.92,
        "max_abs_diff": 0.001,
        "threshold": {"cosine_min": 0.9999},
        "passed": passed,
        "failures": [] if passed else ["cosine_min 0.91 < 0.999"],
        "probe_sha256": "a" * 64,
        "n": 64,
    }


def make_artifact(
    root: Path,
    *,
    variants: tuple[str, ...] = ("onnx", "onnx-qint8"),
    failed: tuple[str, ...] = (),
    model_dir: Path | None = None,
    seed: str = "s",
    size: int = 4096,
    recommended: str | None = None,
) -> Path:
    """Write an artifact folder at ``root`` (created) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    if model_dir is not None:
        shutil.copytree(model_dir, root, dirs_exist_ok=True)
        shared = record_files(root)
    else:
        for rel, data in _SHARED.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        shared = record_files(root, [root / rel for rel in _SHARED])
    entries = []
    for vid in variants:
        backend, precision, main, extra = _VARIANTS[vid]
        paths = []
        for rel in (main, *extra):
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_blob(rel, size, seed))
            paths.append(p)
        ok = vid not in failed
        entries.append(
            {
                "id": vid,
                "backend": backend,
                "precision": precision,
                "status": "passed" if ok else "failed",
                "error": None,
                "files": [r.to_dict() for r in record_files(root, paths)],
                "load": {"backend": backend, "file_name": main},
                "build": {"seconds": 1.0},
                "parity": _parity(ok),
                "bench": None,
            }
        )
    manifest = {
        "schema_version": 1,
        "tool_version": "0.1.0",
        "created_at": "2026-11-26T12:00:00Z",
        "source": {"repo": REPO, "revision": REVISION, "pinned": True, "files": []},
        "model": {
            "kind": "sentence-transformer",
            "embedding_dim": 32,
            "max_seq_length": 32,
            "pooling": "mean",
            "normalize": True,
        },
        "environment": {"python": "3.11.9", "packages": {"exporter": "0.1.0"}, "cpu": {"model": "test", "flags": []}},
        "probe": {"name": "builtin", "sha256": "a" * 64, "n": 64},
        "calibration": None,
        "shared_files": [r.to_dict() for r in shared],
        "variants": entries,
        "publishable": not failed,
        "recommended": {"variant": recommended, "rule": "chosen by the test"} if recommended else None,
        "bench": None,
    }
    mf.save(root, manifest)
    return root


def verify_report(artifact: Path, path: Path | None = None, policy=None) -> Path:
    """What ``exporter verify --json`` under ``policy`` (default: the kind's defaults) would say of a made
    artifact whose recorded parity it took as measured: these files are not models, so no gate can run on
    them; the registry and signing tests sign through ``--verified`` with this (``sign_artifact.gate``)."""
    import json

    from exporter.quality.policy import DEFAULT

    policy = policy or DEFAULT
    manifest = mf.load(artifact)
    cases = []
    for v in manifest["variants"]:
        kind, recorded = manifest["model"]["kind"], v["parity"]["threshold"]
        looser = policy.looser_than(recorded, kind, v["precision"], v["id"])
        failures = [*v["parity"]["failures"], *([f"looser than the policy: {'; '.join(looser)}"] if looser else [])]
        threshold = policy.thresholds_for(kind, v["precision"], v["id"]).to_dict()
        parity = {**v["parity"], "threshold": threshold, "passed": not failures, "failures": failures}
        status = "passed" if not failures else "failed"
        cases.append({"name": v["id"], "status": status, "message": "", "failures": failures, "parity": parity})
    doc = {
        "artifact": str(artifact),
        "ok": all(c["status"] == "passed" for c in cases),
        "policy": {"digest": policy.digest, "judged_by": policy.describe()},
        "files": {
            v["id"]: {p: r["sha256"] for p, r in mf.listed_files(manifest, [v["id"]]).items()}
            for v in manifest["variants"]
        },
        "integrity": {"name": "integrity", "status": "passed", "message": "", "failures": []},
        "variants": cases,
    }
    path = path or artifact.parent / f"{artifact.name}.verify.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path
