"""The command line: ``app`` (the typer app) and ``main`` (the console script, the one error boundary).

Layout: ``app.py`` registers the commands and owns the boundary; ``output.py`` prints; one module per
command group (``export``, ``quality``, ``recipes``, ``registry``).
"""

from exporter.cli.app import app, main

__all__ = ["app", "main"]
