"""One fingerprint decides reuse: what a variant's build and verdict depend on, hashed into one digest.

A fingerprint is a set of named parts, each the sha256 of one input's canonical JSON (sorted keys, no
spaces), and its digest is the sha256 of the parts. The parts (``PARTS``):

- ``source``: the source files' paths and sha256;
- ``toolchain``: Python, the exporter's version and every toolchain package's (``environment.TOOLCHAIN``);
- ``cpu``: the CPU's capabilities (``hostcaps``: architecture and the flags that pick kernels);
- ``settings``: the model kind, ``max_seq_length``, ``truncate_dim``, prompts and ``trust_remote_code``;
- ``probe``: the probe set's sha256 (prompts and tokenizer-derived probes included);
- ``batching``: the batch size and batching the reference and every variant run at, and the batch sizes
  batch invariance is measured at;
- ``variant``: the variant's catalogue spec and typed build options, those of every variant it derives
  from, and the calibration set's sha256 when one of them calibrates;
- ``judging``: the thresholds, the stratum rank bound (``judging.RANK_CONFIDENCE_Z``) and the consumers the
  variant's verdict is judged by.

Everything that reuses work derives its key from one fingerprint, so no two schemes can drift apart:

- the reference cache (``refcache``) keys the torch reference's outputs by ``reference_key``: the digest
  of the parts before ``variant`` (a reference does not depend on the variant);
- what a builder computes once per export (``BuildContext.memo``) and the cached torch runs of the
  builders (``refcache.under_reference``) are ``derive``d from the reference key plus named facts;
- two variants of one export with the same file bytes share one gate verdict when ``twin_key`` agrees;
- a re-run keeps a variant when the digest its manifest entry records (``fingerprint``) is the one
  computed now, and ``exporter run`` skips a variant whose digest the target registry already holds
  (the ``dev.exporter.fingerprint`` annotation of the variant's default tag).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PARTS = ("source", "toolchain", "cpu", "settings", "probe", "batching", "variant", "judging")
REFERENCE_PARTS = PARTS[:6]  # what the torch reference's numbers depend on
INPUT_PARTS = PARTS[:7]  # what a variant's files depend on (its verdict adds ``judging``)

# Build options whose builder calibrates on the calibration texts (exporter.builders.options class names).
CALIBRATING_OPTIONS = ("StaticQdqOptions", "NncfStaticOptions", "OnnxFidelityOptions", "OvFidelityOptions")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def canonical(value: Any) -> bytes:
    """``value`` as canonical JSON bytes: sorted keys, no spaces, dataclasses as dicts, sets sorted."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain).encode()


