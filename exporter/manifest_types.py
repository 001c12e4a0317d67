"""The manifest's main sections as the code reads and writes them (``exporter.manifest`` reads, checks and writes
the file). TypedDicts, so a manifest stays the plain JSON object it is on disk (loaded, validated against
``schema/manifest.schema.json`` and saved as is) while mypy checks every literal key the code looks up in them.

tests/test_manifest_types.py holds each one to its object in the schema: the same keys, the same required ones,
the same JSON types, so the schema and the code cannot drift. A variant's ``parity`` stays ``dict[str, Any]``:
its metrics depend on the model kind (``exporter.kinds``), and the schema checks them. Imports nothing; no
``from __future__ import annotations`` either: Python 3.11 reads ``NotRequired`` from evaluated annotations only.
"""

from typing import Any, Literal, NotRequired, TypedDict

Status = Literal["passed", "failed", "error"]
# exporter.kinds.ModelKind's values (tests/test_manifest_types.py holds the two equal)
KindName = Literal["sentence-transformer", "cross-encoder", "sparse-encoder", "colbert", "bge-m3"]


class AdjustedFrom(TypedDict):
    sha256: str
    source: NotRequired[str]
    reason: str


class FileEntry(TypedDict):
    """One file: its path relative to the artifact root (POSIX), size in bytes, sha256."""

    path: str
    size: int
    sha256: str
    adjusted_from: NotRequired[AdjustedFrom]  # rewritten by the exporter (a serving layout)


class GeneratedProbes(TypedDict):
    generator: str
    seed: int
    max_length: int
    n: int
    sha256: str
    counts: NotRequired[dict[str, int]]


class TextSetEntry(TypedDict):
    """A probe or calibration text set."""

    name: str
    sha256: str
    n: int
    source: NotRequired[str | None]
    strata: NotRequired[dict[str, int]]  # texts per stratum
    generated: NotRequired[GeneratedProbes]  # the probes derived from the model's tokenizer


class LoadSpec(TypedDict):
    """How a user loads the variant: ``SentenceTransformer(path, backend=..., model_kwargs={"file_name": ...})``."""

    backend: str
    file_name: NotRequired[str | None]
    model_kwargs: NotRequired[dict[str, Any]]
    truncate_dim: NotRequired[int]  # Matryoshka: the first N dimensions


class SourceEntry(TypedDict):
    """Where the model came from: the Hub repo at its 40-hex commit, or a local folder; every source file."""

    repo: str | None
    revision: str | None  # the pinned commit sha
    requested_ref: NotRequired[str | None]  # a branch or tag the user gave (--allow-unpinned)
    pinned: bool
    local_path: NotRequired[str | None]
    weights_format: NotRequired[str | None]
    files: list[FileEntry]
    kind: NotRequired[KindName]  # the model kind the files state (exporter.kinds)
    skipped: NotRequired[list[str]]  # files the model does not load: not copied
    trust_remote_code: NotRequired[bool]


class Recommended(TypedDict):
    """``--variants best``'s choice and the rule that chose it (exporter.quality.recommend)."""

    variant: str | None
    rule: str
    batch_size: NotRequired[int | None]
    throughput_ratio: NotRequired[float | None]
    reason: NotRequired[str | None]


class ModelFacts(TypedDict):
    """What the exported model is, read from the loaded reference (``exporter.kinds``: each kind's facts)."""

    kind: KindName
    embedding_dim: int | None
    max_seq_length: int | None
    pooling: str | None
    normalize: bool
    similarity: NotRequired[str | None]
    num_labels: NotRequired[int]  # cross-encoders
    activation_fn: NotRequired[str | None]  # cross-encoders: applied to the logits
    vocab_size: NotRequired[int]  # sparse encoders: the vector width
    max_active_dims: NotRequired[int | None]  # sparse encoders
    colbert: NotRequired[dict[str, Any]]  # ColBERT (PyLate): prefixes, lengths, expansion, skiplist
    bge_m3: NotRequired[dict[str, Any]]  # bge-m3: the three heads
    prompts: NotRequired[dict[str, str] | None]
    truncate_dim: NotRequired[int | None]  # Matryoshka
    shape: NotRequired[dict[str, Any]]  # what the pre-flight read (exporter.support)


