"""exporter: pinned, verified CPU exports of sentence-transformers models.

The Python API (``exporter.api``): ``export``, ``verify``, ``bench``, ``package`` and ``load_manifest``, typed
and documented; see ``help(exporter.export)`` and ``docs/api.md``. They are imported on first use, so
``import exporter`` loads no model library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "bench", "export", "load_manifest", "package", "verify"]

if TYPE_CHECKING:
    from exporter.api import bench, export, load_manifest, package, verify


def __getattr__(name: str):
    if name in __all__:
        from exporter import api

        return getattr(api, name)
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")
