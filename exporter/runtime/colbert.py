"""ColBERT (late interaction, as PyLate saves it) served without torch: token vectors per text.

PyLate's ``ColBERT`` is Transformer -> Dense projection(s) with no pooling; its settings live in
``config_sentence_transformers.json`` (``query_prefix`` / ``document_prefix``, ``query_length`` /
``document_length``, ``do_query_expansion``, ``attend_to_expansion_tokens``, ``skiplist_words``). This module
tokenises as ``pylate.models.ColBERT.tokenize`` does and runs the exported graph
(``exporter.builders.export_onnx_colbert``: ``token_embeddings`` L2-normalised per token, and
``attention_mask``):

- texts are tokenised to ``length - 1`` tokens (special tokens included), then the prefix token is
  inserted after the first token (``[CLS] [Q] ...``) with attention 1;
- queries with expansion are padded to the full ``query_length`` with the mask token, unattended unless
  ``attend_to_expansion_tokens``, and every position is kept (the expansion vectors are the query's);
- documents are padded with the mask token per batch; a token is kept if it is attended and not in the
  skiplist (PyLate: punctuation, looked up with ``convert_tokens_to_ids``, an unknown word giving the unk id).
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

from exporter.errors import UsageError

CONFIG_FILE = "config_sentence_transformers.json"
# The keys PyLate writes into CONFIG_FILE (ColBERT.save): a model folder with them is a ColBERT model.
MARKER_KEYS = ("query_prefix", "document_prefix", "query_length", "document_length")
TOKENS_OUTPUT = "token_embeddings"
MASK_OUTPUT = "attention_mask_out"
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class ColbertFacts:
    """PyLate's ColBERT settings, with PyLate's defaults for what a file leaves out."""

    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    query_length: int = 32
    document_length: int = 180
    do_query_expansion: bool = True
    attend_to_expansion_tokens: bool = False
    skiplist_words: list[str] = field(default_factory=lambda: list(string.punctuation))

    def to_dict(self) -> dict:
        return asdict(self)


def read_json(path: Path) -> dict | None:
    """A JSON object from a regular file of at most ``MAX_CONFIG_BYTES`` (None if absent or not an object);
    UsageError for a file that is not regular or too large."""
    from exporter.user_files import read_user_file

    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(read_user_file(path, what=path.name, max_bytes=MAX_CONFIG_BYTES).decode("utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _config(model_dir: Path) -> dict | None:
    return read_json(Path(model_dir) / CONFIG_FILE)


def is_colbert(model_dir: Path) -> bool:
    """Whether the folder is a PyLate ColBERT model: its CONFIG_FILE has PyLate's keys."""
    data = _config(model_dir)
    return data is not None and all(k in data for k in MARKER_KEYS)


def read_facts(model_dir: Path) -> ColbertFacts:
    """The ColBERT settings of a PyLate model folder (UsageError if it is not one)."""
    data = _config(model_dir)
    if data is None or not is_colbert(model_dir):
        raise UsageError(
            f"{Path(model_dir) / CONFIG_FILE} has no PyLate ColBERT settings ({', '.join(MARKER_KEYS)}).",
            "Save the model with pylate.models.ColBERT.save.",
        )
    base = ColbertFacts()
    values = {k: data[k] for k in asdict(base) if data.get(k) is not None}
    return ColbertFacts(**{**asdict(base), **values})


