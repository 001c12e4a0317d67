"""Torch reference outputs on the probe set, cached per (pin, probe set, toolchain, CPU).

The reference run is the same for every export of one pinned model with one probe set and toolchain, so
a re-export (another ``--variants``, ``--force``, another artifact folder) reuses it instead of running
torch again. The key is the export fingerprint's reference key (``exporter.fingerprint``: the source files,
toolchain, CPU capabilities, settings, probe set and batching parts, nothing of any variant). The int8
fidelity searches cache their torch run over the calibration texts under a key derived from it plus the
calibration set's sha256, so it too runs once per pin; the base ONNX graph's post-export check
(``builders.export_onnx.verify``) caches its torch side (the check texts, bare and with the model's first
prompts) the same way. Only numpy arrays are
cached (embedders and sparse encoders); a corrupt or unreadable entry is recomputed. Folder:
``$EXPORTER_CACHE_DIR``, else ``$XDG_CACHE_HOME/exporter``, else ``~/.cache/exporter``;
``reference/<key>.npy``, written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.fingerprint import derive
from exporter.fsutil import atomic_path


def cache_dir() -> Path:
    if os.environ.get("EXPORTER_CACHE_DIR"):
        return Path(os.environ["EXPORTER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "exporter"


def under_reference(reference_key: str | None, compute: Callable[[], Any], **facts: Any) -> Any:
    """``compute()`` of something else the export's torch reference gives (the calibration texts' embeddings,
    the post-export check's), cached under the export's reference key plus ``facts``; computed afresh when
    the export has no key (a builder called outside the pipeline)."""
    if not reference_key:
        return compute()
    return cached(derive(reference_key, "reference-run", **facts), compute)[0]


def cached(cache_key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """``(value, hit)``: the cached array for ``cache_key``, else ``compute()`` (stored when it is an array)."""
    import numpy as np

    path = cache_dir() / "reference" / f"{cache_key}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False), True
        except (OSError, ValueError):
            pass  # unreadable: recompute and overwrite
    value = compute()
    if isinstance(value, np.ndarray) and value.dtype != object:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
        except OSError:
            pass  # a read-only cache folder only costs the next run the reference time
    return value, False
