"""The libraries and servers users load an artifact with, as data: how each loads a variant and pools.

Each ``Consumer`` says which variant backends and model kinds it applies to, which of the model's pooling
modes it can reproduce (``pools``; ``None``: it runs the model's own modules), how it is run (in this
process, or a subprocess for Node) and how to load it. ``check`` runs one consumer on one variant with the
probe texts and judges its vectors against the torch reference with the variant's own gate
(``exporter.quality.parity``), so a consumer row in the manifest (``variants[].parity.consumers``) carries the
same metrics as the variant's row. A consumer that would pool differently from the model's config (for
example fastembed or transformers.js, which pool the graph's first output themselves, given a model with
max pooling or a Dense layer) fails with a line that says so, without running.

The contract these consumers share (``exporter.builders.export_onnx``): inputs ``input_ids``, ``attention_mask``
and ``token_type_ids`` when the tokenizer emits them; outputs ``last_hidden_state`` first, then
``sentence_embedding``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.errors import UsageError
from exporter.kinds import ModelKind

if TYPE_CHECKING:
    from exporter.source.st_modules import ModelFacts, PoolingFacts

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"
EMBEDDER = ModelKind.SENTENCE_TRANSFORMER
BATCH = 32
TRANSFORMERS_JS_VERSION = "4.3.1"
FASTEMBED_VERSION = "0.9.1"
NODE_MODULES_ENV = "EXPORTER_NODE_MODULES"  # a folder whose node_modules/ has @huggingface/transformers
NODE_SCRIPT = Path(__file__).parent.parent / "data" / "transformers_js_embed.mjs"


class Unavailable(Exception):
    """The consumer is not installed here (a skipped row, with the command that installs it)."""


@dataclass(frozen=True)
class Target:
    """What a consumer loads: one variant of one artifact."""

    artifact: Path
    variant: dict
    facts: ModelFacts  # of the artifact
    threads: int = 1

    @property
    def backend(self) -> str:
        return self.variant["load"]["backend"]

    @property
    def file_name(self) -> str:
        return self.variant["load"].get("file_name") or ""

    @property
    def folder(self) -> Path:
        return self.facts.transformer_dir

    @property
    def pooling(self) -> PoolingFacts:
        """The model's Pooling module, for the consumers that pool themselves (``Consumer.pooling_problem``
        refused a chain without one before any of them runs)."""
        assert self.facts.pooling is not None, "pooling_problem lets a chain without Pooling through"
        return self.facts.pooling


@dataclass(frozen=True)
class Consumer:
    name: str
    backends: frozenset[str]
    kinds: frozenset[str]
    pools: dict[str, str] | None  # the model's pooling mode -> the consumer's own name; None: model's own
    runs: str  # "in-process" or "node subprocess"
    how: str  # one line: how a user loads the variant with it
    open: Callable[[Target], Callable[[list[str], int], np.ndarray]] | None  # load once; None: not in this process
    truncates_at_tokenizer_config: bool = False  # at tokenizer_config.json's model_max_length, not ST's limit
    run_once: Callable[[Target, list[str]], np.ndarray] | None = None  # (target, texts) -> vectors, when open is None

    def encode(self, target: Target, texts: list[str]) -> np.ndarray:  # load, then encode in batches of BATCH
        return self.open(target)(texts, BATCH) if self.open else self.run_once(target, texts)  # type: ignore[misc]

    def applies(self, variant: Mapping[str, Any], kind: str) -> bool:
        return variant["load"]["backend"] in self.backends and kind in self.kinds

    def pooling_problem(self, facts, truncate_dim: int | None = None) -> str | None:
        """Why this consumer would serve different vectors from the model's modules (None: it would not)."""
        if self.pools is None:
            return None
        if truncate_dim:
            return (
                f"{self.name} returns the pooled token output whole; this variant serves its first {truncate_dim} "
                f"dimensions (truncate_dim), so {self.name} would serve other vectors unless the client truncates"
            )
        modules = [m.kind.value for m in facts.modules]
        if facts.pooling is None or not facts.plain_pooling_chain:
            return (
                f"{self.name} pools the graph's token output itself; this model's modules ({' -> '.join(modules)}) "
                f"do more than pooling and normalising, so {self.name} would serve different vectors"
            )
        modes = facts.pooling.modes
        if len(modes) != 1 or modes[0] not in self.pools:
            return (
                f"{self.name} can only pool with {'/'.join(self.pools)}; this model pools with "
                f"{facts.pooling.name}, so {self.name} would serve different vectors"
            )
        if not facts.pooling.include_prompt and any(facts.prompts.values()):
            return f"{self.name} pools prompt tokens too; this model's Pooling excludes them (include_prompt=false)"
        return None

    def truncation_note(self, folder: Path, max_seq_length: int | None) -> str:
        """Why over-long texts differ, when this consumer truncates elsewhere than sentence-transformers."""
        path = folder / "tokenizer_config.json"
        if not self.truncates_at_tokenizer_config or not max_seq_length or not path.is_file():
            return ""
        limit = json.loads(path.read_text(encoding="utf-8")).get("model_max_length")
        if limit == max_seq_length:
            return ""
        return (
            f" {self.name} truncates at tokenizer_config.json's model_max_length ({limit}), the model at "
            f"max_seq_length {max_seq_length}: texts longer than that differ; `exporter package --layout "
            f"{self.name}` writes a folder that truncates where the model does."
        )


