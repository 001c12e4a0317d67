"""Texts derived from a model's own tokenizer: every model gets its own edge cases, not only English ones.

Generated from the pinned tokenizer files with a seeded generator (``numpy.random.default_rng(seed)``), so the
same pin and seed give the same texts on every machine:

- ``single_token``: one vocabulary entry alone (continuation pieces without their ``##`` marker);
- ``random_tokens``: a random run of 2-24 vocabulary entries, decoded;
- ``unknown_run``: words made of letters the tokenizer maps to its unknown token (Unicode letters sampled
  from the whole BMP and kept only when they tokenise to ``unk``); none when the tokenizer has no unknown
  token (byte-level BPE covers every character);
- ``max_length``: random vocabulary runs past the model's ``max_seq_length`` (truncated by the model).

The fidelity search calibrates on these with ``CALIBRATION_SEED`` (:func:`calibration_samples`); a probe
generator must use a different seed, so the search never tunes on a probe text.
"""

from __future__ import annotations

import unicodedata

import numpy as np

CALIBRATION_SEED = 0x5EA4C4  # the search's calibration samples; probe generators use other seeds
# How many of each kind the search's calibration gets (max_length inputs are the costly ones to encode).
CALIBRATION_COUNTS = {"single_token": 48, "random_tokens": 48, "unknown_run": 32, "max_length": 6}
_BMP_LETTER_TRIES = 6000  # code points drawn to find the tokenizer's unknown letters


def _ordinary_ids(tokenizer) -> np.ndarray:
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = tokenizer.get_vocab()
    ids = sorted(i for tok, i in vocab.items() if i not in special and not (tok.startswith("[") and tok.endswith("]")))
    return np.asarray(ids, dtype=np.int64)


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=True).replace("##", "").strip()


def unknown_letters(tokenizer, rng: np.random.Generator, tries: int = _BMP_LETTER_TRIES) -> list[str]:
    """Letters (Unicode category L*) from a seeded draw over the BMP that the tokenizer maps to its unknown
    token alone; empty when it has none."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    drawn = rng.integers(0x0370, 0xFFEF, size=tries)
    letters = sorted({chr(c) for c in drawn if unicodedata.category(chr(c)).startswith("L")})
    if not letters:
        return []
    encoded = tokenizer(letters, add_special_tokens=False)["input_ids"]
    return [c for c, ids in zip(letters, encoded, strict=True) if ids == [unk]]


def derive(tokenizer, seed: int, counts: dict[str, int], max_tokens: int) -> list[tuple[str, str]]:
    """``(text, kind)`` pairs (kinds in the module doc), ``counts[kind]`` of each, non-blank and distinct."""
    rng = np.random.default_rng(seed)
    ids = _ordinary_ids(tokenizer)
    out: list[tuple[str, str]] = []
    if len(ids):
        for i in rng.choice(ids, size=min(len(ids), counts.get("single_token", 0)), replace=False):
            out.append((_decode(tokenizer, [i]), "single_token"))
        for _ in range(counts.get("random_tokens", 0)):
            out.append((_decode(tokenizer, rng.choice(ids, size=int(rng.integers(2, 25)))), "random_tokens"))
        for _ in range(counts.get("max_length", 0)):
            out.append((_decode(tokenizer, rng.choice(ids, size=max_tokens + 16)), "max_length"))
    letters = unknown_letters(tokenizer, rng) if counts.get("unknown_run", 0) else []
    if letters:
        pool = np.asarray(letters)
        for _ in range(counts["unknown_run"]):
            words = ["".join(rng.choice(pool, size=int(rng.integers(1, 7)))) for _ in range(int(rng.integers(1, 13)))]
            out.append((" ".join(words), "unknown_run"))
    seen: set[str] = set()
    unique = []
    for text, kind in out:
        if text.strip() and text not in seen:
            seen.add(text)
            unique.append((text, kind))
    return unique


def calibration_samples(ctx) -> list[str]:
    """The fidelity search's tokenizer-derived calibration texts for the export ``ctx`` (a BuildContext):
    ``CALIBRATION_COUNTS`` of each kind from the reference model's tokenizer, ``CALIBRATION_SEED``."""
    model = ctx.reference_model()
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return []
    max_tokens = int(getattr(model, "max_seq_length", None) or getattr(tokenizer, "model_max_length", 128) or 128)
    max_tokens = min(max_tokens, 512)
    return [t for t, _ in derive(tokenizer, CALIBRATION_SEED, CALIBRATION_COUNTS, max_tokens)]
