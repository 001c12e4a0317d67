"""bge-m3 (BAAI/bge-m3, as FlagEmbedding saves it) served without torch: all three outputs for each text.

The exported graph (``exporter.builders.export_onnx_m3``) has three outputs, computed as FlagEmbedding's
``EncoderOnlyEmbedderM3ModelForInference`` computes them from the XLM-RoBERTa token states ``h``:

    dense_vecs      float [batch, hidden]          normalize(h[:, 0])  (CLS)
    sparse_weights  float [batch, sequence]        relu(sparse_linear(h)).squeeze(-1), per token
    colbert_vecs    float [batch, sequence-1, d]   normalize(colbert_linear(h[:, 1:]) * mask[:, 1:])

This module tokenises as sentence-transformers does (the artifact's ``tokenizer.json``, truncated at
``max_seq_length``, padded on the right) and returns what ``FlagEmbedding.BGEM3FlagModel.encode`` returns:

- ``dense_vecs``: ``[n, hidden]`` float32;
- ``lexical_weights``: per text, ``{token id (str): weight}``: the largest weight of each token id among the
  text's tokens, weights ``> 0`` only, the CLS, EOS, PAD and UNK tokens left out;
- ``colbert_vecs``: per text, ``[tokens - 1, d]`` float32 (every token but CLS, padding dropped).
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import UsageError

DENSE_OUTPUT = "dense_vecs"
SPARSE_OUTPUT = "sparse_weights"
COLBERT_OUTPUT = "colbert_vecs"
OUTPUTS = (DENSE_OUTPUT, SPARSE_OUTPUT, COLBERT_OUTPUT)
# The special tokens FlagEmbedding leaves out of the lexical weights (``_process_token_weights``).
UNUSED_SPECIAL_TOKENS = ("cls_token", "eos_token", "pad_token", "unk_token")


def special_token_ids(model_dir: Path, tokenizer) -> list[int]:
    """The ids of ``UNUSED_SPECIAL_TOKENS`` as the folder's tokenizer_config.json / special_tokens_map.json
    name them (a string or ``{"content": ...}``), looked up in ``tokenizer`` (a ``tokenizers.Tokenizer``)."""
    from exporter.runtime.colbert import read_json
    from exporter.source.st_modules import _token_text

    config = read_json(Path(model_dir) / "tokenizer_config.json") or {}
    special = read_json(Path(model_dir) / "special_tokens_map.json") or {}
    ids = set()
    for name in UNUSED_SPECIAL_TOKENS:
        text = _token_text(config.get(name)) or _token_text(special.get(name))
        found = tokenizer.token_to_id(text) if text else None
        if found is not None:
            ids.add(int(found))
    return sorted(ids)


def lexical_weights(weights, ids, unused) -> dict[str, float]:
    """FlagEmbedding's ``_process_token_weights``: per token id (a str key), its largest weight over the
    text's tokens, weights > 0 only, the ``unused`` ids left out."""
    out: dict[str, float] = {}
    for w, idx in zip(weights, ids, strict=True):
        idx = int(idx)
        if idx in unused or not w > 0:
            continue
        key = str(idx)
        if w > out.get(key, 0.0):
            out[key] = float(w)
    return out


class M3Encoder:
    """Texts in, bge-m3's dense vector, lexical weights and ColBERT vectors out (``encode``)."""

    def __init__(self, session, model_dir: Path, backend: str, path: Path):
        from exporter.runtime import load_tokenizer
        from exporter.source import st_modules

        self.session = session
        self.backend = backend
        self.path = path
        self.facts = st_modules.read(Path(model_dir))
        self.tokenizer = load_tokenizer(self.facts)
        self.unused = frozenset(special_token_ids(self.facts.transformer_dir, self.tokenizer))
        self.inputs = list(session.input_names)
        missing = [o for o in OUTPUTS if o not in session.output_names]
        if missing:
            raise UsageError(
                f"{path} has no {', '.join(missing)} output: it is not a bge-m3 graph of this exporter.",
                "Load the artifact's own bge-m3 variant (exporter export writes it).",
            )

    @property
    def max_seq_length(self) -> int | None:
        return self.facts.max_seq_length

    def tokenize(self, texts: list[str]):
        """``input_ids`` and ``attention_mask`` (int64, right-padded to the batch's longest text)."""
        import numpy as np

        encs = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        att = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        return ids, att

    def encode(self, texts: list[str], batch_size: int = 32) -> dict:
        """``{"dense_vecs", "lexical_weights", "colbert_vecs"}`` of ``texts`` (module doc)."""
        import numpy as np

        dense: list = []
        lexical: list[dict[str, float]] = []
        colbert: list = []
        for start in range(0, len(texts), batch_size):
            ids, att = self.tokenize(list(texts[start : start + batch_size]))
            feeds = {"input_ids": ids, "attention_mask": att}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            d, s, c = (np.asarray(x, dtype=np.float32) for x in self.session.run(list(OUTPUTS), feeds))
            dense.append(d)
            for i in range(len(ids)):
                n = int(att[i].sum())
                lexical.append(lexical_weights(s[i, :n], ids[i, :n], self.unused))
                colbert.append(c[i, : max(n - 1, 0)])
        return {
            "dense_vecs": np.concatenate(dense, axis=0) if dense else np.zeros((0, 0), np.float32),
            "lexical_weights": lexical,
            "colbert_vecs": colbert,
        }


def load(model_dir: Path, backend: str = "onnx", file_name: str | None = None, threads: int | None = None):
    """The bge-m3 graph ``file_name`` of the artifact folder ``model_dir`` on ``backend`` (``onnx`` or
    ``openvino``; default file: ``onnx/model.onnx`` or ``openvino/openvino_model.xml``)."""
    from exporter.runtime import backends

    session, path = backends.open_own_graph(Path(model_dir), backend, file_name, threads, "bge-m3")
    return M3Encoder(session, Path(model_dir), backend, path)