# --------------------------------------------------------------------------------------- the loaders
def _open_sentence_transformers(target: Target):
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        raise Unavailable("sentence-transformers is not installed (pip install '.[export]')")
    from exporter.runners.runner import variant_runner

    runner = variant_runner(target.artifact, target.variant, EMBEDDER, target.threads)
    return lambda texts, batch: np.asarray(runner.encode(texts, batch))


def _open_runtime(target: Target):
    from exporter import runtime

    enc = runtime.load_variant(target.artifact, target.variant["load"], threads=target.threads)
    return lambda texts, batch: enc.encode(texts, batch, prompt="")  # the probe texts carry their prompts already


def _open_optimum(target: Target):
    """optimum's ORTModel / OVModel for feature extraction: last_hidden_state, pooled per 1_Pooling."""
    from transformers import AutoTokenizer

    from exporter import runtime

    file_path = Path(target.file_name)
    if target.backend == "onnx":
        from optimum.onnxruntime import ORTModelForFeatureExtraction as cls

        kwargs: dict[str, Any] = {"provider": "CPUExecutionProvider"}
    else:
        from optimum.intel import OVModelForFeatureExtraction as cls

        kwargs = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}, "compile": True}
    model = cls.from_pretrained(
        target.folder, subfolder=file_path.parent.as_posix(), file_name=file_path.name, local_files_only=True, **kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(target.folder)

    limits = {"padding": True, "truncation": True, "max_length": target.facts.max_seq_length, "return_tensors": "np"}

    def one(batch) -> np.ndarray:
        hidden = np.asarray(model(**{k: v for k, v in batch.items() if k in model.input_names}).last_hidden_state)
        return runtime.pool(hidden, np.asarray(batch["attention_mask"]), target.facts)

    return lambda texts, size: np.concatenate(
        [one(tokenizer(texts[s : s + size], **limits)) for s in range(0, len(texts), size)]
    )


_FASTEMBED_POOLING = {"mean": "MEAN", "cls": "CLS", "lasttoken": "LAST_TOKEN"}


def _open_fastembed(target: Target):
    """fastembed's TextEmbedding on a custom model: the graph's first output, pooled by fastembed."""
    try:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType
    except ImportError as exc:
        raise Unavailable(f"fastembed is not installed (pip install fastembed=={FASTEMBED_VERSION})") from exc
    facts = target.facts
    # A name unique to this folder and file: fastembed's registry is process-wide and refuses duplicates.
    name = f"exporter-local/{abs(hash((str(target.folder), target.file_name)))}"
    if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(
            model=name,
            pooling=PoolingType[_FASTEMBED_POOLING[target.pooling.modes[0]]],
            normalization=facts.normalize,
            sources=ModelSource(hf=name),
            dim=int(target.pooling.dimension or 0),
            model_file=target.file_name,
        )
    model = TextEmbedding(name, specific_model_path=str(target.folder), threads=target.threads, lazy_load=False)
    return lambda texts, batch: np.asarray(list(model.embed(texts, batch_size=batch)), dtype=np.float32)


_TRANSFORMERS_JS_POOLING = {"mean": "mean", "cls": "cls"}  # its last_token takes the last (maybe padded) slot


def node_modules_dir() -> Path:
    """Where transformers.js is installed: $EXPORTER_NODE_MODULES, else ~/.cache/exporter/transformers-js."""
    env = os.environ.get(NODE_MODULES_ENV)
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "exporter" / "transformers-js"


def install_transformers_js_hint(folder: Path | None = None) -> str:
    folder = folder or node_modules_dir()
    return (
        f"npm install --ignore-scripts --prefix {folder} @huggingface/transformers@{TRANSFORMERS_JS_VERSION} "
        f"(or set {NODE_MODULES_ENV})"
    )


def _transformers_js(target: Target, texts: list[str]) -> np.ndarray:
    """transformers.js's feature-extraction pipeline in Node, on the variant's file under onnx/."""
    import shutil

    modules = node_modules_dir()
    node = shutil.which("node")
    if node is None or not (modules / "node_modules" / "@huggingface" / "transformers").is_dir():
        raise Unavailable(f"transformers.js is not installed: {install_transformers_js_hint(modules)}")
    file_path = Path(target.file_name)
    if file_path.parent.as_posix() != "onnx" or file_path.suffix != ".onnx":
        raise UsageError(f"transformers.js loads onnx/<name>.onnx files only, not {target.file_name}.", "")
    request = {
        "modules": str(modules),
        "name": "model",  # a link to the folder: transformers.js refuses some names (e.g. ".x.partial-1")
        "model_file_name": file_path.stem,
        "pooling": _TRANSFORMERS_JS_POOLING[target.pooling.modes[0]],
        "normalize": bool(target.facts.normalize),
        "batch": BATCH,
        "texts": texts,
    }
    with tempfile.TemporaryDirectory(prefix="exporter-tjs-") as tmp:
        (Path(tmp) / "model").symlink_to(target.folder.resolve(), target_is_directory=True)
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps({**request, "local_model_path": tmp}), encoding="utf-8")
        proc = subprocess.run([node, str(NODE_SCRIPT), str(req)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        errors = [line.strip() for line in lines if "Error" in line] or lines[-3:]
        raise RuntimeError(f"transformers.js failed: {' | '.join(errors[:2]) or f'exit code {proc.returncode}'}")
    return np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]), dtype=np.float32)


