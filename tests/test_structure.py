"""The package's shape, held by tests: no import cycles (imports inside functions count too), no module over
400 lines, no function over 80 lines, and ``exporter --help`` (and every command's ``--help``) without the model
libraries. Each test names every offender, so a failure says what to split or move."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "exporter"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
HEAVY = (
    "torch",
    "transformers",
    "sentence_transformers",
    "onnxruntime",
    "openvino",
    "optimum",
    "onnx",
    "nncf",
    "numpy",
)


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``pkg/__init__.py`` is ``pkg``)."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its file (top level or inside a function)."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in mods:
                        graph[mod].add(f"{base}.{alias.name}")
                    elif base in mods and base != mod:
                        graph[mod].add(base)
            elif isinstance(node, ast.Import):
                graph[mod].update(a.name for a in node.names if a.name in mods)
    for mod, targets in graph.items():
        targets.discard(mod)
        targets.discard(root.name)  # the package's own __init__ (its version) is imported by everything
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (strongly connected modules): " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in _modules().values()
        if (n := len(p.read_text("utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_80_lines():
    long = {}
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # from ``def`` to the last line of the body
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


HELP_PROBE = """
import contextlib, importlib, io, json, sys, tomllib
entry = tomllib.load(open(sys.argv[1], "rb"))["project"]["scripts"]["exporter"]
module, _, function = entry.partition(":")
main = getattr(importlib.import_module(module), function)
heavy = tuple(sys.argv[2].split(","))


def run(args):
    sys.argv = ["exporter", *args]
    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out):
            main()
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue()


seen = set()


def newly_imported():
    new = [m for m in heavy if m in sys.modules and m not in seen]
    seen.update(new)
    return new


code, text = run(["--help"])
report = {"--help": {"code": code, "heavy": newly_imported()}}
commands, section = [], False  # the names under "Commands:" (click's plain help, or rich's boxed panel)
for line in text.splitlines():
    words = line.replace("│", " ").replace("╭", " ").split()
    if words and words[0].strip("─").rstrip(":") == "Commands":
        section = True
    elif section and not words:
        section = False
    elif section and words and not words[0].startswith("─"):
        commands.append(words[0])
for name in commands:
    code, _ = run([name, "--help"])
    report[name + " --help"] = {"code": code, "heavy": newly_imported()}
print(json.dumps(report))
"""


def test_help_imports_no_model_library():
    """``exporter --help`` and each command's ``--help``, through the console entry point pyproject names, in a
    fresh process: none imports torch, transformers, sentence-transformers, onnxruntime, openvino, optimum,
    onnx, nncf or numpy (heavy imports belong inside the functions that need them)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HELP_PROBE), str(REPO / "pyproject.toml"), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) > 10, f"the command list was not read from --help: {sorted(report)}"
    assert all(r["code"] == 0 for r in report.values()), report
    heavy = {call: r["heavy"] for call, r in report.items() if r["heavy"]}
    assert not heavy, f"model libraries imported by --help (by the first call that imports them): {heavy}"


def test_tests_mirror_the_package():
    """A test module sits in ``tests/`` (a top-level module's tests), in ``tests/e2e/`` (whole-pipeline runs), or
    in ``tests/<name>/`` where ``exporter/<name>/`` is a sub-package: one feature's tests are found in one place."""
    packages = {p.name for p in (REPO / "exporter").iterdir() if (p / "__init__.py").is_file()}
    misplaced = [
        str(path.relative_to(REPO))
        for path in (REPO / "tests").rglob("test_*.py")
        if path.parent != REPO / "tests" and path.parent.name not in packages | {"e2e"}
    ]
    assert not misplaced, f"test modules outside the package's mirror: {misplaced}"


def test_every_reader_of_the_real_default_export_shares_its_worker():
    """conftest.DEFAULT_BEST_MODULES names every test module that takes ``default_best_export``: under
    pytest-xdist they share one worker, so none waits on the other worker's build of it."""
    from tests.conftest import DEFAULT_BEST_MODULES

    readers = {
        str(path.relative_to(REPO))
        for path in (REPO / "tests").rglob("test_*.py")
        if re.search(r"^def test_\w+\([^)]*\bdefault_best_export\b", path.read_text(encoding="utf-8"), re.M)
    }
    assert readers == set(DEFAULT_BEST_MODULES)
