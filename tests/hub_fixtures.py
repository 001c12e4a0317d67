"""Make tiny model folders look like Hub repos (a real local Hub cache entry), and damage them on purpose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from exporter.source.hubcache import hub_cache_dir, seed_snapshot

TINY_REPO = "tests-org/tiny-st"
TINY_SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"


def seed_tiny(model_dir: Path, repo_id: str = TINY_REPO, sha: str = TINY_SHA, ref: str | None = "main") -> Path:
    """Seed ``model_dir`` into the (test-isolated) Hub cache as ``repo_id`` at ``sha``; return the snapshot."""
    return seed_snapshot(repo_id, sha, model_dir, cache_dir=hub_cache_dir(), ref=ref)


def add_auto_map(model_dir: Path) -> Path:
    """Turn the model into one that needs trust_remote_code (config.json maps to custom code)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (model_dir / "config.json").write_text(json.dumps(cfg))
    (model_dir / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    return model_dir


def add_custom_module(model_dir: Path) -> Path:
    """Add a module whose type is not from sentence_transformers to modules.json."""
    modules = json.loads((model_dir / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": "x", "path": "", "type": "custom_pkg.Evil"})
    (model_dir / "modules.json").write_text(json.dumps(modules))
    return model_dir


def make_pickle_only(model_dir: Path, keep_safetensors: bool = False) -> Path:
    """Write the weights as pytorch_model.bin (and drop model.safetensors unless ``keep_safetensors``)."""
    import torch
    from safetensors.torch import load_file

    st = model_dir / "model.safetensors"
    torch.save(load_file(st), model_dir / "pytorch_model.bin")
    if not keep_safetensors:
        st.unlink()
    return model_dir


def drop_tokenizer(model_dir: Path) -> Path:
    for name in ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model_dir / name).unlink(missing_ok=True)
    return model_dir


def truncate_safetensors(model_dir: Path, keep: int = 1000) -> Path:
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - keep])
    return model_dir


def add_repo_exports(model_dir: Path) -> Path:
    """Files a Hub repo may carry that the source must never use: its own onnx/openvino exports, tf weights."""
    (model_dir / "onnx").mkdir()
    (model_dir / "onnx" / "model.onnx").write_bytes(b"not really onnx")
    (model_dir / "onnx" / "config.json").write_text("{}")
    (model_dir / "openvino").mkdir()
    (model_dir / "openvino" / "openvino_model.xml").write_text("<xml/>")
    (model_dir / "tf_model.h5").write_bytes(b"h5")
    (model_dir / "training_args.bin").write_bytes(b"pickle")
    return model_dir


def copy_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest
