"""Torch-free serving of an exported artifact: a backend session + tokenizers + numpy. Never imports torch.

    enc = runtime.load(Path("artifacts/org--name/1110a243fdf4"))      # onnx/model.onnx, onnxruntime
    vectors = enc.encode(["a query", "a passage"])                   # float32 [n, dim]
    enc.provider                                                     # the execution provider in use

Tokenisation reproduces sentence-transformers: the artifact's ``tokenizer.json``, truncated at the
model's ``max_seq_length`` (``exporter.source.st_modules`` resolves it as ST does), padded to the longest text
of the batch on the tokenizer's padding side, lower-cased first if ``sentence_bert_config.json`` says so,
and the default prompt prepended if the model has one. When the model's Pooling leaves prompt tokens out
(``include_prompt: false``), the prompt's token count is fed to the graph's ``prompt_length`` input
(``exporter.builders.prompt_graph``), or taken out of the mask when pooling here in numpy.

The graph's ``sentence_embedding`` output (pooling and Normalize inside, see ``exporter.builders.export_onnx``)
is used when present. A graph with only token embeddings (e.g. one exported by another tool) is pooled
in numpy exactly as the model's Pooling/Normalize modules say, if those are the only modules after the
Transformer.

Backends are a table (``BACKENDS``, ``exporter.runtime.backends``): each opens a model file and returns an
object with ``input_names``, ``output_names``, ``providers`` and ``run(output_names, feeds)``; ONNX Runtime and
OpenVINO. The numpy pooling is ``exporter.runtime.pooling``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import IntegrityError, UsageError
from exporter.runtime.backends import BACKENDS, Session, precision_of
from exporter.runtime.backends import _OnnxSession as _OnnxSession  # builders wrap their own sessions
from exporter.runtime.backends import _OpenVinoSession as _OpenVinoSession
from exporter.runtime.pooling import exclude_prompt, pool
from exporter.source import st_modules

SENTENCE_OUTPUT = "sentence_embedding"
SPARSE_OUTPUT = "sparse_embedding"  # SPLADE vectors [batch, vocab] (exporter.builders.export_onnx_sparse)
TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
# Providers that a session lists but that run no local graph nodes (onnxruntime lists Azure first).
_NON_COMPUTE_PROVIDERS = frozenset({"AzureExecutionProvider"})


# --- tokenizer ---------------------------------------------------------------------------------------


def load_tokenizer(facts: st_modules.ModelFacts):
    """The artifact's tokenizer.json configured the way sentence-transformers tokenises."""
    from tokenizers import Tokenizer, normalizers

    path = facts.tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise UsageError(
            f"{path} is missing; the torch-free runtime needs the fast tokenizer file.",
            "Re-export the artifact from a source whose tokenizer has a tokenizer.json.",
        )
    tokenizer = Tokenizer.from_file(str(path))
    if facts.static_embedding:  # StaticEmbedding tokenises with the file's own settings, unpadded
        tokenizer.no_padding()
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        return tokenizer
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tf = facts.tokenizer
    if tf.do_lower_case:
        current = tokenizer.normalizer
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Lowercase()] + ([current] if current is not None else [])
        )
    if tf.max_seq_length:
        tokenizer.enable_truncation(tf.max_seq_length, strategy="longest_first", direction=tf.truncation_side)
    pad_id = tokenizer.token_to_id(tf.pad_token) if tf.pad_token else None
    tokenizer.enable_padding(
        direction=tf.padding_side,
        pad_id=pad_id if pad_id is not None else 0,
        pad_token=tf.pad_token or "[PAD]",
    )
    return tokenizer


# --- the encoder ---------------------------------------------------------------------------------------


