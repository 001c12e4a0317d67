"""The fidelity gate: the one piece of code that judges a variant, at export, verify, sign and package alike.

``exporter.pipeline`` (export) and ``exporter.quality.verify``'s fresh process call the same functions, so
one variant measured by both gets the same metrics from the same batches:

- ``reference_outputs``: the torch reference over the probe inputs, in ``parity_run.outputs_length_sorted``
  batches (``BATCHING``), with progress. The export caches it (``refcache``, keyed by the export fingerprint's
  reference key: source files, toolchain, CPU, settings, probe set and ``BATCHING``); verify runs it afresh.
- ``Gate``: what every variant of one export or verify run is judged against: the kind, the probe, the
  reference outputs and a thresholds provider (``ThresholdsFor``: a variant's manifest entry -> its
  threshold set; the export plan's, or at verify the policy's, ``requested_thresholds``).
- ``Gate.check(artifact, variant, model)``: the variant's outputs (``variant_outputs``: the same batching at
  export and verify), the kind's metrics, batch invariance (``exporter.quality.batch_invariance``, gated by
  ``batch_cosine_min`` where the kind's thresholds have it), the verdict, the serving paths
  (``parity_run.check_serving_paths``) and the consumers (``consumers.rows_for``): the manifest's ``parity``
  entry.
- ``Gate.judge(variant, out, run_one)``: the one place a variant's outputs become a verdict record (metrics,
  strata, batch invariance, thresholds); ``check`` above and ``check_runtime`` end in it.
- ``Gate.check_runtime(artifact, variant)``: the same judgement through the torch-free runtime, for a gate
  whose reference is the vectors the export recorded (``recorded_reference.open_gate``: verify on a host
  without torch); ``Gate.consumer_row``: one consumer (or emulated server) on a target, judged by the gate
  (the consumers here, and each ``package --layout`` folder, ``exporter.ship.layout_gate``).
- Reuse is explicit and keyed. ``exporter.fingerprint.twin_key``: two variants of one export whose key is
  equal (the same file bytes loaded the same way, the same precision's batching, the same judging and export
  fingerprint) get the same check. Within one check, the runtime path reuses the sentence-transformers path's graph runs
  by feeds digest (``parity_replay``) only after its own session reproduced one of them bit for bit, and
  records how many batches it ran and reused (``serving_paths.runtime.graph_runs``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter import kinds
from exporter.quality import parity_run

PARITY_BATCH = kinds.PARITY_BATCH
BATCHING = f"{parity_run.REFERENCE_BATCHING}; batch {PARITY_BATCH}"  # the reference's batches (the cache key)
BATCH_METRIC = "batch_cosine_min"  # the batch-invariance gate (in the threshold sets that have it)

ThresholdsFor = Callable[[dict], Any]  # a variant's manifest entry (id, precision, load, ...) -> its threshold set


def bench_batch_sizes() -> tuple[int, ...]:
    """The batch sizes bench times at: batch invariance is measured at each of them."""
    from exporter.kinds import BENCH_BATCH_SIZES as DEFAULT_BATCH_SIZES

    return tuple(DEFAULT_BATCH_SIZES)


def reference_outputs(kind: str, model, inputs: list, progress=None, label: str = ""):
    """The torch reference's outputs over ``inputs`` (``BATCHING``), one progress step per chunk."""
    from exporter.progress import NoProgress

    kspec = kinds.get(kind)
    run = lambda chunk: parity_run.outputs_length_sorted(kspec.outputs, model, chunk, PARITY_BATCH)  # noqa: E731
    return parity_run.run_chunked(progress or NoProgress(), label, run, inputs)


def variant_outputs(kind: str, precision: str, model, inputs: list, progress=None, label: str = ""):
    """``(outputs, lengths)``: a loaded variant's outputs over ``inputs`` in the batches its precision runs
    in (``parity_run.candidate_run``), and how the runtime path forms the same batches."""
    from exporter.progress import NoProgress

    run, lengths = parity_run.candidate_run(precision, kinds.get(kind).outputs, model, PARITY_BATCH)
    return parity_run.run_chunked(progress or NoProgress(), label, run, inputs), lengths


