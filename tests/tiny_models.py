"""Tiny sentence-transformers models built locally, so fast tests need no network and no download.

Each builder writes a real model folder (config, safetensors weights, tokenizer, modules) the same way
``SentenceTransformer.save`` does for Hub models, so the project's real loading code runs on it.
"""

from __future__ import annotations

from pathlib import Path

_WORDS = (
    "the a an of to and in is was for on that with as by it at from this be are or not have has one "
    "model export onnx graph cosine vector search query passage text token sentence embed quick brown "
    "fox jumps over lazy dog hello world cat sat mat run fast slow small large data code number url "
    "what why how when where who which rain sun cloud river city train book read write open close"
).split()


def _tokenizer_files(out: Path, max_len: int, **tokenizer_kw) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab_list = list(dict.fromkeys(specials + chars + [f"##{c}" for c in chars] + sorted(set(_WORDS))))
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_len,
        **tokenizer_kw,
    )
    fast.save_pretrained(out)


def build_tiny_sentence_transformer(
    out: Path,
    *,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 32,
    hidden: int = 32,
    seed: int = 0,
) -> Path:
    """Write a 2-layer BERT sentence-transformer (pooling + optional Normalize) to ``out``."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertModel

    work = out.parent / f".{out.name}.hf"
    _tiny_bert(work, BertModel, max_seq_length, hidden, seed)
    transformer = models.Transformer(str(work), max_seq_length=max_seq_length)
    pool = models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
    modules = [transformer, pool] + ([models.Normalize()] if normalize else [])
    SentenceTransformer(modules=modules, device="cpu").save(str(out), safe_serialization=True)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return out


def _tiny_bert(work: Path, head, max_seq_length: int, hidden: int, seed: int, **config_kw):
    """Tokenizer files and a 2-layer BERT with ``head`` (a transformers class) saved in ``work``."""
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    _tokenizer_files(work, max_seq_length)
    _save_tiny_bert(work, len(AutoTokenizer.from_pretrained(work)), hidden, head, **config_kw)


def build_tiny_cross_encoder(
    out: Path, *, num_labels: int = 1, max_seq_length: int = 32, seed: int = 0, initializer_range: float = 0.2
) -> Path:
    """Write a 2-layer BERT reranker (BertForSequenceClassification) with ``CrossEncoder.save``.

    BERT's default init (0.02) gives a random reranker near-constant scores (sigmoid spread ~1e-5, below
    fp32 rounding differences between runtimes), so rankings would be noise; 0.2 spreads them (std ~0.06,
    ~0.02 between a list's best two), like a reranker that actually ranks.
    """
    import shutil

    from sentence_transformers import CrossEncoder
    from transformers import BertForSequenceClassification

    work = out.parent / f".{out.name}.hf"
    _tiny_bert(
        work,
        BertForSequenceClassification,
        max_seq_length,
        32,
        seed,
        num_labels=num_labels,
        initializer_range=initializer_range,
    )
    CrossEncoder(str(work), device="cpu", max_length=max_seq_length).save(str(out), safe_serialization=True)
    shutil.rmtree(work, ignore_errors=True)
    return out


# modules.json types as sentence-transformers 5.0-5.6 wrote them for SPLADE (ST 5.7 writes
# ``sentence_transformers.base.modules.transformer.Transformer`` + ``...splade_pooling.SpladePooling``).
LEGACY_SPLADE_TYPES = (
    "sentence_transformers.sparse_encoder.models.MLMTransformer",
    "sentence_transformers.sparse_encoder.models.SpladePooling",
)


def build_tiny_sparse_encoder(
    out: Path,
    *,
    max_seq_length: int = 32,
    seed: int = 0,
    pooling: str = "max",
    activation: str = "relu",
    spelling: str = "5.7",
) -> Path:
    """Write a 2-layer BERT SPLADE model (BertForMaskedLM + SpladePooling) with ``SparseEncoder.save``.

    ``spelling="5.0"`` rewrites the module files the way sentence-transformers 5.0-5.6 saved them
    (``MLMTransformer`` / ``SpladePooling`` under ``sparse_encoder.models``, ``word_embedding_dimension``,
    a plain ``sentence_bert_config.json``), as naver/splade-v3 and prithivida/Splade_PP_en_v1 ship.
    """
    import json
    import shutil

    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import BertForMaskedLM

    work = out.parent / f".{out.name}.hf"
    _tiny_bert(work, BertForMaskedLM, max_seq_length, 32, seed)
    transformer = Transformer(str(work), transformer_task="fill-mask", max_seq_length=max_seq_length)
    modules = [transformer, SpladePooling(pooling, activation_function=activation)]
    SparseEncoder(modules=modules, device="cpu").save(str(out), safe_serialization=True)
    shutil.rmtree(work, ignore_errors=True)
    if spelling == "5.0":
        entries = json.loads((out / "modules.json").read_text())
        for entry, legacy in zip(entries, LEGACY_SPLADE_TYPES, strict=True):
            entry["type"] = legacy
        (out / "modules.json").write_text(json.dumps(entries, indent=2))
        pool_cfg = out / entries[1]["path"] / "config.json"
        cfg = json.loads(pool_cfg.read_text())
        cfg["word_embedding_dimension"] = cfg.pop("embedding_dimension")
        pool_cfg.write_text(json.dumps(cfg, indent=4))
        st_cfg = {"max_seq_length": max_seq_length, "do_lower_case": False}
        (out / "sentence_bert_config.json").write_text(json.dumps(st_cfg, indent=2))
    return out


def build_tiny_static_embedding(
    out: Path, *, dim: int = 16, normalize: bool = False, layout: str = "5.7", seed: int = 0
) -> Path:
    """Write a model2vec-style StaticEmbedding model (tokenizer.json + one vector per token, no config.json).

    ``layout="5.7"`` is how sentence-transformers 5.7 saves it (the module at the root);
    ``layout="folder"`` is the older Hub layout of sentence-transformers/static-retrieval-mrl-en-v1
    (``0_StaticEmbedding/`` with ``sentence_transformers.models.StaticEmbedding`` in modules.json).
    """
    import json
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding
    from tokenizers import Tokenizer

    torch.manual_seed(seed)
    work = out.parent / f".{out.name}.hf"
    _tokenizer_files(work, 32)
    static = StaticEmbedding(Tokenizer.from_file(str(work / "tokenizer.json")), embedding_dim=dim)
    modules = [static] + ([Normalize()] if normalize else [])
    SentenceTransformer(modules=modules, device="cpu").save(str(out), safe_serialization=True)
    shutil.rmtree(work, ignore_errors=True)
    if layout == "folder":
        entries = json.loads((out / "modules.json").read_text())
        folder = out / "0_StaticEmbedding"
        folder.mkdir()
        for name in ("model.safetensors", "tokenizer.json"):
            (out / name).rename(folder / name)
        entries[0].update(path="0_StaticEmbedding", type="sentence_transformers.models.StaticEmbedding")
        (out / "modules.json").write_text(json.dumps(entries, indent=2))
    return out


# --- one tiny model per architecture family (the support registry's rules, exporter.support) -----------------


def _hf_config(family: str, vocab_size: int, hidden: int):
    """A 2-layer transformers config and model class of ``family``, as small as the architecture allows."""
    import transformers as tf

    common = {"vocab_size": vocab_size, "hidden_size": hidden, "num_hidden_layers": 2, "intermediate_size": hidden * 2}
    heads = {"num_attention_heads": 2}
    decoder = {**common, **heads, "num_key_value_heads": 1, "head_dim": hidden // 2, "max_position_embeddings": 64}
    table = {
        "bert": (tf.BertConfig, tf.BertModel, {**common, **heads, "max_position_embeddings": 64}),
        "roberta": (
            tf.RobertaConfig,
            tf.RobertaModel,
            {**common, **heads, "max_position_embeddings": 66, "pad_token_id": 0, "type_vocab_size": 1},
        ),
        "distilbert": (
            tf.DistilBertConfig,
            tf.DistilBertModel,
            {
                "vocab_size": vocab_size,
                "dim": hidden,
                "n_layers": 2,
                "n_heads": 2,
                "hidden_dim": hidden * 2,
                "max_position_embeddings": 64,
                "pad_token_id": 0,
            },
        ),
        "electra": (
            tf.ElectraConfig,
            tf.ElectraModel,
            {**common, **heads, "embedding_size": hidden, "max_position_embeddings": 64},
        ),
        "deberta-v2": (
            tf.DebertaV2Config,
            tf.DebertaV2Model,
            {
                **common,
                **heads,
                "max_position_embeddings": 64,
                "pad_token_id": 0,
                "type_vocab_size": 0,
                "relative_attention": True,
                "position_buckets": 16,
                "pos_att_type": ["p2c", "c2p"],
            },
        ),
        "mpnet": (tf.MPNetConfig, tf.MPNetModel, {**common, **heads, "max_position_embeddings": 66, "pad_token_id": 0}),
        "xlm-roberta": (
            tf.XLMRobertaConfig,
            tf.XLMRobertaModel,
            {**common, **heads, "max_position_embeddings": 66, "pad_token_id": 0, "type_vocab_size": 1},
        ),
        "modernbert": (
            tf.ModernBertConfig,
            tf.ModernBertModel,
            {
                **common,
                **heads,
                "max_position_embeddings": 64,
                "pad_token_id": 0,
                "cls_token_id": 2,
                "sep_token_id": 3,
                "bos_token_id": 2,
                "eos_token_id": 3,
                "local_attention": 16,
                "global_attn_every_n_layers": 2,
            },
        ),
        "t5": (
            tf.T5Config,
            tf.T5EncoderModel,
            {
                "vocab_size": vocab_size,
                "d_model": hidden,
                "d_kv": hidden // 2,
                "d_ff": hidden * 2,
                "num_layers": 2,
                "num_heads": 2,
                "pad_token_id": 0,
                "eos_token_id": 3,
                "decoder_start_token_id": 0,
            },
        ),
        "qwen3": (tf.Qwen3Config, tf.Qwen3Model, {**decoder, "pad_token_id": 0}),
        "llama": (tf.LlamaConfig, tf.LlamaModel, {**decoder, "pad_token_id": 0}),
        "mistral": (tf.MistralConfig, tf.MistralModel, {**decoder, "pad_token_id": 0}),
        "qwen2": (tf.Qwen2Config, tf.Qwen2Model, {**decoder, "pad_token_id": 0}),
        "phi3": (tf.Phi3Config, tf.Phi3Model, {**decoder, "pad_token_id": 0}),
        "gemma2": (tf.Gemma2Config, tf.Gemma2Model, {**decoder, "pad_token_id": 0, "sliding_window": 16}),
        "gemma3": (
            tf.Gemma3TextConfig,
            tf.Gemma3TextModel,
            {**decoder, "pad_token_id": 0, "sliding_window": 16, "use_bidirectional_attention": True},
        ),
        "gemma3-causal": (
            tf.Gemma3TextConfig,
            tf.Gemma3TextModel,
            {**decoder, "pad_token_id": 0, "sliding_window": 16},
        ),
    }
    config_cls, model_cls, kwargs = table[family]
    return model_cls, config_cls(**kwargs)


def build_tiny_embedder(
    out: Path,
    family: str = "bert",
    *,
    pooling: str | list[str] = "mean",
    dense: tuple[tuple[int, bool, str], ...] = (),
    normalize: bool = True,
    padding_side: str = "right",
    prompts: dict[str, str] | None = None,
    include_prompt: bool = True,
    max_seq_length: int = 32,
    hidden: int = 32,
    seed: int = 0,
    weight_scale: float | None = None,
    residual_gain: float | None = None,
) -> Path:
    """Write a 2-layer ``family`` sentence-transformer: Transformer -> Pooling -> Dense* -> [Normalize].

    ``dense`` lists (out_features, bias, activation) per Dense module, activation "tanh" or "identity".
    ``weight_scale`` multiplies every weight after init. ``residual_gain`` (Gemma3) sets the gain of every
    post-feed-forward RMSNorm, which writes into the residual stream: large gains make the residual stream
    exceed the fp16 range (65504) while the final norm keeps the outputs finite, as on real Gemma checkpoints.
    """
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    work = out.parent / f".{out.name}.hf"
    # Only BERT and ELECTRA take token_type_ids.
    inputs = {} if family in ("bert", "electra") else {"model_input_names": ["input_ids", "attention_mask"]}
    _tokenizer_files(work, max_seq_length, padding_side=padding_side, **inputs)
    tokenizer = AutoTokenizer.from_pretrained(work)
    model_cls, config = _hf_config(family, len(tokenizer), hidden)
    model = model_cls(config)
    if weight_scale is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(weight_scale)
    if residual_gain is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "post_feedforward_layernorm" in name:
                    p.fill_(residual_gain - 1.0)  # Gemma's RMSNorm scales by (1 + weight)
    model.save_pretrained(work, safe_serialization=True)
    transformer = models.Transformer(str(work), max_seq_length=max_seq_length)
    dim = transformer.get_embedding_dimension()
    modules = [transformer, models.Pooling(dim, pooling_mode=pooling, include_prompt=include_prompt)]
    dim = modules[-1].get_embedding_dimension()
    activations = {"tanh": torch.nn.Tanh(), "identity": torch.nn.Identity()}
    for width, bias, activation in dense:
        modules.append(models.Dense(dim, width, bias=bias, activation_function=activations[activation]))
        dim = width
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu", prompts=prompts).save(str(out), safe_serialization=True)
    shutil.rmtree(work, ignore_errors=True)
    return out


def build_tiny_word_embeddings(out: Path, *, dim: int = 16, seed: int = 0, layout: str = "folder") -> Path:
    """Write a GloVe-style model (WordEmbeddings with its WhitespaceTokenizer -> Pooling[mean]), as
    sentence-transformers/average_word_embeddings_glove.6B.300d ships it: no tokenizer.json, no config.json,
    ``0_WordEmbeddings/`` with ``wordembedding_config.json``, ``whitespacetokenizer_config.json`` and the vectors,
    and modules.json naming ``sentence_transformers.models.WordEmbeddings`` / ``...Pooling``."""
    import json

    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, WordEmbeddings
    from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer

    vocab = ["", *sorted(set(_WORDS))]
    weights = np.random.default_rng(seed).standard_normal((len(vocab), dim)).astype(np.float32)
    weights[0] = 0.0  # padding
    words = WordEmbeddings(WhitespaceTokenizer(vocab, do_lower_case=True), weights)
    modules = [words, Pooling(dim, pooling_mode="mean")]
    SentenceTransformer(modules=modules, device="cpu").save(str(out), safe_serialization=True)
    if layout == "folder":
        entries = json.loads((out / "modules.json").read_text())
        for entry, name in zip(entries, ("WordEmbeddings", "Pooling"), strict=True):
            entry["type"] = f"sentence_transformers.models.{name}"
        folder = out / "0_WordEmbeddings"
        folder.mkdir()
        for name in ("model.safetensors", "wordembedding_config.json", "whitespacetokenizer_config.json"):
            (out / name).rename(folder / name)
        entries[0]["path"] = folder.name
        (out / "modules.json").write_text(json.dumps(entries, indent=2))
    return out


# Rerankers in the shapes users ship, at transformers' default init (initializer_range 0.02): a random head
# whose logits all sit near zero, on both sides of it, as a real reranker's do at its decision boundary.
# family -> (config class, sequence-classification class, config kwargs beyond the common ones)
_RERANKERS = {
    "bert": ("BertConfig", "BertForSequenceClassification", {"max_position_embeddings": 64}),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification", {"max_position_embeddings": 64}),
    "roberta": (
        "RobertaConfig",
        "RobertaForSequenceClassification",
        {"max_position_embeddings": 66, "pad_token_id": 0, "type_vocab_size": 1},
    ),
    "deberta-v2": (
        "DebertaV2Config",
        "DebertaV2ForSequenceClassification",
        {
            "max_position_embeddings": 64,
            "pad_token_id": 0,
            "relative_attention": True,
            "position_buckets": 16,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,
        },
    ),
}
NLI_LABELS = {0: "contradiction", 1: "entailment", 2: "neutral"}


def _centre_at_zero(model, tokenizer, num_labels: int) -> None:
    """Shift the output bias so each label's median logit over some pairs is zero: the scores then straddle
    the decision boundary, where a real reranker puts many pairs (at init they share one sign)."""
    import random

    import torch

    rng = random.Random(0)
    words = sorted(set(_WORDS))
    pairs = [(" ".join(rng.choices(words, k=2)), " ".join(rng.choices(words, k=8))) for _ in range(32)]
    with torch.no_grad():
        batch = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, return_tensors="pt")
        logits = model(**batch).logits
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels][-1]
        head.bias -= logits.median(dim=0).values


def build_tiny_reranker(
    out: Path, family: str = "bert", *, num_labels: int = 1, sigmoid_cross_encoder: bool = False, seed: int = 0
) -> Path:
    """Write a 2-layer ``family`` reranker (``*ForSequenceClassification``) at the default init.

    Saved as plain transformers files (what most Hub rerankers are), or with ``sigmoid_cross_encoder`` by
    sentence-transformers' ``CrossEncoder.save_pretrained`` with a Sigmoid activation (ST 5's own layout).
    ``num_labels=3`` labels it as an NLI model (contradiction / entailment / neutral).
    """
    import shutil

    import torch
    import transformers as tf
    from transformers import AutoTokenizer

    config_name, model_name, extra = _RERANKERS[family]
    torch.manual_seed(seed)
    work = out.parent / f".{out.name}.hf" if sigmoid_cross_encoder else out
    # RoBERTa has one segment: its tokenizer sends no token_type_ids (and its ONNX graph takes none)
    _tokenizer_files(
        work, 32, **({"model_input_names": ["input_ids", "attention_mask"]} if family == "roberta" else {})
    )
    labels = NLI_LABELS if num_labels == 3 else {i: f"LABEL_{i}" for i in range(num_labels)}
    config = getattr(tf, config_name)(
        vocab_size=len(AutoTokenizer.from_pretrained(work)),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        **({"embedding_size": 32} if family == "electra" else {}),
        **extra,
    )
    model = getattr(tf, model_name)(config).eval()
    _centre_at_zero(model, AutoTokenizer.from_pretrained(work), num_labels)
    model.save_pretrained(work, safe_serialization=True)
    if sigmoid_cross_encoder:
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(work), device="cpu", max_length=32, activation_fn=torch.nn.Sigmoid())
        model.save_pretrained(str(out), safe_serialization=True)
        shutil.rmtree(work, ignore_errors=True)
    return out


def build_tiny_colbert(
    out: Path, *, hidden: int = 32, dim: int = 16, query_length: int = 12, document_length: int = 32, seed: int = 0
) -> Path:
    """Write a 2-layer BERT ColBERT (Transformer -> PyLate Dense ``hidden`` -> ``dim``, no bias) with
    ``pylate.models.ColBERT.save``: [Q]/[D] prefix tokens added to the tokenizer, query expansion, the
    punctuation skiplist (punctuation is in this vocabulary, so the skiplist removes real tokens).

    PyLate 1.6.0 on sentence-transformers 5.7: ``save`` reads ``_model_config``, which only PyLate's loader
    sets (a model built from modules has none), so it starts empty, as for a model with no saved config."""
    import shutil
    import string

    import torch
    from pylate import models as pylate_models
    from sentence_transformers.models import Transformer
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    work = out.parent / f".{out.name}.hf"
    _tokenizer_files(work, document_length)
    tokenizer = AutoTokenizer.from_pretrained(work)
    tokenizer.add_tokens(list(string.punctuation))
    tokenizer.save_pretrained(work)
    _save_tiny_bert(work, len(tokenizer), hidden)
    modules = [Transformer(str(work), max_seq_length=document_length), pylate_models.Dense(hidden, dim, bias=False)]
    model = pylate_models.ColBERT(
        modules=modules, query_length=query_length, document_length=document_length, device="cpu"
    )
    model._model_config = {}
    model.save(str(out))
    shutil.rmtree(work, ignore_errors=True)
    return out


def _save_tiny_bert(work: Path, vocab_size: int, hidden: int, head=None, **config_kw) -> None:
    """A 2-layer, 2-head random BERT of width ``hidden`` with ``head`` (a transformers class; default
    ``BertModel``) saved into ``work``, beside its tokenizer."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        **config_kw,
    )
    (head or BertModel)(config).save_pretrained(work, safe_serialization=True)


