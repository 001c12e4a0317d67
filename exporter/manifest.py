"""The artifact manifest: schema (versioned JSON Schema in exporter/schema/), read, write, check.

``manifest.json`` sits at the artifact root. Paths inside it are relative to that root, POSIX style.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Final

from exporter.errors import IntegrityError, UsageError
from exporter.fsutil import find_links, sha256_file, write_json_atomic
from exporter.manifest_types import Environment, Manifest, ModelFacts, SourceEntry, TextSetEntry, VariantEntry
from exporter.user_files import read_user_json

if TYPE_CHECKING:
    from exporter.variants import VariantSpec

SCHEMA_VERSION: Final = 1
SIGNATURE_DIR = "signatures"  # model-signing bundles beside the manifest (exporter sign)
MANIFEST_NAME = "manifest.json"
MANIFEST_MAX_BYTES = 16_000_000  # a manifest lists files and numbers; the default model's is ~60 kB
# Files that describe an artifact rather than belong to a model; never listed as model files.
META_FILES = frozenset({MANIFEST_NAME, "REPORT.md", "report.png"})
META_DIRS = ("signatures/",)  # `exporter sign` writes its bundles there


# The tool's record of the meta files it wrote into an artifact (REPORT.md, report.png, signature bundles):
# path -> sha256. ``--force`` may delete a meta file only when it is recorded here with the same hash.
WRITTEN_NAME = ".exporter-written.json"
_WRITTEN_MAX_BYTES = 1_000_000


def load_written(artifact: Path) -> dict[str, str]:
    """The tool's record of the meta files it wrote into ``artifact`` (empty when there is none or it is unreadable)."""
    try:
        data = read_user_json(Path(artifact) / WRITTEN_NAME, what="record", max_bytes=_WRITTEN_MAX_BYTES)
    except UsageError:
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def record_written(artifact: Path, paths: list[Path]) -> None:
    """Add ``paths`` (meta files just written into ``artifact``) with their sha256 to the tool's record."""
    artifact = Path(artifact)
    record = load_written(artifact)
    for p in paths:
        record[Path(p).relative_to(artifact).as_posix()] = sha256_file(p)
    write_json_atomic(artifact / WRITTEN_NAME, dict(sorted(record.items())))


def is_meta(rel: str) -> bool:
    """True for a path (relative, POSIX) that describes the artifact rather than belongs to the model."""
    return rel in META_FILES or rel.startswith(META_DIRS) or rel.startswith(".")


@cache
def schema() -> dict:
    text = resources.files("exporter").joinpath("schema/manifest.schema.json").read_text("utf-8")
    return json.loads(text)


def validate(manifest: object, where: str = "manifest") -> None:
    """Raise UsageError naming the first schema violation."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        loc = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise UsageError(
            f"{where} is not a valid exporter manifest: at {loc}: {err.message}.",
            "Re-create the artifact with `exporter export`.",
        )


def load(artifact: Path) -> dict:
    """Read and validate ``artifact/manifest.json``."""
    path = artifact / MANIFEST_NAME if artifact.is_dir() else artifact
    if not path.is_file():
        raise UsageError(
            f"no {MANIFEST_NAME} in {artifact}.",
            "Pass the artifact folder that `exporter export` printed.",
        )
    try:
        data = read_user_json(path, what="manifest", max_bytes=MANIFEST_MAX_BYTES)
    except UsageError as exc:
        raise UsageError(exc.message, exc.hint or "Re-create the artifact with `exporter export`.") from None
    validate(data, str(path))
    return data


def save(artifact: Path, manifest: Manifest | dict) -> Path:
    validate(manifest)
    path = artifact / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return path


def variant_ids(manifest: dict) -> list[str]:
    return [v["id"] for v in manifest["variants"]]


def get_variant(manifest: dict, variant_id: str) -> dict:
    for v in manifest["variants"]:
        if v["id"] == variant_id:
            return v
    raise UsageError(
        f"variant {variant_id!r} is not in this artifact.",
        f"Choose one of: {', '.join(variant_ids(manifest)) or '(none)'}.",
    )


def narrow(manifest: dict, variant_id: str) -> dict:
    """A copy of the manifest that describes only one variant (for packaging and publishing)."""
    out = copy.deepcopy(manifest)
    out["variants"] = [copy.deepcopy(get_variant(manifest, variant_id))]
    out["publishable"] = out["variants"][0]["status"] == "passed" and bool(manifest["source"].get("pinned"))
    if out.get("recommended") and out["recommended"].get("variant") != variant_id:
        out["recommended"] = None
    return out


@dataclass
class FileCheck:
    """What re-hashing an artifact against its manifest found."""

    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # absent, or reached through a link
    extra: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # "rel -> target": the tool never writes links

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.extra or self.links)

    def describe(self) -> str:
        parts = []
        labelled = (("links", self.links), ("changed", self.mismatched), ("missing", self.missing))
        for label, names in (*labelled, ("unlisted", self.extra)):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        return "; ".join(parts)


def listed_files(manifest: dict, variant_ids_: list[str] | None = None) -> dict[str, dict]:
    """path -> record for the shared files and the chosen variants' files."""
    out = {f["path"]: f for f in manifest["shared_files"]}
    for v in manifest["variants"]:
        if variant_ids_ is None or v["id"] in variant_ids_:
            out.update({f["path"]: f for f in v["files"]})
    return out