class Encoder:
    """Texts in, sentence embeddings out (float32 numpy), through one backend session."""

    def __init__(self, session: Session, tokenizer, facts: st_modules.ModelFacts, backend: str, path: Path):
        self.session = session
        self.tokenizer = tokenizer
        self.facts = facts
        self.backend = backend
        self.path = path
        self.truncate_dim: int | None = None  # Matryoshka: keep the first N dimensions (see ``load``)
        outputs = session.output_names
        self.sparse = SPARSE_OUTPUT in outputs
        self.pooling_in_graph = SENTENCE_OUTPUT in outputs or self.sparse
        if self.pooling_in_graph:
            self._output = SPARSE_OUTPUT if self.sparse else SENTENCE_OUTPUT
        else:
            token_output = next((name for name in TOKEN_OUTPUTS if name in outputs), None)
            if token_output is None or facts.pooling is None or not facts.plain_pooling_chain:
                raise UsageError(
                    f"{path.name} has no {SENTENCE_OUTPUT} output and the model's modules "
                    f"({', '.join(m.kind.value for m in facts.modules)}) cannot be applied outside the graph.",
                    "Export the graph with exporter (pooling inside) to serve it without torch.",
                )
            self._output = token_output
        self._inputs = session.input_names

    @property
    def providers(self) -> list[str]:
        return self.session.providers

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph: the session's highest-priority compute provider."""
        return next((p for p in self.providers if p not in _NON_COMPUTE_PROVIDERS), self.providers[0])

    @property
    def max_seq_length(self) -> int | None:
        return self.facts.max_seq_length

    def _resolve_prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is None:
            name = prompt_name if prompt_name is not None else self.facts.default_prompt_name
            if name is not None:
                if name not in self.facts.prompts:
                    raise UsageError(f"unknown prompt name {name!r}.", f"Known: {', '.join(self.facts.prompts)}.")
                prompt = self.facts.prompts[name]
        return prompt or ""

    def _prompt_length(self, prompt: str) -> int | None:
        """Tokens to leave out of pooling when the model's Pooling excludes the prompt (``include_prompt``
        false), counted as sentence-transformers counts them; None when nothing is excluded."""
        from exporter.builders import prompt_graph

        if not prompt or self.facts.pooling is None or self.facts.pooling.include_prompt:
            return None
        takes_it = prompt_graph.PROMPT_LENGTH in (*self._inputs, *getattr(self.session, "optional_input_names", []))
        if self.pooling_in_graph and not takes_it:
            raise UsageError(
                f"{self.path.name} pools every token, and the model excludes prompt tokens from pooling.",
                "Re-export the model with this exporter (its graph has a prompt_length input).",
            )
        return prompt_graph.prompt_token_count(self.tokenizer, prompt)

    def tokenize(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Feeds for the graph (only the inputs it declares) and the attention mask."""
        # StaticEmbedding adds no special tokens (ST's StaticEmbedding.preprocess).
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=not self.facts.static_embedding)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        available = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
        }
        missing = [name for name in self._inputs if name not in available and name != "prompt_length"]
        if missing:
            raise UsageError(f"the graph wants inputs this runtime cannot make: {missing}.", "Re-export the model.")
        return {name: available[name] for name in self._inputs if name in available}, mask

    def encode(
        self,
        texts: list[str],
        batch_size: int = 32,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
    ) -> np.ndarray:
        """Embeddings [n, dim]; for a sparse encoder, dense [n, vocab] SPLADE vectors, pruned if asked:
        ``top_k`` keeps each row's k largest weights (ST's ``max_active_dims``), ``threshold`` zeroes
        weights at or below it."""
        if (top_k is not None or threshold is not None) and not self.sparse:
            raise UsageError("top_k / threshold prune sparse vectors; this model is not a sparse encoder.", "")
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not one string.")
        prompt = self._resolve_prompt(prompt_name, prompt)
        texts = [prompt + t for t in texts] if prompt else list(texts)
        prompt_length = self._prompt_length(prompt)
        extra = {} if prompt_length is None else {"prompt_length": np.asarray(prompt_length, dtype=np.int64)}
        if not texts:
            dim = self.facts.pooling.dimension if self.facts.pooling else None
            dim = min(dim, self.truncate_dim) if dim and self.truncate_dim else dim
            return np.zeros((0, dim or 0), dtype=np.float32)
        # Longest first, as sentence-transformers batches (less padding); results go back in input order.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunks = []
        for start in range(0, len(texts), max(1, batch_size)):
            batch = [texts[i] for i in order[start : start + batch_size]]
            feeds, mask = self.tokenize(batch)
            if self.pooling_in_graph:
                (out,) = self.session.run([self._output], {**feeds, **extra})
            else:
                (tokens,) = self.session.run([self._output], feeds)
                out = pool(tokens, mask if prompt_length is None else exclude_prompt(mask, prompt_length), self.facts)
            chunks.append(out)
        stacked = np.concatenate(chunks, axis=0).astype(np.float32, copy=False)
        result = np.empty_like(stacked)
        result[order] = stacked
        if self.sparse:
            return prune(result, top_k, threshold)
        return result[:, : self.truncate_dim] if self.truncate_dim else result


def prune(vectors: np.ndarray, top_k: int | None = None, threshold: float | None = None) -> np.ndarray:
    """Sparse vectors with each row's ``top_k`` largest weights kept and weights ``<= threshold`` zeroed."""
    if top_k is not None:
        if top_k < 1:
            raise UsageError(f"top_k must be a positive integer, not {top_k}.", "")
        if top_k < vectors.shape[1]:
            drop = np.argpartition(-vectors, top_k - 1, axis=1)[:, top_k:]
            vectors = vectors.copy()
            np.put_along_axis(vectors, drop, 0.0, axis=1)
    if threshold is not None:
        vectors = np.where(vectors > threshold, vectors, 0.0).astype(vectors.dtype)
    return vectors


