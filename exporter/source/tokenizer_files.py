"""One truncation everywhere: the artifact's tokenizer files say where the model truncates.

sentence-transformers truncates at the model's ``max_seq_length``; other consumers read the tokenizer files
instead: fastembed and transformers.js truncate at tokenizer_config.json's ``model_max_length`` (512 for
all-MiniLM-L6-v2, whose model truncates at 256), and Rust/Python ``tokenizers`` users get tokenizer.json's
own ``truncation`` / ``padding`` blocks (MiniLM's say 128 and a fixed padding of 128). ``align`` rewrites the
copies in an artifact so every consumer truncates at ``max_seq_length`` on the model's side, and pads to
the batch's longest text, and returns which files it changed (the export records each changed file's
source sha256 in the manifest, ``adjusted_from``).
"""

from __future__ import annotations

import json
from pathlib import Path

from exporter.fsutil import sha256_file

ADJUSTED = "tokenizer files aligned with max_seq_length (one truncation for every consumer)"
_DIRECTION = {"right": "Right", "left": "Left"}


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def aligned_config(config: dict, max_len: int, truncation_side: str, padding_side: str) -> dict:
    """tokenizer_config.json as fastembed and transformers.js read it: they truncate at ``model_max_length``."""
    return {
        **config,
        "model_max_length": int(max_len),
        "truncation_side": truncation_side,
        "padding_side": padding_side,
    }


def aligned_tokenizer_json(data: dict, max_len: int, truncation_side: str, padding_side: str, pad: tuple) -> dict:
    """tokenizer.json with its truncation at ``max_len`` and padding to the batch's longest text."""
    pad_token, pad_id = pad
    return {
        **data,
        "truncation": {
            "direction": _DIRECTION.get(truncation_side, "Right"),
            "max_length": int(max_len),
            "strategy": "LongestFirst",
            "stride": 0,
        },
        "padding": {
            "strategy": "BatchLongest",
            "direction": _DIRECTION.get(padding_side, "Right"),
            "pad_to_multiple_of": None,
            "pad_id": int(pad_id),
            "pad_type_id": 0,
            "pad_token": pad_token,
        },
    }


def align(root: Path) -> dict[str, str]:
    """Rewrite ``root``'s tokenizer_config.json / tokenizer.json (new files, never in place) to truncate at the
    model's max_seq_length; return {relative path: sha256 before} of the files changed (none for a model
    without a Transformer tokenizer or a max length)."""
    from exporter.errors import UsageError
    from exporter.source import st_modules

    try:
        facts = st_modules.read(root)
    except UsageError:
        return {}
    max_len, tf = facts.max_seq_length, facts.tokenizer
    if not max_len or facts.static_embedding:
        return {}
    folder = facts.transformer_dir
    changed: dict[str, str] = {}

    def rewrite(path: Path, new: dict) -> None:
        text = _dump(new)
        old = path.read_text(encoding="utf-8")
        if json.loads(old) == new:
            return
        changed[path.relative_to(root).as_posix()] = sha256_file(path)
        path.unlink()  # a hard-linked clone of an earlier stage must not be written through
        path.write_text(text, encoding="utf-8")

    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        rewrite(config_path, aligned_config(config, max_len, tf.truncation_side, tf.padding_side))
    tok_path = folder / "tokenizer.json"
    if tok_path.is_file():
        data = json.loads(tok_path.read_text(encoding="utf-8"))
        pad_token = tf.pad_token or "[PAD]"
        vocab = (data.get("model") or {}).get("vocab")
        pad_id = next((t["id"] for t in data.get("added_tokens") or [] if t.get("content") == pad_token), None)
        if pad_id is None and isinstance(vocab, dict):
            pad_id = vocab.get(pad_token)
        pad = (pad_token, pad_id if pad_id is not None else 0)
        rewrite(tok_path, aligned_tokenizer_json(data, max_len, tf.truncation_side, tf.padding_side, pad))
    return changed
