"""The manifest's main sections as the code reads and writes them (``exporter.manifest`` reads, checks and writes
the file). TypedDicts, so a manifest stays the plain JSON object it is on disk (loaded, validated against
``schema/manifest.schema.json`` and saved as is) while mypy checks every literal key the code looks up in them.

tests/test_manifest_types.py holds each one to its object in the schema: the same keys, the same required ones,
the same JSON types, so the schema and the code cannot drift. Sections still typed ``dict[str, Any]``
(environment, parity, bench, layout) are checked by the schema only. Imports nothing; no
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
    bench: NotRequired[dict[str, Any] | None]
    fingerprint: NotRequired[FingerprintEntry]  # what a re-run and a fleet compare (exporter.fingerprint)


class Manifest(TypedDict):
    schema_version: Literal[1]
    tool_version: str
    created_at: str
    source: SourceEntry
    model: ModelFacts
    environment: dict[str, Any]
    probe: TextSetEntry
    calibration: NotRequired[TextSetEntry | None]
    shared_files: list[FileEntry]
    variants: list[VariantEntry]
    publishable: bool
    layout: NotRequired[dict[str, Any]]  # a serving layout's record (exporter package --layout)
    recommended: NotRequired[Recommended | None]
    bench: NotRequired[dict[str, Any] | None]
