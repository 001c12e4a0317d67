"""What the fidelity check feeds each model kind and how it measures the outputs: the probe inputs, the
model call that produces outputs, and the comparison (``exporter.kinds.KINDS`` names one of each per kind).

- Probes: texts for embedders and sparse encoders; for rerankers, (query, passage) pairs arranged in
  reranking lists (``rerank_probe``, deterministic).
- Outputs: ``encode`` embeddings, ``predict`` scores, or the sparse encoder's vocabulary-sized vectors,
  densified.
- Compare: ``exporter.quality.parity``'s ``compare`` / ``compare_scores`` / ``compare_sparse``, called with
  what each needs from the probe (the reranking lists).
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.quality import parity

RERANK_LIST_SIZE = 10  # candidate passages per query
RERANK_MAX_LISTS = 32  # queries; 32 x 10 = 320 pairs, about the probe set's size


@dataclass(frozen=True)
class Probe:
    """What the fidelity check feeds a model of one kind, built from the probe texts."""

    texts: list[str]
    pairs: list[tuple[str, str]] | None = None  # cross-encoders: (query, passage)
    lists: list[list[int]] | None = None  # cross-encoders: per query, indices into ``pairs``
    strata: list[str] | None = None  # one stratum per input (text, or pair: its passage's stratum)
    items: list | None = None  # late interaction: ("query" | "document", text) in model-call order
    pair_rows: list[tuple[int, int]] | None = None  # late interaction: per pair, (query row, document row) of items

    @property
    def inputs(self) -> list:
        """What one model call takes: the role-tagged texts of a ColBERT model, the pairs for a
        cross-encoder, else the texts."""
        if self.items is not None:
            return self.items
        return self.pairs if self.pairs is not None else self.texts


def text_probe(texts: list[str], strata: list[str] | None = None) -> Probe:
    return Probe(texts=list(texts), strata=list(strata) if strata is not None else None)


def rerank_probe(texts: list[str], strata: list[str] | None = None) -> Probe:
    """Reranking lists from the probe texts, deterministically: up to ``RERANK_MAX_LISTS`` queries spread
    evenly over the texts, each with ``RERANK_LIST_SIZE`` other texts as candidate passages, also spread
    evenly (so every list mixes the probe set's kinds of text: sentences, code, other scripts, long ones).
    A pair belongs to its passage's stratum (the passages of one list span the strata).
    """
    n = len(texts)
    labels = list(strata) if strata is not None else None
    if n == 1:
        return Probe(texts=list(texts), pairs=[(texts[0], texts[0])], lists=[[0]], strata=labels)
    m = min(RERANK_LIST_SIZE, n - 1)
    step = max(1, (n - 1) // m)  # 1 + (m - 1) * step < n: the candidates are distinct and not the query
    n_lists = min(RERANK_MAX_LISTS, n)
    qstep = max(1, n // n_lists)
    pairs: list[tuple[str, str]] = []
    lists: list[list[int]] = []
    passages: list[int] = []
    for q in range(0, qstep * n_lists, qstep):
        lists.append(list(range(len(pairs), len(pairs) + m)))
        passages.extend((q + 1 + j * step) % n for j in range(m))
        pairs.extend((texts[q], texts[p]) for p in passages[-m:])
    pair_strata = [labels[p] for p in passages] if labels is not None else None
    return Probe(texts=list(texts), pairs=pairs, lists=lists, strata=pair_strata)


QUERY, DOCUMENT = "query", "document"


def _split_queries(texts: list[str]) -> tuple[list[int], int]:
    """Text indices by length (characters, ties by position) and how many of the first are the queries."""
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    return order, max(1, len(order) // 2)


def late_interaction_probe(texts: list[str], strata: list[str] | None = None) -> Probe:
    """Query/document lists for a ColBERT model from the probe texts, deterministically: the shorter half
    (by characters, ties by position) are the queries, the longer half the documents; up to
    ``RERANK_MAX_LISTS`` queries spread evenly over the queries, each with ``RERANK_LIST_SIZE`` documents
    spread evenly over the documents (starting at the query's own position, so lists differ). Each query and
    document keeps its text's stratum."""
    order, half = _split_queries(texts)
    queries = [texts[i] for i in order[:half]]
    documents = [texts[i] for i in order[half:]] or list(queries)
    items = [(QUERY, t) for t in queries] + [(DOCUMENT, t) for t in documents]
    n_docs = len(documents)
    m = min(RERANK_LIST_SIZE, n_docs)
    step = max(1, n_docs // m)
    n_lists = min(RERANK_MAX_LISTS, len(queries))
    qstep = max(1, len(queries) // n_lists)
    pair_rows: list[tuple[int, int]] = []
    lists: list[list[int]] = []
    for q in range(0, qstep * n_lists, qstep):
        docs = [len(queries) + (q + j * step) % n_docs for j in range(m)]
        lists.append(list(range(len(pair_rows), len(pair_rows) + len(docs))))
        pair_rows.extend((q, d) for d in docs)
    pairs = [(items[q][1], items[d][1]) for q, d in pair_rows]
    rows = order[:half] + (order[half:] or order[:half])  # each item's text index
    labels = [strata[i] for i in rows] if strata is not None else None
    return Probe(texts=list(texts), pairs=pairs, lists=lists, items=items, pair_rows=pair_rows, strata=labels)


def m3_probe(texts: list[str], strata: list[str] | None = None) -> Probe:
    """bge-m3: the probe texts, each encoded once (queries and documents alike, as FlagEmbedding encodes them),
    plus the query/document lists of ``late_interaction_probe`` as rows of the texts, for the ColBERT head's
    MaxSim scores and rankings."""
    late = late_interaction_probe(texts, strata)
    order, half = _split_queries(texts)
    rows = order[:half] + (order[half:] or order[:half])  # item -> text
    pair_rows = [(rows[q], rows[d]) for q, d in late.pair_rows or []]
    return Probe(texts=list(texts), lists=late.lists, pair_rows=pair_rows, strata=list(strata) if strata else None)


# ------------------------------------------------------------------------------------------ outputs
def embed(model, inputs: list, batch_size: int):
    import numpy as np

    out = model.encode(inputs, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out)


def scores(model, inputs: list, batch_size: int):
    import numpy as np

    out = np.asarray(model.predict(inputs, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False))
    return out.reshape(len(inputs), -1)


def sparse(model, inputs: list, batch_size: int):
    """Dense ``(n, vocab)`` float32 vectors (the sparse encoder's own output, densified)."""
    import numpy as np

    out = model.encode(
        inputs, batch_size=batch_size, convert_to_tensor=True, convert_to_sparse_tensor=False, show_progress_bar=False
    )
    return np.asarray(out.detach().cpu().float().numpy())


def token_vectors(model, inputs: list, batch_size: int):
    """``(texts, width, dim)`` float32 token vectors of role-tagged texts (queries expanded, documents with
    the skiplist applied, as PyLate's ``encode`` and ``exporter.runtime.colbert`` serve them), zero-padded
    to ``width`` = the model's longer of query_length and document_length, so chunks concatenate."""
    import numpy as np

    width = max(int(model.query_length), int(model.document_length))
    rows: list = []
    start = 0
    while start < len(inputs):
        role = inputs[start][0]
        end = start
        while end < len(inputs) and inputs[end][0] == role:
            end += 1
        texts = [text for _, text in inputs[start:end]]
        out = model.encode(texts, batch_size=batch_size, is_query=role == QUERY, show_progress_bar=False)
        rows.extend(np.asarray(v, dtype=np.float32) for v in out)
        start = end
    dim = next((r.shape[-1] for r in rows if r.ndim == 2), 0)
    padded = np.zeros((len(rows), width, dim), dtype=np.float32)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r[:width]
    return padded


M3_GATED_TOKENS = 128  # bge-m3: per text, at most this many ColBERT vectors and lexical weights are compared


def m3_outputs(model, inputs: list, batch_size: int):
    """bge-m3's three outputs packed into one float32 array ``(texts, 1 + width, columns)`` (so chunks and
    batches concatenate like every kind's): row 0 the dense vector; row ``1 + j`` the ``j``-th ColBERT vector
    in the first columns and, in the last two, the ``j``-th lexical weight as (token id, weight), by token
    id (the ``width`` largest weights when a text has more). ``width`` is the model's max length capped at
    ``M3_GATED_TOKENS`` (``exporter.quality.parity_m3`` reads it back)."""
    import numpy as np

    out = model.encode(list(inputs), batch_size=batch_size)
    dense = np.asarray(out["dense_vecs"], dtype=np.float32)
    colbert = [np.asarray(v, dtype=np.float32) for v in out["colbert_vecs"]]
    width = min(int(model.max_seq_length), M3_GATED_TOKENS)
    dim = next((v.shape[-1] for v in colbert if v.ndim == 2), 0)
    packed = np.zeros((len(inputs), 1 + width, max(dense.shape[-1], dim + 2)), dtype=np.float32)
    packed[:, 0, : dense.shape[-1]] = dense
    for i, (vectors, weights) in enumerate(zip(colbert, out["lexical_weights"], strict=True)):
        packed[i, 1 : 1 + min(len(vectors), width), :dim] = vectors[:width]
        top = sorted(sorted(weights.items(), key=lambda kv: -kv[1])[:width], key=lambda kv: int(kv[0]))
        for j, (token, weight) in enumerate(top):
            packed[i, 1 + j, -2:] = (int(token), weight)
    return packed


# ------------------------------------------------------------------------------------------ compare
def compare_embeddings(ref, cand, probe: Probe):
    return parity.compare(ref, cand, strata=probe.strata)


def compare_scores(ref, cand, probe: Probe):
    return parity.compare_scores(ref, cand, probe.lists or [], probe.strata)


def compare_sparse(ref, cand, probe: Probe):
    return parity.compare_sparse(ref, cand, strata=probe.strata)


def compare_late_interaction(ref, cand, probe: Probe):
    from exporter.quality import parity_late

    return parity_late.compare_late_interaction(ref, cand, probe.pair_rows or [], probe.lists or [], probe.strata)


def compare_m3(ref, cand, probe: Probe):
    from exporter.quality import parity_m3

    return parity_m3.compare_m3(ref, cand, probe.pair_rows or [], probe.lists or [], probe.strata)