CONSUMERS: tuple[Consumer, ...] = (
    Consumer(
        "sentence-transformers",
        frozenset({"onnx", "openvino", "torch"}),
        frozenset(ModelKind),
        None,
        "in-process",
        'SentenceTransformer(DIR, backend="onnx"|"openvino", model_kwargs={"file_name": FILE})',
        _open_sentence_transformers,
    ),
    Consumer(
        "optimum",
        frozenset({"onnx", "openvino"}),
        frozenset({EMBEDDER}),
        dict.fromkeys(("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"), "user code"),
        "in-process",
        "ORTModelForFeatureExtraction / OVModelForFeatureExtraction.from_pretrained(DIR, subfolder, file_name); "
        "last_hidden_state pooled as 1_Pooling/config.json says",
        _open_optimum,
    ),
    Consumer(
        "fastembed",
        frozenset({"onnx"}),
        frozenset({EMBEDDER}),
        _FASTEMBED_POOLING,
        "in-process",
        "TextEmbedding.add_custom_model(model=NAME, pooling=..., normalization=..., model_file=FILE, ...); "
        "TextEmbedding(NAME, specific_model_path=DIR)",
        _open_fastembed,
        truncates_at_tokenizer_config=True,
    ),
    Consumer(
        "transformers.js",
        frozenset({"onnx"}),
        frozenset({EMBEDDER}),
        _TRANSFORMERS_JS_POOLING,
        "node subprocess",
        "env.localModelPath=PARENT; pipeline('feature-extraction', NAME, {dtype: 'fp32', model_file_name: STEM})",
        None,
        truncates_at_tokenizer_config=True,
        run_once=_transformers_js,
    ),
    Consumer(
        "runtime",
        frozenset({"onnx", "openvino"}),
        frozenset({EMBEDDER}),
        None,
        "in-process",
        'exporter.runtime.load(DIR, FILE, backend="onnx"|"openvino")',
        _open_runtime,
    ),
)
BY_NAME: dict[str, Consumer] = {c.name: c for c in CONSUMERS}


