"""The manifest's ``model`` facts of a loaded model, one reader per kind (``exporter.kinds.KINDS`` names
which): dimension, max length, pooling and what else a consumer needs to serve the model."""

from __future__ import annotations


def embedder_facts(model) -> dict:
    pooling = None
    normalize = False
    for module in model:
        name = type(module).__name__
        if name == "Pooling":
            pooling = getattr(module, "pooling_mode", None) or module.get_pooling_mode_str()
            if not isinstance(pooling, str):  # several modes, concatenated: "cls+mean" as st_modules names them
                pooling = "+".join(pooling)
        elif name == "Normalize":
            normalize = True
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return {
        "embedding_dim": dim(),
        "max_seq_length": model.max_seq_length if model.max_seq_length != float("inf") else None,  # static: inf
        "pooling": pooling,
        "normalize": normalize,
        "similarity": getattr(model, "similarity_fn_name", None),
        "truncate_dim": getattr(model, "truncate_dim", None),
    }


def _fullname(obj) -> str | None:
    if obj is None:
        return None
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def cross_encoder_facts(model) -> dict:
    return {
        "embedding_dim": None,
        "max_seq_length": model.max_length,
        "pooling": None,
        "normalize": False,
        "similarity": None,
        "num_labels": model.num_labels,
        "activation_fn": _fullname(model.activation_fn),
    }


def sparse_facts(model) -> dict:
    pooling = None
    for module in model:
        if type(module).__name__ == "SpladePooling":
            pooling = f"splade-{module.pooling_strategy}-{module.activation_function}"
    dim = model.get_embedding_dimension()
    return {
        "embedding_dim": dim,
        "max_seq_length": model.max_seq_length,
        "pooling": pooling,
        "normalize": False,
        "similarity": getattr(model, "similarity_fn_name", None),
        "vocab_size": dim,
        "max_active_dims": getattr(model, "max_active_dims", None),
    }


def colbert_facts(model) -> dict:
    """A PyLate ColBERT model: the token vector width and the settings the runtime tokenises by."""
    return {
        "embedding_dim": int(model[-1].out_features),
        "max_seq_length": int(model.document_length),
        "pooling": None,
        "normalize": True,
        "similarity": "MaxSim",
        "colbert": {
            "query_length": int(model.query_length),
            "document_length": int(model.document_length),
            "query_prefix": model.query_prefix,
            "document_prefix": model.document_prefix,
            "do_query_expansion": bool(model.do_query_expansion),
            "attend_to_expansion_tokens": bool(model.attend_to_expansion_tokens),
            "skiplist_words": list(model.skiplist_words),
        },
    }


def m3_facts(model) -> dict:
    """bge-m3 (``exporter.builders.export_onnx_m3.M3Reference``): the dense width and the three heads, each with
    its graph output and, for the two FlagEmbedding heads, its file (hashed in ``source.files``)."""
    from exporter.builders.export_onnx_m3 import heads_facts

    return {
        "embedding_dim": int(model.hidden),
        "max_seq_length": int(model.max_seq_length),
        "pooling": "cls",
        "normalize": True,
        "similarity": "cosine (dense), lexical matching (sparse), MaxSim (colbert)",
        "bge_m3": {"heads": heads_facts(model), "lexical_unused_token_ids": list(model.unused)},
    }
