"""The model source: parse ``MODEL``, resolve it to a pinned Hub snapshot (or a local folder), vet it.

Only a full 40-hex commit id pins a Hub model. Resolution goes through ``huggingface_hub.snapshot_download``
so HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN are honoured (read from the environment at call
time), and the snapshot folder returned is the one every later load (weights, tokenizer, config,
modules) reads from, so the same sha reaches all of them.

Exit codes: every refusal here is a SourceError (2, bad input). A cached file whose content does not
match the hash the Hub named it by is an IntegrityError (4). A corrupt file in the source itself (e.g. a
truncated safetensors) is a SourceError: the input is unusable, no recorded hash was contradicted. A Hub
that cannot be reached (network, server error) is a HubError (1).

The Hub side (pin, download, one-line Hub errors) is ``exporter.source.hub``; the folder rules (files used,
links, weights policy, remote code, blob and safetensors checks) are ``exporter.source.vetting``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import cast

from exporter import kinds
from exporter.errors import IntegrityError, SourceError
from exporter.fsutil import FileRecord, record_files
from exporter.manifest_types import KindName, SourceEntry
from exporter.source.hub import MODEL_FORMS, download, ref_to_commit, unpinned_error
from exporter.source.hubcache import COMMIT_RE, hub_cache_dir, hub_offline
from exporter.source.vetting import (
    TOKENIZER_FILES,
    check_blobs,
    check_weights,
    link_roots,
    listing,
    loaded_files,
    prefer_safetensors,
    read_json,
    refuse_link_out,
    remote_code_reason,
    select_candidates,
    weights_policy,
)

_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass(frozen=True)
class ModelRef:
    """What the user asked for: a Hub repo id with a requested revision, or a local folder."""

    repo_id: str | None = None
    revision: str | None = None
    local_path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    def __str__(self) -> str:
        if self.local_path is not None:
            return str(self.local_path)
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)


@dataclass
class ResolvedSource:
    """A vetted model source: the folder every load reads from and the files it is made of."""

    repo_id: str | None  # None for a local folder
    revision: str | None  # the commit sha used; None for a local folder
    requested_ref: str | None  # what the user asked for (branch, tag, sha); None for a local folder
    pinned: bool  # True only for a Hub repo at a full commit sha given by the user
    path: Path  # the snapshot (or local) folder to load from
    files: list[FileRecord] = field(default_factory=list)  # every source file used, with sha256
    kind: str = kinds.DEFAULT_KIND  # the kind the files state (exporter.kinds), else the default
    weights_format: str = "safetensors"  # or "pickle" (only with allow_pickle)
    local_path: Path | None = None
    skipped: list[str] = field(default_factory=list)  # files of the folder the model does not load: not copied

    def __str__(self) -> str:
        if self.repo_id:
            return f"{self.repo_id}@{self.revision}"
        return str(self.local_path)

    def to_dict(self) -> SourceEntry:
        """The manifest's ``source`` object."""
        return {
            "repo": self.repo_id,
            "revision": self.revision,
            "requested_ref": self.requested_ref,
            "pinned": self.pinned,
            "local_path": str(self.local_path) if self.local_path else None,
            "kind": cast(KindName, self.kind),
            "weights_format": self.weights_format,
            "files": [r.to_dict() for r in self.files],
            "skipped": list(self.skipped),
        }


# ----------------------------------------------------------------------------------------- parsing
def _malformed(model: str, why: str) -> SourceError:
    return SourceError(f"cannot read MODEL {model!r}: {why}.", f"Accepted forms: {MODEL_FORMS}.")


def parse_model_ref(model: str, revision: str | None = None) -> ModelRef:
    """Parse ``MODEL`` (plus ``--revision``) into a ModelRef; SourceError (exit 2) if malformed.

    An existing folder is a local source. Otherwise ``org/name[@rev]``; ``@rev`` and ``--revision`` may
    both be given only if they agree. Whether the revision pins is decided by ``resolve``.
    """
    if revision is not None:
        revision = revision.strip()
        if not revision or any(c.isspace() for c in revision):
            raise _malformed(model, f"--revision {revision!r} is empty or contains spaces")
    raw = model.strip()
    if not raw:
        raise _malformed(model, "it is empty")
    local = Path(raw).expanduser()
    if local.is_dir():
        if revision is not None:
            raise SourceError(
                f"--revision does not apply to the local folder {raw}.",
                "Drop --revision, or pass a Hub id (org/name) to resolve a commit.",
            )
        return ModelRef(local_path=local.resolve())
    if local.exists():
        raise _malformed(model, "it is a file, not a model folder")
    if raw.startswith((".", "/", "~")):
        raise SourceError(
            f"local model folder {raw} does not exist.", f"Check the path. Accepted forms: {MODEL_FORMS}."
        )
    name, at, rev = raw.partition("@")
    if at and (not rev or "@" in rev or any(c.isspace() for c in rev)):
        raise _malformed(model, "the part after @ must be a commit sha")
    if not _REPO_RE.match(name) or "--" in name or ".." in name:
        raise _malformed(model, "it is neither an existing folder nor a Hub id org/name")
    if at and revision is not None and rev != revision:
        raise _malformed(model, f"it names revision {rev} but --revision says {revision}")
    return ModelRef(repo_id=name, revision=rev or revision)