DEFAULT_FILE = ("onnx/model.onnx", "onnx")
# Kinds whose graph has outputs of its own (not a sentence embedding), by the manifest's model.kind: their runtime.
OWN_RUNTIMES = {"colbert": "exporter.runtime.colbert", "bge-m3": "exporter.runtime.bge_m3"}


def load(
    artifact_dir: Path,
    file_name: str | None = None,
    backend: str | None = None,
    *,
    providers: tuple[str, ...] | None = None,
    threads: int | None = None,
    truncate_dim: int | None = None,
    session=None,
    precision: str | None = None,
) -> Encoder:
    """Open ``file_name`` (relative to the Transformer module's folder, as ST resolves it) for serving.

    ``session``: an ``onnxruntime.InferenceSession`` already open on that very file with the options this
    call would use (the export's check passes the sentence-transformers path's, so both serving paths run on
    one session); None: opened here.

    Without ``file_name`` / ``backend``: the variant of a single-variant manifest (a pulled, packaged or
    laid-out folder), else ``onnx/model.onnx`` on onnxruntime.

    ``precision``: OpenVINO's inference precision (``backends.PRECISION_HINTS``), as the variant records it
    in ``load.model_kwargs.ov_config`` (:func:`precision_of`); without ``file_name``, the manifest's variant's.
    A bf16 variant then runs in bf16 on a CPU with bf16 units, as it was gated; default f32.

    ``truncate_dim`` (default: the artifact manifest's ``model.truncate_dim``) keeps the first N dimensions of
    each embedding, after pooling and Normalize and without re-normalising, as ``SentenceTransformer(
    truncate_dim=N).encode`` does; a graph that truncates already (exporter's ONNX) is unchanged by it."""
    artifact_dir = Path(artifact_dir)
    from exporter.ship.package import safe_relpath

    kind = (_manifest(artifact_dir).get("model") or {}).get("kind")
    if kind in OWN_RUNTIMES:
        raise UsageError(
            f"{artifact_dir} holds a {kind} model, whose graph has outputs of its own (not a sentence embedding).",
            f"Serve it with {OWN_RUNTIMES[kind]}.load (see docs/model-kinds.md).",
        )

    if file_name is None:
        file_name, backend, recorded = _manifest_variant(artifact_dir, backend)
        precision = precision or recorded
    elif backend is None:  # a named file runs on the backend that reads it
        backend = "openvino" if file_name.endswith(".xml") else "onnx"
    opener = BACKENDS.get(backend)
    if opener is None:
        raise UsageError(f"unknown runtime backend {backend!r}.", f"Available: {', '.join(BACKENDS)}.")
    facts = st_modules.read(artifact_dir)
    path = facts.transformer_dir / safe_relpath(file_name, f"the variant file name of {artifact_dir}")
    if not path.resolve().is_relative_to(artifact_dir.resolve()):
        raise IntegrityError(f"{file_name!r} leads outside {artifact_dir} (a link).", "Refusing to load it.")
    if not path.is_file():
        raise UsageError(f"{path} does not exist.", "Check the artifact folder and the variant's file name.")
    if truncate_dim is None:
        truncate_dim = _manifest_truncate_dim(artifact_dir)
    opened = (
        _OnnxSession(session)
        if session is not None and backend == "onnx"
        else opener(path, providers, threads, precision)
    )
    encoder = Encoder(opened, load_tokenizer(facts), facts, backend, path)
    encoder.truncate_dim = None if encoder.sparse else truncate_dim  # sparse encoders do not truncate (as ST)
    return encoder


