"""Facts about a sentence-transformers model folder, read from its files alone (no torch, no ST import).

Reads ``modules.json`` and each module's config in both layouts sentence-transformers has written:

- the old Hub format (ST 2.x-4.x): ``sentence_transformers.models.Pooling`` with boolean
  ``pooling_mode_*_tokens`` keys and ``max_seq_length`` / ``do_lower_case`` in ``sentence_bert_config.json``;
- the 5.x format: ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` with one
  ``pooling_mode`` key (a name or a list), and the max sequence length in the tokenizer's
  ``model_max_length``.

``max_seq_length`` is resolved the way sentence-transformers 5.x resolves it, so torch and the
torch-free runtime truncate at the same token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from exporter.errors import UsageError
from exporter.user_files import MODEL_JSON_MAX_BYTES, read_user_json

# transformers' "no limit" sentinel for model_max_length (VERY_LARGE_INTEGER = int(1e30)).
_NO_LIMIT = int(1e29)

# Legacy boolean keys, in the order sentence-transformers concatenates the pooled vectors.
_LEGACY_POOLING_KEYS: dict[str, str] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
POOLING_MODES = tuple(_LEGACY_POOLING_KEYS.values())


class ModuleKind(StrEnum):
    TRANSFORMER = "Transformer"
    POOLING = "Pooling"
    NORMALIZE = "Normalize"
    DENSE = "Dense"
    # Sparse and static shapes (exporter.builders.export_onnx_sparse / export_onnx_static / exporter.support).
    SPLADE_POOLING = "SpladePooling"
    STATIC_EMBEDDING = "StaticEmbedding"
    SPARSE_STATIC_EMBEDDING = "SparseStaticEmbedding"
    ROUTER = "Router"
    OTHER = "other"


# Class name (last dotted part of the module type, same in the old and new import paths) -> kind.
_KIND_BY_CLASS: dict[str, ModuleKind] = {kind.value: kind for kind in ModuleKind if kind is not ModuleKind.OTHER}
# Other spellings of the same modules: ST 5.0-5.6 saved SPLADE's transformer as ``MLMTransformer``
# (ST 5.7 writes ``Transformer`` with ``transformer_task: fill-mask`` and still loads the old name);
# ``Asym`` is the pre-5.x name of ``Router``.
_KIND_BY_CLASS.update({"MLMTransformer": ModuleKind.TRANSFORMER, "Asym": ModuleKind.ROUTER})


@dataclass(frozen=True)
class ModuleEntry:
    idx: int
    name: str
    path: str  # relative to the model folder; "" for the root
    type: str  # the dotted class path as written in modules.json
    kind: ModuleKind


@dataclass(frozen=True)
class PoolingFacts:
    modes: tuple[str, ...]  # e.g. ("mean",); several modes are concatenated in this order
    include_prompt: bool = True
    dimension: int | None = None  # the token-embedding dimension the Pooling config states

    @property
    def name(self) -> str:
        return "+".join(self.modes)


@dataclass(frozen=True)
class TokenizerFacts:
    max_seq_length: int | None
    do_lower_case: bool = False
    padding_side: str = "right"
    truncation_side: str = "right"
    pad_token: str | None = None


@dataclass(frozen=True)
class ModelFacts:
    root: Path
    modules: tuple[ModuleEntry, ...]
    pooling: PoolingFacts | None
    normalize: bool
    tokenizer: TokenizerFacts
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    @property
    def transformer(self) -> ModuleEntry | None:
        return transformer_entry(self.modules)

    @property
    def transformer_dir(self) -> Path:
        """Folder of the Transformer module: config, tokenizer and (for ST) the onnx/ sub-folder."""
        return transformer_path(self.root, self.modules)

    @property
    def static_embedding(self) -> ModuleEntry | None:
        """The StaticEmbedding input module of a model2vec-style model (``exporter.builders.export_onnx_static``)."""
        first = self.modules[0] if self.modules else None
        return first if first is not None and first.kind is ModuleKind.STATIC_EMBEDDING else None

    @property
    def tokenizer_dir(self) -> Path:
        """Folder of the input module's tokenizer.json: the StaticEmbedding's, else the Transformer's."""
        entry = self.static_embedding
        return (self.root / entry.path if entry.path else self.root) if entry else self.transformer_dir

    @property
    def max_seq_length(self) -> int | None:
        return self.tokenizer.max_seq_length

    @property
    def plain_pooling_chain(self) -> bool:
        """True when the model is exactly Transformer -> Pooling [-> Normalize] (poolable outside a graph)."""
        kinds = [m.kind for m in self.modules]
        return kinds in (
            [ModuleKind.TRANSFORMER, ModuleKind.POOLING],
            [ModuleKind.TRANSFORMER, ModuleKind.POOLING, ModuleKind.NORMALIZE],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "modules": [m.type for m in self.modules],
            "pooling": self.pooling.name if self.pooling else None,
            "include_prompt": self.pooling.include_prompt if self.pooling else None,
            "normalize": self.normalize,
            "max_seq_length": self.max_seq_length,
            "do_lower_case": self.tokenizer.do_lower_case,
        }