class ColbertEncoder:
    """Texts in, per-token L2-normalised vectors out (a list of float32 ``[tokens, dim]`` arrays)."""

    def __init__(self, session, model_dir: Path, backend: str, path: Path):
        from tokenizers import Tokenizer

        self.session = session
        self.backend = backend
        self.path = path
        self.facts = read_facts(model_dir)
        tok_path = Path(model_dir) / "tokenizer.json"
        if not tok_path.is_file():
            raise UsageError(f"{tok_path} is missing; the runtime needs the fast tokenizer file.", "")
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        specials = read_json(Path(model_dir) / "tokenizer_config.json") or {}
        unk = self.tokenizer.token_to_id(str(specials.get("unk_token") or "[UNK]"))
        mask = specials.get("mask_token")
        self.pad_id = self.tokenizer.token_to_id(str(mask)) if mask else None
        if self.pad_id is None:  # PyLate pads with the mask token, else EOS, else the pad token
            for name in ("eos_token", "pad_token"):
                if specials.get(name) is not None and self.tokenizer.token_to_id(str(specials[name])) is not None:
                    self.pad_id = self.tokenizer.token_to_id(str(specials[name]))
                    break
        self.pad_id = 0 if self.pad_id is None else self.pad_id

        def ids(word: str) -> int | None:
            found = self.tokenizer.token_to_id(word)
            return unk if found is None else found

        f = self.facts
        self.prefix_id = {True: ids(f.query_prefix) if f.query_prefix else None}
        self.prefix_id[False] = ids(f.document_prefix) if f.document_prefix else None
        self.skiplist = sorted({i for i in (ids(w) for w in f.skiplist_words) if i is not None})
        self.inputs = list(session.input_names)

    def tokenize(self, texts: list[str], is_query: bool):
        """``input_ids``, ``attention_mask`` (int64) and the keep mask, as PyLate builds them."""
        import numpy as np

        f = self.facts
        prefix = self.prefix_id[is_query]
        length = (f.query_length if is_query else f.document_length) - (1 if prefix is not None else 0)
        self.tokenizer.enable_truncation(length, strategy="longest_first")
        expand = is_query and f.do_query_expansion
        encs = self.tokenizer.encode_batch(list(texts))
        width = length if expand else max((len(e.ids) for e in encs), default=0)
        ids = np.full((len(encs), width), self.pad_id, dtype=np.int64)
        att = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            att[i, : len(e.ids)] = 1
        if prefix is not None:
            ids = np.concatenate([ids[:, :1], np.full((len(encs), 1), prefix, np.int64), ids[:, 1:]], axis=1)
            att = np.concatenate([att[:, :1], np.ones((len(encs), 1), np.int64), att[:, 1:]], axis=1)
        if is_query and f.attend_to_expansion_tokens:
            att[:] = 1
        if expand:
            keep = np.ones_like(att, dtype=bool)
        elif is_query:
            keep = att.astype(bool)
        else:
            keep = att.astype(bool) & ~np.isin(ids, self.skiplist)
        return ids, att, keep

    def encode(self, texts: list[str], is_query: bool = False, batch_size: int = 32) -> list:
        """Each text's token vectors ``[tokens, dim]`` (float32): queries expanded, documents skiplisted."""
        import numpy as np

        out: list = []
        for start in range(0, len(texts), batch_size):
            ids, att, keep = self.tokenize(list(texts[start : start + batch_size]), is_query)
            feeds = {"input_ids": ids, "attention_mask": att}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            vectors = np.asarray(self.session.run([TOKENS_OUTPUT], feeds)[0], dtype=np.float32)
            out.extend(vectors[i][keep[i]] for i in range(len(ids)))
        return out

    def encode_queries(self, texts: list[str], batch_size: int = 32) -> list:
        return self.encode(texts, is_query=True, batch_size=batch_size)

    def encode_documents(self, texts: list[str], batch_size: int = 32) -> list:
        return self.encode(texts, is_query=False, batch_size=batch_size)


def load(model_dir: Path, backend: str = "onnx", file_name: str | None = None, threads: int | None = None):
    """The ColBERT graph ``file_name`` of the artifact (or source) folder ``model_dir`` on ``backend``."""
    from exporter.runtime import backends

    session, path = backends.open_own_graph(Path(model_dir), backend, file_name, threads, "ColBERT")
    return ColbertEncoder(session, Path(model_dir), backend, path)