def load_variant(artifact_dir: Path, load_spec: Mapping[str, Any], threads: int | None = None, session=None) -> Encoder:
    """:func:`load` for a manifest variant's ``load`` record: its file, backend, ``truncate_dim`` and inference
    precision, so the gate, the consumers and the export's check open a variant the one way it was gated.
    A record without a file name takes the manifest's single variant, else ``onnx/model.onnx``."""
    return load(
        artifact_dir,
        load_spec.get("file_name") or None,
        load_spec.get("backend"),
        threads=threads,
        truncate_dim=load_spec.get("truncate_dim"),
        session=session,
        precision=precision_of(load_spec),
    )


def _manifest(artifact_dir: Path) -> dict:
    """The folder's manifest.json as plain JSON ({} when there is none, or it is not a capped regular JSON file)."""
    from exporter.errors import UsageError
    from exporter.manifest import MANIFEST_MAX_BYTES, MANIFEST_NAME
    from exporter.user_files import read_user_json

    path = artifact_dir / MANIFEST_NAME
    try:
        data = read_user_json(path, what="manifest", max_bytes=MANIFEST_MAX_BYTES)
    except UsageError:
        return {}
    return data if isinstance(data, dict) else {}


def _manifest_variant(artifact_dir: Path, backend: str | None) -> tuple[str, str, str | None]:
    """(file name, backend, inference precision) of the one variant a manifest describes (pulled, packaged,
    laid out), or the default ONNX graph when it describes several or none."""
    variants = _manifest(artifact_dir).get("variants")
    if isinstance(variants, list) and len(variants) == 1 and isinstance(variants[0], dict):
        load_spec = variants[0].get("load") or {}
        if (
            load_spec.get("backend") in BACKENDS
            and load_spec.get("file_name")
            and backend in (None, load_spec["backend"])
        ):
            return load_spec["file_name"], load_spec["backend"], precision_of(load_spec)
    if backend is None or backend == DEFAULT_FILE[1]:
        return (*DEFAULT_FILE, None)
    return DEFAULT_FILE[0], backend, None


def _manifest_truncate_dim(artifact_dir: Path) -> int | None:
    """``model.truncate_dim`` of the artifact's manifest.json, if it has one."""
    model = _manifest(artifact_dir).get("model")
    return model.get("truncate_dim") if isinstance(model, dict) else None