def _read_json(path: Path, *, required: bool = False) -> Any:
    if not path.is_file():
        if required:
            raise UsageError(
                f"{path.name} is missing from {path.parent}.",
                "Point at a sentence-transformers model folder (it has modules.json).",
            )
        return None
    try:
        return read_user_json(path, what="model file", max_bytes=MODEL_JSON_MAX_BYTES)
    except UsageError as exc:
        raise UsageError(exc.message, "The model folder looks damaged; re-resolve it.") from None


def _read_config(path: Path, *, required: bool = False) -> dict[str, Any]:
    """A module's JSON config: an object ({} when the optional file is absent); anything else is damage."""
    config = _read_json(path, required=required)
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UsageError(f"{path} is not a JSON object.", "The model folder looks damaged; re-resolve it.")
    return config


def kind_of(type_name: str) -> ModuleKind:
    return _KIND_BY_CLASS.get(type_name.rsplit(".", 1)[-1], ModuleKind.OTHER)


def read_modules(root: Path) -> tuple[ModuleEntry, ...]:
    raw = _read_json(root / "modules.json", required=True)
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{root / 'modules.json'} is not a non-empty list of modules.", "Re-resolve the model.")
    entries = []
    for i, item in enumerate(raw):
        try:
            entries.append(
                ModuleEntry(
                    idx=int(item.get("idx", i)),
                    name=str(item.get("name", i)),
                    path=str(item.get("path", "")),
                    type=str(item["type"]),
                    kind=kind_of(str(item["type"])),
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"modules.json entry {i} in {root} is malformed.", "Re-resolve the model.") from exc
    return tuple(sorted(entries, key=lambda e: e.idx))


def transformer_entry(modules: tuple[ModuleEntry, ...]) -> ModuleEntry | None:
    """The Transformer module (SPLADE's ``MLMTransformer`` too) among ``modules``, or None."""
    return next((m for m in modules if m.kind is ModuleKind.TRANSFORMER), None)


def transformer_path(root: Path, modules: tuple[ModuleEntry, ...]) -> Path:
    """The folder of the Transformer module among ``modules`` (``0_Transformer/`` in the oldest layout), or
    ``root`` itself when it sits at the root or there is none (no ``modules.json``: ``modules`` empty).
    Graphs and IRs go there: it is where ``model_kwargs={"file_name": ...}`` is resolved."""
    entry = transformer_entry(modules)
    return Path(root) / entry.path if entry is not None and entry.path else Path(root)


def pooling_modes(config: dict) -> tuple[str, ...]:
    """The pooling modes a Pooling config names, in either format (legacy booleans or ``pooling_mode``)."""
    mode = config.get("pooling_mode")
    if mode is not None:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key, False)) or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise UsageError(f"unknown pooling mode(s) {unknown}.", f"Known modes: {', '.join(POOLING_MODES)}.")
    return modes