def check_files(artifact: Path, manifest: dict, variant_ids_: list[str] | None = None) -> FileCheck:
    """Re-hash every listed file; with ``variant_ids_`` None, also flag files on disk nobody lists.

    Any symbolic link inside the artifact fails the check, whatever the variants: a link (``onnx/ ->
    /elsewhere``) would make a reader hash, load or ship files from outside the artifact. Listed files
    reached through one count as missing and are not read.
    """
    result = FileCheck()
    links = find_links(artifact)
    result.links = [f"{rel} -> {os.readlink(artifact / rel)}" for rel in links]
    listed = listed_files(manifest, variant_ids_)
    for rel, rec in sorted(listed.items()):
        p = artifact / rel
        if any(rel == link or rel.startswith(link + "/") for link in links) or not p.is_file():
            result.missing.append(rel)
        elif p.stat().st_size != rec["size"] or sha256_file(p) != rec["sha256"]:
            result.mismatched.append(rel)
    if variant_ids_ is None:
        every = listed_files(manifest)
        for p in sorted(artifact.rglob("*")):
            rel = p.relative_to(artifact).as_posix()
            if p.is_file() and not p.is_symlink() and rel not in every and not is_meta(rel):
                result.extra.append(rel)
    return result


def require_intact(artifact: Path, manifest: dict, variant_ids_: list[str] | None = None) -> None:
    check = check_files(artifact, manifest, variant_ids_)
    if not check.ok:
        raise IntegrityError(
            f"{artifact} does not match its manifest ({check.describe()}).",
            "Re-export or re-pull the artifact; do not edit files inside it.",
        )


# ----------------------------------------------------------------------------------------- assembling
def variant_entry(spec: VariantSpec, truncate_dim: int | None = None) -> VariantEntry:
    """A variant's entry before it is built (``status`` "error" until its build and gate say otherwise):
    what it is and how a user loads it (``load``, with the Matryoshka ``truncate_dim`` if the export sets one)."""
    load = spec.load_kwargs()
    if truncate_dim:
        load["truncate_dim"] = truncate_dim
    return {
        "id": spec.id,
        "backend": spec.backend.value,
        "precision": spec.precision.value,
        "status": "error",
        "error": None,
        "files": [],
        "load": load,
        "build": {},
        "parity": None,
        "bench": None,
    }


def textset_entry(ts) -> TextSetEntry:
    """A probe or calibration text set as the manifest records it (``probes.TextSet``): a probe set also
    counts its texts per stratum and records the tokenizer-derived probes it holds (``generated``)."""
    entry: TextSetEntry = {"name": ts.name, "sha256": ts.sha256, "n": len(ts.texts), "source": ts.source}
    if getattr(ts, "strata", None) is not None:
        labels = ts.labels()
        entry["strata"] = {s: labels.count(s) for s in dict.fromkeys(labels)}
    if getattr(ts, "generated", None):
        entry["generated"] = ts.generated
    return entry


def build(
    *,
    source: SourceEntry,
    model: ModelFacts,
    environment: Environment,
    probe,
    calibration,
    shared: list,
    variants: list[VariantEntry],
    publishable: bool,
) -> Manifest:
    """A whole manifest of a fresh export: ``probe`` / ``calibration`` are text sets (calibration None when no
    variant used one), ``shared`` the shared files' ``FileRecord``s, ``variants`` the entries in catalogue
    order. Not benched yet: ``bench`` and ``recommended`` are None."""
    from datetime import UTC, datetime

    from exporter import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "model": model,
        "environment": environment,
        "probe": textset_entry(probe),
        "calibration": textset_entry(calibration) if calibration else None,
        "shared_files": [r.to_dict() for r in shared],
        "variants": variants,
        "publishable": publishable,
        "recommended": None,
        "bench": None,
    }