class CpuInfo(TypedDict):
    """The CPU a manifest's numbers came from (``exporter.environment.cpu_info``): model, flags that matter."""

    model: str
    arch: NotRequired[str]
    logical_cores: NotRequired[int | None]
    flags: list[str]  # the flags the catalogue and the runtimes care about (environment.RELEVANT_FLAGS)


class Environment(TypedDict):
    """The machine and toolchain of the export (``exporter.environment.environment``)."""

    python: str
    implementation: NotRequired[str]
    platform: NotRequired[str]
    packages: dict[str, str | None]  # distribution -> version (None: not installed)
    cpu: CpuInfo


class BenchMemory(TypedDict):
    """MiB: the process's peak resident set before and after the bench, and with each runner loaded."""

    peak_rss_mb: float
    peak_rss_mb_before: NotRequired[float]
    runners_resident: int
    rss_mb_by_runner: NotRequired[dict[str, float | None]]


class RunnerBench(TypedDict):
    """One runner's timings in a bench run (``exporter.quality.bench.summarize``); keys are batch sizes."""

    throughput: dict[str, float]  # median inputs/s
    throughput_rounds: NotRequired[dict[str, list[float]]]
    ratio_to_torch: dict[str, float]  # median of the per-round ratios to the torch reference
    ratio_range: NotRequired[dict[str, list[float]]]  # [min, max] of those ratios
    latency_ms: NotRequired[dict[str, float] | None]  # p50, p95 at batch 1, and n
    runtime: NotRequired[dict[str, Any]]  # the provider / device and threads it ran with
    rss_mb: NotRequired[float | None]


class BenchRun(TypedDict):
    """The last bench run (``exporter.quality.bench``): how it ran, the torch reference, the runners timed."""

    created_at: NotRequired[str]
    threads: int
    batch_sizes: list[int]
    rounds: NotRequired[int]
    warmup: NotRequired[str]
    texts: NotRequired[dict[str, Any]]  # the text set timed: name, sha256, n, source
    kind: NotRequired[KindName]
    unit: NotRequired[str]  # throughput is in these per second
    n_inputs: NotRequired[int]
    cpu: CpuInfo
    loadavg_1min: NotRequired[dict[str, float]]  # before and after: other work on the machine
    method: NotRequired[str]
    not_applicable: NotRequired[dict[str, str]]  # variant id -> why this CPU cannot run it
    not_timed: NotRequired[dict[str, str]]  # --variants best: a passed variant left out, and why
    batching: NotRequired[str]
    torch_idle_threads: NotRequired[str]
    memory: NotRequired[BenchMemory]
    reference: RunnerBench
    variants: list[str]


class Layout(TypedDict):
    """A serving layout's record (``exporter package --layout``): what it came from and its consumers' rows."""

    name: str
    artifact_manifest_sha256: str
    variant: str
    gate: list[dict[str, Any]]


class FingerprintEntry(TypedDict):
    digest: str  # sha256 of the parts (exporter.fingerprint)
    parts: dict[str, str]  # part name -> sha256 of that input


class VariantEntry(TypedDict):
    id: str
    backend: Literal["onnx", "openvino", "torch"]
    precision: str
    status: Status
    error: NotRequired[str | None]
    files: list[FileEntry]
    load: LoadSpec
    build: dict[str, Any]  # the builder's full configuration (BuildResult.build)
    parity: NotRequired[dict[str, Any] | None]  # the gate's record (exporter.quality.parity)
    bench: NotRequired[RunnerBench | None]
    fingerprint: NotRequired[FingerprintEntry]  # what a re-run and a fleet compare (exporter.fingerprint)


class Manifest(TypedDict):
    schema_version: Literal[1]
    tool_version: str
    created_at: str
    source: SourceEntry
    model: ModelFacts
    environment: Environment
    probe: TextSetEntry
    calibration: NotRequired[TextSetEntry | None]
    shared_files: list[FileEntry]
    variants: list[VariantEntry]
    publishable: bool
    layout: NotRequired[Layout]  # a serving layout's record (exporter package --layout)
    recommended: NotRequired[Recommended | None]
    bench: NotRequired[BenchRun | None]