def parse_names(text: str | None) -> list[str]:
    """``all``, ``none`` or a comma-separated list of consumer names (UsageError for an unknown one)."""
    if not text or text.strip().lower() == "none":
        return []
    if text.strip().lower() == "all":
        return [c.name for c in CONSUMERS]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise UsageError(f"unknown consumer(s) {', '.join(unknown)}.", f"Known: all, {', '.join(BY_NAME)}.")
    return names


def check(consumer: Consumer, target: Target, texts: list[str], reference, probe, kind: str, threshold) -> dict:
    """One consumer row: its vectors against the reference, judged with the variant's gate."""
    from exporter import kinds
    from exporter.quality import parity

    row = {"consumer": consumer.name, "runs": consumer.runs}
    problem = consumer.pooling_problem(target.facts, target.variant["load"].get("truncate_dim"))
    if problem:
        return {**row, "status": FAILED, "message": problem + "."}
    try:
        out = consumer.encode(target, texts)
        metrics = kinds.get(kind).compare(reference, out, probe)
    except Unavailable as exc:
        return {**row, "status": SKIPPED, "message": f"{exc}."}
    except Exception as exc:  # noqa: BLE001 - a consumer that cannot load the variant is its own verdict
        return {**row, "status": ERROR, "message": f"{consumer.name} could not run it: {type(exc).__name__}: {exc}"}
    verdict = parity.judge(metrics, threshold)
    status = PASSED if verdict.passed else FAILED
    message = ""
    if not verdict.passed:
        message = "; ".join(f.rstrip(".") for f in verdict.failures) + "."
        message += consumer.truncation_note(target.folder, target.facts.max_seq_length)
    return {**row, "status": status, "message": message, **parity.to_dict(metrics, threshold, verdict)}


def rows_for(artifact: Path, variant: dict, kind: str, names: list, probe, reference, threshold, own: dict, by: str):
    """The consumer rows of one variant; ``by``'s (sentence-transformers with torch, the runtime on a host
    without) is ``own``, the variant's parity just measured through it; the others are run here."""
    others = [n for n in names if n != by]
    rows = check_variant(artifact, variant, kind, others, probe.inputs, reference, probe, threshold)
    if by in names:
        fields = {k: v for k, v in own.items() if k not in ("probe_sha256", "consumers", "serving_paths")}
        message = "; ".join(f.rstrip(".") for f in own["failures"]) + "." if own["failures"] else ""
        row = {"consumer": by, "runs": BY_NAME[by].runs, "status": PASSED if own["passed"] else FAILED}
        rows.insert(0, {**row, "message": message, **fields})
    return rows


def check_variant(artifact: Path, variant: dict, kind: str, names: list[str], texts, reference, probe, threshold):
    """Rows for every named consumer that applies to ``variant`` (in table order)."""
    from exporter.source import st_modules

    target = Target(Path(artifact), variant, st_modules.read(Path(artifact)), threads=os.cpu_count() or 1)
    return [
        check(c, target, texts, reference, probe, kind, threshold)
        for c in CONSUMERS
        if c.name in names and c.applies(variant, kind)
    ]


def with_rows(parity: dict, rows: list[dict]) -> dict:
    """``parity`` (a variant's manifest entry) with its consumer rows; a row that disagrees or cannot run
    fails the variant, with one ``consumer NAME: ...`` line per such row."""
    lines = [f"consumer {r['consumer']}: {r['message']}" for r in failed_rows(rows)]
    return {
        **parity,
        "consumers": rows,
        "passed": bool(parity["passed"]) and not lines,
        "failures": list(parity.get("failures", [])) + lines,
    }


def failed_rows(rows: list[dict] | None) -> list[dict]:
    """Rows that disagree or could not run (skipped rows are reported, not failed)."""
    return [r for r in rows or [] if r["status"] in (FAILED, ERROR)]
