"""What every variant builder receives and returns.

A builder is ``build(ctx: BuildContext, spec: VariantSpec) -> BuildResult``. It writes only inside
``ctx.stage_dir`` (the artifact being assembled; the source's config/tokenizer/module files are
already there), may read the outputs of the variant it derives from, and returns the files it wrote
plus the full build configuration that goes into the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.kinds import DEFAULT_KIND

if TYPE_CHECKING:
    from exporter.support import Rule


@dataclass(frozen=True)
class BuildSettings:
    """The export's own settings that builders read, from the plan (``exporter.pipeline.ExportPlan``). Frozen:
    one builder cannot change what the next one sees. What a catalogue entry builds is its typed options
    (``exporter.builders.options``), not these."""

    trust_remote_code: bool = False
    max_seq_length: int | None = None  # None: the model's own
    truncate_dim: int | None = None  # Matryoshka: keep the first N dimensions; None: all


@dataclass
class BuildContext:
    source_dir: Path  # the resolved snapshot: torch weights, config, tokenizer
    stage_dir: Path  # the artifact being assembled
    calibration_texts: Callable[[], list[str]] = lambda: []  # lazily loaded calibration set
    probe_texts: Callable[[], list[str]] = lambda: []  # the probe set (for sensitivity searches)
    settings: BuildSettings = field(default_factory=BuildSettings)
    kind: str = DEFAULT_KIND  # the model kind (exporter.kinds): which class loads it, which graph
    # exporter.quality.refcache's key of this export's reference (source, probe, settings, packages, CPU), set
    # once the reference is loaded: builders cache their own reference runs under it; None: nothing cached
    reference_key: str | None = None
    rule: Rule | None = None  # the model's exporter.support.Rule: its ONNX and OpenVINO routes (matched when None)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def memo(self, what: str, make: Callable[[], Any], /, **facts: Any) -> Any:
        """Compute ``what`` once per export for the same ``facts`` (the torch model, a loaded graph, a search)
        and share it. The key is derived from the export's fingerprint (``reference_key``, see
        ``exporter.fingerprint``) plus ``what`` and ``facts``, never written by hand."""
        from exporter.fingerprint import derive

        key = derive(self.reference_key, what, **facts)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def support_rule(self):
        """The model's support rule (``exporter.support``): the pipeline's match, else matched from the source's
        files as the pipeline would (a builder called on its own)."""
        if self.rule is None:
            from exporter import support

            self.rule = support.match(self.source_dir, self.kind).rule
        return self.rule

    def usable_calibration_texts(self) -> list[str]:
        """The calibration texts a builder calibrates on: the set without blank entries."""
        return [t for t in self.calibration_texts() if t and t.strip()]

    def reference_model(self):
        """The torch model at the pinned source (SentenceTransformer / CrossEncoder / SparseEncoder, by
        ``kind``), loaded once by ``exporter.runners.reference`` as verify and bench load it, with the
        ``max_seq_length`` and ``truncate_dim`` settings applied."""

        def load():
            from exporter.runners.reference import load_reference

            return load_reference(
                self.kind,
                self.source_dir,
                trust_remote_code=self.settings.trust_remote_code,
                max_seq_length=self.settings.max_seq_length,
                truncate_dim=self.settings.truncate_dim,
            )

        return self.memo("reference_model", load)


@dataclass
class BuildResult:
    files: list[Path]  # absolute paths inside the stage dir
    build: dict[str, Any]  # the full build configuration, recorded in the manifest
