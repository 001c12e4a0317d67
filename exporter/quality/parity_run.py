"""Running the gate: models over the probe inputs with visible progress, and every serving path checked.

- ``run_chunked``: a model's outputs over the probe inputs, in chunks of ``PROGRESS_CHUNK`` with one
  progress step each when there are more, so a long reference run (tens of thousands of probe texts)
  shows how far it is.
- ``outputs_length_sorted``: the torch reference's outputs in batches of inputs of about the same token
  count (``length_batches``: longest first, at most ``batch_size`` inputs and ``batch_size x
  TOKENS_PER_SLOT`` padded tokens), rows back in input order. sentence-transformers sorts by characters,
  which on the default probe set pads 21350 tokens for 7545 real ones; these batches pad 8840, the same
  embeddings within 3e-7 (fp32 padding is masked), about 40 % less reference time. The fp32 variants'
  sentence-transformers path runs the same way (``exporter.quality.gate`` passes ``lengths`` on to the runtime
  path, which then forms the same batches); other precisions keep ST's batches (dynamic int8 scales depend
  on the batch mates, 16-bit kernels may depend on the shapes).
- ``add_runtime_path``: a sentence-transformer variant with an ONNX graph has two serving paths. The
  sentence-transformers path (``SentenceTransformer(backend="onnx")``) reads the graph's
  ``last_hidden_state`` and runs the model's Pooling/Normalize modules in torch; the torch-free
  ``exporter.runtime`` reads the graph's ``sentence_embedding`` output (pooling and normalisation inside
  the graph). Both are served, so both are gated: the runtime path against torch with the variant's own
  thresholds, and the two paths against each other (cosine_min and norm_rel_err_max of the variant's
  thresholds). The result goes into the parity entry's ``serving_paths``; any failure fails the variant.

  The runtime is fed the batches sentence-transformers forms (``st_batches``): a dynamically quantised
  int8 graph computes its activation scales per batch, padding included, so a text's vector depends on
  its batch mates (on all-MiniLM-L6-v2 onnx-quint8-avx2, the same texts batched in the two orders agree
  only to cosine 0.947; in the same batches, to 1 - 1e-14). Same batches isolate what the paths differ in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS_CHUNK = 2048  # probe inputs per progress step
ST_PATH = "last_hidden_state + the model's modules in torch (SentenceTransformer backend='onnx')"
RUNTIME_BACKENDS = frozenset({"onnx"})  # backends exporter.runtime serves
TOKENS_PER_SLOT = 64  # the reference's batches: at most batch_size x this many padded tokens (length_batches)
REFERENCE_BATCHING = f"token-length sorted, <= batch x {TOKENS_PER_SLOT} padded tokens"  # part of the cache key


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + PROGRESS_CHUNK)) for s in range(0, n, PROGRESS_CHUNK)]


def run_chunked(progress, label: str, fn: Callable[[list], Any], inputs: list):
    """``fn`` over ``inputs`` (one progress step, or one per ``PROGRESS_CHUNK`` inputs when there are more).

    Export and verify both run every model this way, so the batches a model sees are the same in both."""
    import numpy as np

    if len(inputs) <= PROGRESS_CHUNK:
        with progress.step(label):
            return fn(inputs)
    parts = []
    for start, end in _chunks(len(inputs)):
        with progress.step(f"{label} ({end}/{len(inputs)})"):
            parts.append(np.asarray(fn(inputs[start:end])))
    return np.concatenate(parts, axis=0)


def token_lengths(model, inputs: list) -> list[int] | None:
    """Each input's token count under ``model``'s own (Hugging Face) tokenizer, clipped at the model's maximum
    length; None when the model has no such tokenizer (e.g. a StaticEmbedding's ``tokenizers.Tokenizer``)."""
    tokenizer = getattr(model, "tokenizer", None)
    if not inputs or not callable(tokenizer):
        return None
    if isinstance(inputs[0], tuple | list):  # cross-encoder pairs
        ids = tokenizer([a for a, _ in inputs], [b for _, b in inputs], truncation=True)["input_ids"]
    else:
        ids = tokenizer(list(inputs), truncation=True)["input_ids"]
    limit = getattr(model, "max_seq_length", None) or getattr(model, "max_length", None)
    return [min(len(x), limit) if isinstance(limit, int) else len(x) for x in ids]


def length_batches(lengths: list[int], batch_size: int, token_budget: int | None = None) -> list[list[int]]:
    """Index batches, longest inputs first (by tokens): at most ``batch_size`` inputs and, but for a single
    input, ``token_budget`` padded tokens each (default ``batch_size * TOKENS_PER_SLOT``)."""
    import numpy as np

    budget = token_budget or batch_size * TOKENS_PER_SLOT
    order = np.argsort([-n for n in lengths], kind="stable").tolist()
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def outputs_length_sorted(outputs: Callable[[Any, list, int], Any], model, inputs: list, batch_size: int):
    """``outputs(model, inputs, batch_size)`` (a ``KindSpec.outputs``), run over ``length_batches`` of the
    inputs and put back in input order: the least padding for the same numbers. For outputs that do not
    depend on their batch mates only (the fp32 torch reference and fp32 variants; a dynamically quantised
    variant's do). Falls back to one plain call without a tokenizer to count with."""
    import numpy as np

    lengths = token_lengths(model, inputs)
    if lengths is None:
        return outputs(model, inputs, batch_size)
    parts = [
        (idx, np.asarray(outputs(model, [inputs[i] for i in idx], len(idx))))
        for idx in length_batches(lengths, batch_size)
    ]
    out = np.empty((len(inputs), *parts[0][1].shape[1:]), dtype=parts[0][1].dtype)
    for idx, values in parts:
        out[idx] = values
    return out


def candidate_run(precision: str, outputs: Callable[[Any, list, int], Any], model, batch_size: int):
    """``(run, lengths)`` for a built variant's sentence-transformers path: ``run(chunk)`` gives its outputs,
    in ``outputs_length_sorted`` batches for an fp32 variant (``lengths`` counts tokens, for the runtime
    path to form the same batches), else in the batches ``outputs`` forms itself (``lengths`` None)."""
    from exporter.variants import Precision

    if Precision(precision) is not Precision.FP32:
        return (lambda chunk: outputs(model, chunk, batch_size)), None
    return (lambda chunk: outputs_length_sorted(outputs, model, chunk, batch_size)), (
        lambda texts: token_lengths(model, texts)
    )


def runtime_encoder(artifact: Path, load: dict, kind: str | None, threads: int | None = None, session=None):
    """``(encoder, None)``: the torch-free runtime on the variant's graph (on ``session`` when given: an open
    session of the same file and options); ``(None, None)``: the variant has no runtime path (not an ONNX
    sentence-transformer); ``(None, reason)``: it should, but cannot load."""
    from exporter import kinds, runtime
    from exporter.errors import UsageError

    if kinds.get(kind).kind is not kinds.ModelKind.SENTENCE_TRANSFORMER or load.get("backend") not in RUNTIME_BACKENDS:
        return None, None
    try:
        return runtime.load_variant(artifact, load, threads=threads, session=session), None
    except UsageError as exc:
        return None, exc.message


def check_serving_paths(
    entry: dict,
    ref_out,
    st_out,
    artifact: Path,
    load: dict,
    kind,
    texts,
    threshold,
    threads=None,
    tape=None,
    lengths=None,
):
    """``add_runtime_path`` for a variant that has a runtime path; records why one that should cannot load.

    ``tape``: the sentence-transformers path's session outputs (``parity_replay.record``), which the runtime
    path reuses for the batches it feeds identically instead of running the graph on them again; ``lengths``:
    the sentence-transformers path ran in ``outputs_length_sorted`` batches counted with it.

    One session serves both paths when it can: with the libraries' default options (``threads`` None, as at
    export) and no model options of its own, the runtime opens the same file with the same options as the
    sentence-transformers path did, so it runs on that path's session (``tape.session``) and its taped
    batches need no check run (``serving_paths.runtime.graph_runs.session``: "shared")."""
    from exporter.quality import parity_replay

    shared = tape.session if tape is not None and threads is None and not load.get("model_kwargs") else None
    encoder, reason = runtime_encoder(artifact, load, kind, threads, session=shared)
    if encoder is not None:
        encoder = parity_replay.replaying(encoder, tape, same_session=shared is not None)
        entry = add_runtime_path(entry, ref_out, st_out, encoder, texts, threshold, lengths=lengths)
        if isinstance(encoder.session, parity_replay.ReplayingSession):  # what the runtime path ran, and reused
            runs: dict[str, Any] = {"ran": encoder.session.ran, "replayed": encoder.session.replayed}
            runs["session"] = "shared" if shared is not None else "own"
            entry["serving_paths"]["runtime"]["graph_runs"] = runs
        return entry
    if reason:
        entry["serving_paths"] = {
            "sentence_transformers": ST_PATH,
            "runtime": {"available": False, "reason": reason},
            "agreement": None,
        }
    return entry


def st_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """The batches (index lists) ``SentenceTransformer.encode`` forms: longest text first, by characters."""
    import numpy as np

    order = np.argsort([-len(t) for t in texts])  # the very call sentence-transformers makes
    return [order[s : s + batch_size].tolist() for s in range(0, len(texts), batch_size)]


def _batches(chunk: list[str], batch_size: int, lengths: Callable[[list[str]], list[int] | None] | None):
    """The batches the sentence-transformers path ran ``chunk`` in: ST's own (``st_batches``), or with
    ``lengths`` ``length_batches`` (``outputs_length_sorted``), each in the row order ST's encode gives it."""
    import numpy as np

    counts = lengths(chunk) if lengths is not None else None
    if counts is None:
        return st_batches(chunk, batch_size)
    return [[b[j] for j in np.argsort([-len(chunk[i]) for i in b])] for b in length_batches(counts, batch_size)]


def encode_in_st_batches(encoder, texts: list[str], batch_size: int = 32, lengths=None):
    """``encoder.encode`` over the batches the sentence-transformers path ran (per ``run_chunked`` chunk;
    ``lengths``: it ran ``outputs_length_sorted`` counting tokens with this), rows back in input order. The
    batches run shortest first (each is independent of the others), so the one real batch a replaying
    session (``parity_replay``) checks its tape with is the cheapest."""
    import numpy as np

    parts = []
    for start, end in reversed(_chunks(len(texts))):  # shortest batch first: the cheapest one runs first
        for idx in reversed(_batches(texts[start:end], batch_size, lengths)):
            rows = [start + i for i in idx]
            parts.append((rows, encoder.encode([texts[i] for i in rows], len(rows))))
    out = np.empty((len(texts), parts[0][1].shape[1]), dtype=parts[0][1].dtype)
    for rows, vectors in parts:
        out[rows] = vectors
    return out


def add_runtime_path(
    entry: dict, ref_out, st_out, encoder, texts: list[str], threshold, batch_size: int = 32, lengths=None
) -> dict:
    """Gate the runtime path of a variant and record it in its parity ``entry`` (returned, updated).

    ``ref_out`` / ``st_out``: the torch reference's and the sentence-transformers path's embeddings of
    ``texts``; ``encoder``: an ``exporter.runtime.Encoder`` on the variant's graph.
    """
    from exporter.errors import FidelityError
    from exporter.quality import parity

    output = "sentence_embedding" if encoder.pooling_in_graph else "token embeddings + pooling in numpy"
    try:
        rt_out = encode_in_st_batches(encoder, texts, batch_size, lengths)
        metrics = parity.compare(ref_out, rt_out)
        verdict = parity.judge(metrics, threshold)
        runtime = {"output": output, **metrics.to_dict(), **verdict.to_dict()}  # judged by the variant's threshold
        pair_t = parity.Thresholds(cosine_min=threshold.cosine_min, norm_rel_err_max=threshold.norm_rel_err_max)
        both = parity.compare(st_out, rt_out)
        agree_v = parity.judge(both, pair_t)
        agreement = {
            "cosine_min": both.cosine_min,
            "norm_rel_err_max": both.norm_rel_err_max,
            "max_abs_diff": both.max_abs_diff,
            "threshold": {"cosine_min": pair_t.cosine_min, "norm_rel_err_max": pair_t.norm_rel_err_max},
            **agree_v.to_dict(),
        }
        failures = [f"runtime path: {f}" for f in verdict.failures]
        failures += [f"serving paths disagree: {f}" for f in agree_v.failures]
    except FidelityError as exc:  # the runtime path's output is broken (shape, NaN)
        runtime, agreement = {"output": output, "passed": False, "failures": [exc.message]}, None
        failures = [f"runtime path: {exc.message}"]
    entry["serving_paths"] = {"sentence_transformers": ST_PATH, "runtime": runtime, "agreement": agreement}
    entry["failures"] = [*entry.get("failures", []), *failures]
    entry["passed"] = bool(entry.get("passed")) and not failures
    return entry