def build_tiny_bge_m3(out: Path, *, hidden: int = 32, colbert_dim: int | None = None, seed: int = 0) -> Path:
    """Write a bge-m3-shaped model: a 2-layer XLM-RoBERTa sentence-transformer (Pooling[cls] -> Normalize, as
    BAAI/bge-m3 is saved) with FlagEmbedding's heads beside it, ``sparse_linear.pt`` (Linear(hidden, 1)) and
    ``colbert_linear.pt`` (Linear(hidden, colbert_dim or hidden)), torch-saved state dicts as
    ``EncoderOnlyEmbedderM3Model.save`` writes them. The tokenizer names ``[SEP]`` its EOS token (bge-m3's
    ``</s>`` is both), so the lexical weights leave out CLS, EOS, PAD and UNK as FlagEmbedding does."""
    import torch
    from transformers import AutoTokenizer

    build_tiny_embedder(out, "xlm-roberta", pooling="cls", normalize=True, hidden=hidden, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.add_special_tokens({"eos_token": "[SEP]"})
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed + 1)
    torch.save(torch.nn.Linear(hidden, 1).state_dict(), out / "sparse_linear.pt")
    torch.save(torch.nn.Linear(hidden, colbert_dim or hidden).state_dict(), out / "colbert_linear.pt")
    return out