def requested_thresholds(kind: str) -> ThresholdsFor:
    """The thresholds a verify request carries for each variant (``threshold``: the policy's, decided by the
    parent process), else its class defaults; never the ones its manifest records."""
    from exporter.quality import parity

    def of(variant: dict):
        if variant.get("threshold"):
            return parity.thresholds_from_dict(kind, variant["threshold"], variant["precision"])
        return parity.defaults(kind, variant["precision"])

    return of


@dataclass
class Gate:
    """Everything a variant is judged against (see the module doc)."""

    kind: str
    probe: Any  # kind_metrics.Probe
    probe_sha256: str
    reference: Any  # reference_outputs over probe.inputs
    thresholds: ThresholdsFor
    consumers: tuple[str, ...] = ()
    threads: int | None = None  # the runtime path's threads (None: the runtime's default)
    batch_sizes: tuple[int, ...] = field(default_factory=bench_batch_sizes)
    reference_model: Any = None  # the loaded torch reference: its own batch invariance bounds what is asked
    reference_key: str | None = None  # the export fingerprint's reference key (refcache); None: nothing cached
    _reference_invariance: Any = field(default=None, init=False, repr=False)

    def reference_batch_cosine_min(self) -> float | None:
        """The torch reference's own batch invariance (``batch_cosine_min``) on the same subset and compositions,
        or None without the model. A model whose outputs depend on padding (absolute positions with left padding)
        is batch-dependent in torch too; no export of it can be less so. Measured once per gate; with a
        ``reference_key`` (the export's), cached per pin in ``refcache`` as the reference's outputs are."""
        import numpy as np

        from exporter.fingerprint import derive
        from exporter.quality import batch_invariance, refcache

        if self.reference_model is None:
            return None
        if self._reference_invariance is None:
            kspec, model = kinds.get(self.kind), self.reference_model
            run_one = lambda batch: kspec.outputs(model, batch, len(batch))  # noqa: E731 - one batch as given

            def measure():
                got = batch_invariance.measure(
                    run_one, self.probe.inputs, self.batch_sizes, self.reference, PARITY_BATCH
                )
                return np.array([got.cosine_min], dtype=np.float64)

            if self.reference_key:
                facts = {"batch_sizes": list(self.batch_sizes), "subset": batch_invariance.SUBSET_RULE}
                key = derive(self.reference_key, "reference-batch-invariance", **facts)
                self._reference_invariance = float(refcache.cached(key, measure)[0][0])
            else:
                self._reference_invariance = float(measure()[0])
        return self._reference_invariance

    def batch_threshold(self, threshold):
        """``threshold`` as the batch-invariance gate applies it: the policy's ``batch_cosine_min``, or, when the
        reference itself falls below it, the reference's own worst agreement less the same allowance
        (``1 - batch_cosine_min``): a variant may add no more batch dependence than the policy allows. Also
        returns the reference's figure (None when not measured or not needed)."""
        limit = getattr(threshold, BATCH_METRIC, None)
        if limit is None:
            return threshold, None
        ref = self.reference_batch_cosine_min()
        if ref is None or ref >= limit:
            return threshold, ref
        return dataclasses.replace(threshold, **{BATCH_METRIC: ref - (1.0 - limit)}), ref

    def judge(self, variant: dict, out, run_one=None) -> dict:
        """The verdict record (a manifest ``parity`` entry) of ``out``, one variant's outputs over the probe
        inputs: the kind's metrics against the reference, per stratum too, batch invariance when ``run_one``
        (a batch of inputs -> its outputs, run as one batch) is given and the kind gates it, judged by the
        variant's thresholds. Every path that judges a variant ends here."""
        from exporter.quality import batch_invariance, parity

        kspec = kinds.get(self.kind)
        threshold = self.thresholds(variant)
        metrics = kspec.compare(self.reference, out, self.probe)
        invariance = None
        if run_one is not None and hasattr(metrics, BATCH_METRIC):  # every kind whose outputs are vectors
            invariance = batch_invariance.measure(run_one, self.probe.inputs, self.batch_sizes, out, PARITY_BATCH)
            metrics = dataclasses.replace(metrics, **{BATCH_METRIC: invariance.cosine_min})
        judged_by, reference_batch = self.batch_threshold(threshold) if invariance else (threshold, None)
        verdict = parity.judge(metrics, judged_by)
        entry = parity.to_manifest(metrics, threshold, verdict, self.probe_sha256)  # the policy's thresholds
        if invariance is not None:
            entry["batch_invariance"] = invariance.to_dict()
            entry["batch_invariance"]["reference_cosine_min"] = reference_batch
            entry["batch_invariance"]["judged_at"] = getattr(judged_by, BATCH_METRIC, None)
        return entry

    def consumer_row(self, consumer, target, variant: dict) -> dict:
        """One consumer's row (``consumers.check``): ``consumer`` (a ``consumers.Consumer``, or a server it
        emulates) loading ``target``, judged against this gate's reference and probe by the thresholds of
        ``variant`` (the manifest entry the target serves)."""
        from exporter.quality import consumers

        return consumers.check(
            consumer, target, self.probe.texts, self.reference, self.probe, self.kind, self.thresholds(variant)
        )

    def check(self, artifact: Path, variant: dict, model, progress=None) -> dict:
        """Judge one loaded variant (``variant``: its manifest entry, ``model``: loaded by
        ``runners.variant.load_variant``) and return its manifest ``parity`` entry.

        Raises FidelityError when the outputs are broken (shape, NaN): the caller records a failed variant."""
        from exporter.progress import NoProgress
        from exporter.quality import parity_replay

        progress = progress or NoProgress()
        kspec = kinds.get(self.kind)
        threshold = self.thresholds(variant)
        label = f"Running {variant['id']} on the probe {kspec.unit}"
        tape = parity_replay.record(model)  # this run's graph outputs by feeds digest, for the runtime path
        try:
            out, lengths = variant_outputs(self.kind, variant["precision"], model, self.probe.inputs, progress, label)
        finally:
            if tape is not None:
                tape.close()
        with progress.step(f"Gating {variant['id']}"):
            run_one = lambda batch: kspec.outputs(model, batch, len(batch))  # noqa: E731 - one batch as given
            entry = self.judge(variant, out, run_one)
            entry = parity_run.check_serving_paths(
                entry,
                self.reference,
                out,
                artifact,
                variant["load"],
                self.kind,
                self.probe.texts,
                threshold,
                self.threads,
                tape=tape,
                lengths=lengths,
            )
        return self._with_consumers(artifact, variant, entry, "sentence-transformers", progress)

    def check_runtime(self, artifact: Path, variant: dict, progress=None) -> dict:
        """Judge one variant through the torch-free runtime (``exporter.runtime``, what a serving host runs)
        and return its ``parity`` entry: its outputs over the probe texts in the batches
        sentence-transformers forms (``PARITY_BATCH``, longest first), batch invariance through the same
        encoder, then the consumers, the ``runtime`` row being this verdict. A variant without a runtime
        path (not an ONNX / OpenVINO sentence-transformer) raises UsageError; broken outputs FidelityError."""
        from exporter import runtime
        from exporter.errors import UsageError
        from exporter.progress import NoProgress
        from exporter.quality import consumers

        progress = progress or NoProgress()
        load = variant["load"]
        if not consumers.BY_NAME["runtime"].applies(variant, self.kind):
            raise UsageError(f"{variant['id']} has no torch-free runtime path ({load['backend']}, {self.kind}).", "")
        encoder = runtime.load_variant(artifact, load, threads=self.threads)
        with progress.step(f"Running {variant['id']} through the runtime on the probe texts"):
            out = encoder.encode(self.probe.texts, PARITY_BATCH, prompt="")  # the texts carry their prompts
            run_one = lambda batch: encoder.encode(list(batch), len(batch), prompt="")  # noqa: E731
            entry = self.judge(variant, out, run_one)
            entry["serving_paths"] = {"runtime": {"output": _runtime_output(encoder), "judged": "as the variant"}}
        return self._with_consumers(artifact, variant, entry, "runtime", progress)

    def _with_consumers(self, artifact: Path, variant: dict, entry: dict, own: str, progress) -> dict:
        """``entry`` with the gate's consumer rows; ``own`` names the consumer whose row is ``entry`` itself."""
        from exporter.quality import consumers

        if not self.consumers:
            return entry
        names = list(self.consumers)
        with progress.step(f"Loading {variant['id']} through {', '.join(names)}"):
            rows = consumers.rows_for(
                artifact, variant, self.kind, names, self.probe, self.reference, self.thresholds(variant), entry, own
            )
        return consumers.with_rows(entry, rows)


def _runtime_output(encoder) -> str:
    return "sentence_embedding" if encoder.pooling_in_graph else "token embeddings + pooling in numpy"