def read_pooling(module_dir: Path) -> PoolingFacts:
    config = _read_config(module_dir / "config.json", required=True)
    dim = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    return PoolingFacts(
        modes=pooling_modes(config),
        include_prompt=bool(config.get("include_prompt", True)),
        dimension=int(dim) if dim is not None else None,
    )


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config / special_tokens_map: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def read_tokenizer_facts(transformer_dir: Path) -> TokenizerFacts:
    """Max sequence length, lower-casing, padding/truncation side and pad token, as ST 5.x resolves them."""
    st_config = _read_config(transformer_dir / "sentence_bert_config.json")
    tok_config = _read_config(transformer_dir / "tokenizer_config.json")
    special = _read_config(transformer_dir / "special_tokens_map.json")
    model_config = _read_config(transformer_dir / "config.json")

    max_len = st_config.get("max_seq_length")
    if max_len is None:
        # No explicit value: the tokenizer's model_max_length, capped by the position table.
        tok_max = tok_config.get("model_max_length")
        max_len = int(tok_max) if tok_max is not None and tok_max < _NO_LIMIT else None
        text_config = model_config.get("text_config", model_config)
        positions = text_config.get("max_position_embeddings")
        if isinstance(positions, int) and positions != -1:
            max_len = positions if max_len is None else min(max_len, positions)
    return TokenizerFacts(
        max_seq_length=int(max_len) if max_len is not None else None,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        padding_side=str(tok_config.get("padding_side") or "right"),
        truncation_side=str(tok_config.get("truncation_side") or "right"),
        pad_token=_token_text(tok_config.get("pad_token")) or _token_text(special.get("pad_token")),
    )


def read(root: Path) -> ModelFacts:
    """Everything the exporter and the runtime need to know about a sentence-transformers folder."""
    root = Path(root)
    modules = read_modules(root)
    pooling_entry = next((m for m in modules if m.kind is ModuleKind.POOLING), None)
    st_config = _read_config(root / "config_sentence_transformers.json")
    return ModelFacts(
        root=root,
        modules=modules,
        pooling=read_pooling(root / pooling_entry.path) if pooling_entry else None,
        normalize=any(m.kind is ModuleKind.NORMALIZE for m in modules),
        tokenizer=read_tokenizer_facts(transformer_path(root, modules)),
        prompts={str(k): str(v) for k, v in (st_config.get("prompts") or {}).items()},
        default_prompt_name=st_config.get("default_prompt_name"),
    )


# ------------------------------------------------------------------------------------------ SPLADE
STRATEGIES = ("max", "sum")
ACTIVATIONS = {"relu": 1, "log1p_relu": 2}  # activation -> how many log1p follow the relu


@dataclass(frozen=True)
class SpladeFacts:
    strategy: str  # "max" or "sum"
    activation: str  # "relu" or "log1p_relu"
    chunk_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pooling_strategy": self.strategy, "activation_function": self.activation}


def read_splade(root: Path) -> SpladeFacts | None:
    """The SpladePooling config of the model folder ``root`` (either spelling), or None if it has none."""
    entry = next((m for m in read_modules(root) if m.kind is ModuleKind.SPLADE_POOLING), None)
    if entry is None:
        return None
    path = root / entry.path / "config.json"
    config = _read_config(path)
    facts = SpladeFacts(
        strategy=str(config.get("pooling_strategy", "max")),
        activation=str(config.get("activation_function", "relu")),
        chunk_size=config.get("chunk_size"),
    )
    if facts.strategy not in STRATEGIES or facts.activation not in ACTIVATIONS:
        raise UsageError(
            f"SpladePooling with pooling_strategy={facts.strategy!r}, activation_function={facts.activation!r} "
            "is not one sentence-transformers defines.",
            f"Known: pooling_strategy {'/'.join(STRATEGIES)}, activation_function {'/'.join(ACTIVATIONS)}.",
        )
    return facts
