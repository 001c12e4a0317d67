"""Pooling in numpy, for graphs without a ``sentence_embedding`` output: sentence-transformers' Pooling
modes (``POOLERS``) and Normalize over token embeddings and the attention mask, and the prompt tokens left out
of pooling when the model's Pooling has ``include_prompt: false``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from exporter.source import st_modules


def _expanded(mask: np.ndarray, emb: np.ndarray) -> np.ndarray:
    return np.broadcast_to(mask[:, :, None], emb.shape).astype(emb.dtype)


def _pool_cls(emb, mask):
    first = mask.argmax(axis=1)  # first real token: 0 for right padding
    return emb[np.arange(len(emb)), first]


def _pool_max(emb, mask):
    return np.where(_expanded(mask, emb) == 0, -np.inf, emb).max(axis=1)


def _masked_sum_count(emb, mask):
    m = _expanded(mask, emb)
    return (emb * m).sum(axis=1), np.maximum(m.sum(axis=1), 1e-9)


def _pool_mean(emb, mask):
    total, count = _masked_sum_count(emb, mask)
    return total / count


def _pool_mean_sqrt_len(emb, mask):
    total, count = _masked_sum_count(emb, mask)
    return total / np.sqrt(count)


def _pool_weightedmean(emb, mask):
    weights = np.arange(1, emb.shape[1] + 1, dtype=emb.dtype)[None, :, None] * _expanded(mask, emb)
    return (emb * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def _pool_lasttoken(emb, mask):
    seq_len = mask.shape[1]
    flipped = mask[:, ::-1]
    idx = np.where(flipped.max(axis=1) == 0, seq_len - 1, flipped.argmax(axis=1))
    return (emb * _expanded(mask, emb))[np.arange(len(emb)), seq_len - idx - 1]


POOLERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cls": _pool_cls,
    "max": _pool_max,
    "mean": _pool_mean,
    "mean_sqrt_len_tokens": _pool_mean_sqrt_len,
    "weightedmean": _pool_weightedmean,
    "lasttoken": _pool_lasttoken,
}


def exclude_prompt(mask: np.ndarray, prompt_length: int) -> np.ndarray:
    """The pooling mask without the first ``prompt_length`` real tokens of each row (after left padding), as
    sentence-transformers' Pooling computes it for ``include_prompt: false``."""
    pad = mask.argmax(axis=1)
    positions = np.arange(mask.shape[1])[None, :]
    return np.where(positions < (pad + prompt_length)[:, None], 0, mask)


def pool(token_embeddings: np.ndarray, attention_mask: np.ndarray, facts: st_modules.ModelFacts) -> np.ndarray:
    """Sentence embeddings from token embeddings as the model's Pooling [+ Normalize] modules compute them."""
    if facts.pooling is None:  # the callers pool only a chain with a Pooling module
        raise ValueError(f"{facts.root} has no Pooling module to pool token embeddings with")
    vectors = np.concatenate([POOLERS[m](token_embeddings, attention_mask) for m in facts.pooling.modes], axis=-1)
    if facts.normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors.astype(np.float32, copy=False)
