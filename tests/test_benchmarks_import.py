"""Benchmark scripts are not run by the suite (they time things), so nothing else notices when a name
they import from ``exporter`` (or from ``benchmarks/_common.py``) is renamed or moved: check every such import,
wherever it sits in the file, and that every script takes its timer and machine line from ``_common``."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "_common.py")


def _common():
    spec = importlib.util.spec_from_file_location("_common", BENCHMARKS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_common", module)  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


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


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_uses_the_shared_helpers(script):
    """One timer and one machine description (``_common``): a script neither times by hand nor describes the CPU
    its own way, and every name it takes from ``_common`` exists."""
    common = _common()
    tree = ast.parse(script.read_text("utf-8"), str(script))
    taken = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "_common" for a in n.names]
    assert "machine" in taken, f"{script.name} does not print the machine line (_common.machine)"
    assert all(hasattr(common, name) for name in taken), f"{script.name}: {taken}"
    text = script.read_text("utf-8")
    assert "perf_counter" not in text and "cpu_info" not in text and "sys.path" not in text, script.name