# -------------------------------------------------------------------------------------- resolving
def resolve(
    ref: ModelRef,
    *,
    allow_unpinned: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> ResolvedSource:
    """Resolve a ModelRef to a vetted source folder and the records of the files it uses.

    Hub: the revision must be a full 40-hex commit sha, unless ``allow_unpinned`` (then the branch, tag
    or short sha is resolved to its commit and both are recorded). Files come through
    ``snapshot_download(revision=sha)``; only what a sentence-transformers load needs is used.
    Refuses remote-code models unless ``trust_remote_code``, pickle-only weights unless
    ``allow_pickle``, models without a tokenizer, and corrupt safetensors files.
    """
    if ref.local_path is not None:
        return _resolve_local(ref.local_path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    assert ref.repo_id is not None
    requested = ref.revision or "main"
    cache = hub_cache_dir()
    offline = hub_offline()
    if COMMIT_RE.match(requested):
        sha, pinned = requested, True
    elif not allow_unpinned:
        raise unpinned_error(ref.repo_id, ref.revision)
    else:
        sha, pinned = ref_to_commit(ref.repo_id, requested, cache, offline), False
    label = f"{ref.repo_id}@{sha[:12]}"
    path = download(ref.repo_id, sha, cache, offline, label, allow_pickle)
    rels = listing(path, label)
    chosen, kind, weights = _vet(path, rels, label, trust_remote_code, allow_pickle)
    files = record_files(path, [path / r for r in chosen])
    check_blobs(path, files, label, ref.repo_id, sha)
    check_weights(path, chosen, label, hub=True)
    skipped = sorted(set(rels) - set(chosen))
    return ResolvedSource(ref.repo_id, sha, requested, pinned, path, files, kind, weights, skipped=skipped)


def _resolve_local(folder: Path, *, trust_remote_code: bool, allow_pickle: bool) -> ResolvedSource:
    if not folder.is_dir():
        raise SourceError(f"local model folder {folder} does not exist.", "Check the path.")
    label = str(folder)
    rels = listing(folder, label)
    chosen, kind, weights = _vet(folder, rels, label, trust_remote_code, allow_pickle)
    check_weights(folder, chosen, label, hub=False)
    files = record_files(folder, [folder / r for r in chosen])  # only what the model loads, hashed
    skipped = sorted(set(rels) - set(chosen))
    return ResolvedSource(None, None, None, False, folder, files, kind, weights, local_path=folder, skipped=skipped)


def resolve_recorded(folder: Path, records: list[dict], *, allow_pickle: bool = False) -> ResolvedSource:
    """A local source as a manifest records it, reading only the files listed (the folder is not walked).

    ``verify`` uses it, so a crafted ``source.local_path`` (``/``, a home folder) cannot make it read or
    load anything but those files: unsafe paths are an IntegrityError, links out of the folder a
    SourceError, and listed files that are absent an IntegrityError (exit 4), each in one line.
    """
    from exporter.ship.package import safe_relpath

    label = str(folder)
    if not folder.is_absolute() or not folder.is_dir():
        raise SourceError(
            f"the manifest's local source folder {label!r} is not an existing absolute folder.",
            "Restore the folder the artifact was exported from, or re-export it.",
        )
    rels = [safe_relpath(str(r.get("path", "")), "the manifest's source.files") for r in records]
    if not rels:
        raise IntegrityError(f"the manifest lists no files of its local source {label}.", "Re-export the artifact.")
    allowed = link_roots(folder)
    for rel in rels:
        refuse_link_out(folder, Path(rel), allowed, label)
    absent = [r for r in rels if not (folder / r).is_file()]
    if absent:
        raise IntegrityError(
            f"the reference source {label} lacks files the manifest lists ({', '.join(absent[:3])}"
            f"{', ...' if len(absent) > 3 else ''}).",
            "Restore the source the artifact was exported from.",
        )
    chosen, kind, weights = _vet(folder, rels, label, False, allow_pickle)
    check_weights(folder, chosen, label, hub=False)
    files = record_files(folder, [folder / r for r in rels])
    return ResolvedSource(None, None, None, False, folder, files, kind, weights, local_path=folder)


def _vet(root: Path, rels: list[str], label: str, trust_remote_code: bool, allow_pickle: bool):
    """Apply the source rules; return (files used, kind, weights_format)."""
    chosen = loaded_files(root, prefer_safetensors(select_candidates(rels)), label)
    if not trust_remote_code:
        reason = remote_code_reason(root, chosen, label)
        if reason:
            raise SourceError(
                f"{label} needs trust_remote_code: {reason}.",
                "Its code would run on this machine when loaded; if you have reviewed it, pass --trust-remote-code.",
            )
    if "modules.json" in chosen:
        from exporter import support

        support.check_modules(root)  # a word-vector model has no tokenizer file: refused by its module
    pickles = weights_policy(chosen, label, allow_pickle)
    if not any(PurePosixPath(r).name in TOKENIZER_FILES or r.endswith(".spm") for r in chosen):
        raise SourceError(
            f"{label} has no tokenizer (tokenizer.json, vocab.txt, vocab.json or a sentencepiece model).",
            "Use a complete sentence-transformers model (its tokenizer files are saved beside the config).",
        )
    kind = kinds.from_files(chosen) or kinds.DEFAULT_KIND  # a kind's marker files in the root (bge-m3's heads)
    if kind is kinds.DEFAULT_KIND and "config_sentence_transformers.json" in chosen:
        meta = read_json(root, "config_sentence_transformers.json", label)
        kind = kinds.from_st_config(meta) or kind
    return chosen, kind.value, "pickle" if pickles else "safetensors"
