"""exporter: pinned, verified CPU exports of sentence-transformers models."""

__version__ = "0.1.0"
