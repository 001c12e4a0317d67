"""Benchmark scripts are not run by the suite (they time things), so nothing else notices when a name
they import from ``exporter`` is renamed or moved: check every such import, wherever it sits in the file."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


def _exporter_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "exporter":
            for alias in node.names:
                yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "exporter":
                    yield node.lineno, alias.name, None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_exporter_name_a_benchmark_imports_exists(script):
    missing = []
    for line, module, name in _exporter_imports(script):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            missing.append(f"line {line}: module {module}")
            continue
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"line {line}: {module}.{name}")
    assert not missing, f"{script.name} imports names that do not exist: {missing}"