def digest_of(value: Any) -> str:
    """The sha256 (hex) of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical(value)).hexdigest()


def derive(base: str | None, what: str, /, **facts: Any) -> str:
    """A key for ``what`` computed from ``facts`` under the fingerprint digest ``base`` (None: no base)."""
    return digest_of({"base": base, "what": what, "facts": facts})


@dataclass(frozen=True)
class Fingerprint:
    """Named parts (name -> sha256 of that input) and their digest (see the module doc)."""

    parts: Mapping[str, str]

    @classmethod
    def of(cls, **values: Any) -> Fingerprint:
        """Hash each named input; names must be ``PARTS`` members."""
        unknown = set(values) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown fingerprint part(s): {', '.join(sorted(unknown))}")
        return cls({name: digest_of(values[name]) for name in PARTS if name in values})

    @property
    def digest(self) -> str:
        return digest_of(dict(self.parts))

    def only(self, names: Iterable[str]) -> Fingerprint:
        return Fingerprint({k: v for k, v in self.parts.items() if k in names})

    def add(self, **values: Any) -> Fingerprint:
        """This fingerprint with more parts."""
        return Fingerprint({**self.parts, **Fingerprint.of(**values).parts})

    @property
    def reference_key(self) -> str:
        return self.only(REFERENCE_PARTS).digest

    def to_dict(self) -> dict:
        """As the manifest records it per variant."""
        return {"digest": self.digest, "parts": dict(self.parts)}

    def changed(self, recorded: Mapping | None) -> list[str]:
        """The parts that differ from a recorded ``to_dict`` (every part when none is recorded)."""
        parts = (recorded or {}).get("parts") or {}
        return [name for name in self.parts if parts.get(name) != self.parts[name]]

    def matches(self, recorded: Mapping | None, names: Iterable[str] | None = None) -> bool:
        """Whether ``recorded`` (a ``to_dict``) has the same digest, or the same ``names`` parts."""
        if not recorded:
            return False
        if names is None:
            return recorded.get("digest") == self.digest and not self.changed(recorded)
        return not self.only(names).changed(recorded)


def export_inputs(
    *,
    source_files: list[dict],
    environment: Mapping[str, Any],
    settings: dict,
    probe_sha256: str,
    batching: dict,
    host=None,
) -> Fingerprint:
    """The parts every variant of one export shares (``REFERENCE_PARTS``); ``host``: this machine's
    ``hostcaps.Host`` unless given."""
    from exporter import __version__
    from exporter.hostcaps import this_host

    host = host or this_host()
    return Fingerprint.of(
        source=sorted((f["path"], f["sha256"]) for f in source_files),
        toolchain={
            "python": environment.get("python"),
            "implementation": environment.get("implementation"),
            "exporter": __version__,
            "packages": environment["packages"],
        },
        cpu={"arch": host.arch, "flags": sorted(host.flags)},
        settings=settings,
        probe=probe_sha256,
        batching=batching,
    )


def variant_part(spec, calibration_sha256: str | None) -> dict:
    """The ``variant`` part's value: the spec, its options, those of what it derives from, and the calibration
    set when one of them calibrates."""
    from exporter import variants

    chain, calibrates, current = [], False, spec
    while current is not None:
        options = current.options
        calibrates = calibrates or type(options).__name__ in CALIBRATING_OPTIONS
        chain.append(
            {
                "id": current.id,
                "backend": current.backend.value,
                "precision": current.precision.value,
                "file_name": current.file_name,
                "builder": current.builder,
                "compute": current.compute,
                "model_kwargs": current.model_kwargs,
                "loader": current.loader,
                "options_type": type(options).__name__ if options is not None else None,
                "options": options.to_dict() if options is not None else None,
            }
        )
        current = variants.BY_ID[current.derives_from] if current.derives_from else None
    return {"chain": chain, "calibration": calibration_sha256 if calibrates else None}


def for_variant(base: Fingerprint, spec, *, calibration_sha256: str | None, threshold, consumers) -> Fingerprint:
    """``base`` (an export's) plus the variant's spec and options and how its verdict is judged."""
    from exporter.quality.judging import RANK_CONFIDENCE_Z

    judged = threshold.to_dict() if hasattr(threshold, "to_dict") else threshold
    return base.add(
        variant=variant_part(spec, calibration_sha256),
        judging={"threshold": judged, "consumers": sorted(consumers or ()), "rank_confidence_z": RANK_CONFIDENCE_Z},
    )


def twin_key(recorded: Mapping, variant: Mapping[str, Any]) -> str:
    """Two variants of one export share one gate verdict when this agrees: the export's inputs and the
    variant's judging (from its ``fingerprint`` record), its file bytes, how it is loaded but for the file's
    name, and its precision (which picks its batching)."""
    parts = recorded["parts"]
    return derive(
        Fingerprint({k: parts[k] for k in (*REFERENCE_PARTS, "judging")}).digest,
        "parity-check",
        files=sorted(f["sha256"] for f in variant["files"]),
        load={k: v for k, v in variant["load"].items() if k != "file_name"},
        precision=variant["precision"],
    )


@dataclass(frozen=True)
class ExportPrints:
    """One export's fingerprint (``base``) and each variant it asks for (``asked``: id -> Fingerprint)."""

    base: Fingerprint
    asked: Mapping[str, Fingerprint]
    calibration_sha256: str

    @classmethod
    def of(
        cls, job, source_entry: Mapping[str, Any], env: Mapping[str, Any], *, batching: dict, calibration_sha256: str
    ) -> ExportPrints:
        """From ``pipeline``'s decided export (plan, kind, probe set, specs, thresholds)."""
        plan = job.plan
        base = export_inputs(
            source_files=source_entry["files"],
            environment=env,
            settings={
                "kind": job.kind,
                "max_seq_length": plan.max_seq_length,
                "truncate_dim": plan.truncate_dim,
                "prompts": plan.prompts,
                "trust_remote_code": plan.trust_remote_code,
            },
            probe_sha256=job.probe_set.sha256,
            batching=batching,
        )
        asked = {
            s.id: for_variant(
                base, s, calibration_sha256=calibration_sha256, threshold=job.thresholds[s.id], consumers=plan.consumers
            )
            for s in job.specs
        }
        return cls(base, asked, calibration_sha256)

    def inputs_of(self, variant_id: str) -> Fingerprint | None:
        """The input parts of a catalogue variant the export does not ask for (None: no such variant now)."""
        from exporter import variants

        spec = variants.BY_ID.get(variant_id)
        return None if spec is None else self.base.add(variant=variant_part(spec, self.calibration_sha256))
