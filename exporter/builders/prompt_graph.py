"""Prompts excluded from pooling (``include_prompt: false``) inside the exported graph.

sentence-transformers' Pooling, when its config says ``include_prompt: false`` and a prompt is prepended,
zeroes the prompt's token positions in the pooling mask (not in the transformer's attention mask): the first
``prompt_length`` real tokens of every row, after any left padding. ``prompt_length`` is the prompt's token
count as the tokenizer encodes it alone, minus a trailing special token (``[SEP]``, ``</s>`` ...).

The graph gets that number as an optional input ``prompt_length`` (int64 scalar, default 0: an ONNX
initializer with the input's name, which ONNX Runtime lets a caller override). Callers that do not know it
(sentence-transformers' ONNX backend reads only ``last_hidden_state`` and pools in torch itself) need not feed
it; the torch-free runtime feeds it whenever it prepends a prompt.

Nothing here imports torch at module level: the runtime uses ``prompt_token_count``.
"""

from __future__ import annotations

from pathlib import Path

PROMPT_LENGTH = "prompt_length"


def excludes_prompt(model) -> bool:
    """Whether the loaded SentenceTransformer has a Pooling module with ``include_prompt`` false."""
    return any(type(m).__name__ == "Pooling" and not getattr(m, "include_prompt", True) for m in model)


def exclude_prompt(attention_mask, prompt_length):
    """The pooling mask without the prompt tokens (traceable: no data-dependent branch).

    Equals sentence-transformers' ``Pooling._exclude_prompt_from_mask`` for right and left padding: a row's
    left padding is the index of its first real token (0 when right-padded), and positions before
    padding + prompt_length are zeroed.
    """
    import torch

    pad = attention_mask.to(torch.int32).argmax(dim=1).to(torch.int64)
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device).unsqueeze(0)
    return attention_mask.masked_fill(positions < (pad + prompt_length).unsqueeze(1), 0)


def forward_excluding_prompt(model, input_ids, attention_mask, prompt_length, token_type_ids=None) -> dict:
    """The SentenceTransformer's forward with the prompt tokens left out of pooling: the Transformer sees the
    full attention mask, the modules after it see the mask without the prompt."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    features = model[0]({**inputs, "token_type_ids": token_type_ids} if token_type_ids is not None else inputs)
    token_embeddings = features["token_embeddings"]
    features["attention_mask"] = exclude_prompt(attention_mask, prompt_length)
    for module in list(model)[1:]:
        features = module(features)
    return {"token_embeddings": token_embeddings, "sentence_embedding": features["sentence_embedding"]}


def make_input_optional(path: Path, name: str = PROMPT_LENGTH, default: int = 0) -> None:
    """Give graph input ``name`` a default (an initializer of the same name), so feeding it is optional."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    if any(i.name == name for i in model.graph.input) and not any(t.name == name for t in model.graph.initializer):
        model.graph.initializer.append(numpy_helper.from_array(np.array(default, dtype=np.int64), name))
        onnx.save(model, str(path))


def prompt_token_count(tokenizer, prompt: str) -> int:
    """``prompt_length`` as sentence-transformers computes it, with a ``tokenizers.Tokenizer``: the prompt's
    token count encoded alone, minus one if its last token is a special token."""
    encoding = tokenizer.encode(prompt)
    n = len(encoding.ids)
    return n - 1 if n and encoding.special_tokens_mask[-1] else n
