"""The README shows what really ran: every command in it parses with today's CLI, every ``$ command`` session
and its output come from the newest ``benchmarks/results/readme-*.txt`` (written by ``benchmarks/readme_run.py``,
which runs those commands on the real default model), and every measured figure in its prose is in a results
file the README links to."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
FENCE = re.compile(r"^```(\w*)\s*$")
ELISION = "..."
# Measured figures: speed ratios (2.63x), wall times (12.2 s, 71 s), and cosines / agreements with 3+ decimals
# that are not a threshold (a threshold is written after >=, <= or "threshold").
FIGURE = re.compile(r"\b\d+(?:\.\d+)?x\b|\b\d+(?:\.\d+)? ?s\b(?! of)|(?<![≥≤] )(?<!threshold )\b0\.\d{3,}\b")


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of each fenced block."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        m = FENCE.match(line)
        if m and lang is None:
            lang, lines = m.group(1), []
        elif line.startswith("```") and lang is not None:
            blocks.append((lang, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def _prose(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _sessions(blocks) -> list[list[str]]:
    """Blocks that show a terminal session (lines starting with ``$ ``)."""
    return [lines for _, lines in blocks if any(line.startswith("$ ") for line in lines)]


def _commands(blocks) -> list[str]:
    """Every ``exporter ...`` command line in any block, ``$ `` and trailing ``# comment`` removed."""
    out = []
    for _, lines in blocks:
        for line in lines:
            line = line.removeprefix("$ ").split("  #")[0].strip()
            if line.startswith("exporter "):
                out.append(line)
    return out


def newest_run() -> Path:
    runs = sorted(RESULTS.glob("readme-*.txt"))
    assert runs, "no benchmarks/results/readme-*.txt: run benchmarks/readme_run.py and copy its output into README"
    return runs[-1]


def parse(line: str) -> None:
    """Parse ``exporter SUB ARGS...`` with the real CLI's parser, without running it (raises on a bad flag)."""
    import typer.main

    from exporter.cli.app import app

    group = typer.main.get_command(app)
    name, *args = shlex.split(line)[1:]
    assert name in group.commands, f"no command {name!r}"
    sub = group.commands[name]
    with sub.make_context(name, args):
        pass


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_every_readme_command_parses_with_todays_cli(readme, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = _commands(_blocks(readme))
    assert len(commands) >= 10
    bad = []
    for line in commands:
        try:
            parse(line)
        except Exception as exc:  # the parser's own usage errors
            bad.append(f"{line}: {exc}")
    assert not bad, "README commands the CLI refuses: " + "; ".join(bad)


def test_every_readme_session_is_in_the_newest_run(readme):
    run = newest_run()
    recorded = {line.rstrip() for line in run.read_text(encoding="utf-8").splitlines()}
    missing = [
        line
        for lines in _sessions(_blocks(readme))
        for line in lines
        if line.strip() and line.strip() != ELISION and line.rstrip() not in recorded
    ]
    assert not missing, f"README session lines that {run.relative_to(ROOT)} does not hold: {missing[:5]}"
    assert run.name in readme, f"the README must link the run its sessions come from ({run.name})"


def test_every_measured_figure_in_the_prose_is_in_a_linked_results_file(readme):
    linked = [ROOT / m for m in re.findall(r"\((benchmarks/results/[^)#\s]+)\)", readme)]
    assert linked and all(p.is_file() for p in linked), f"README links no results file, or a missing one: {linked}"
    text = "\n".join(p.read_text(encoding="utf-8") for p in linked)
    figures = set(FIGURE.findall(_prose(readme)))
    missing = sorted(f for f in figures if f not in text and f.replace(" ", "") not in text)  # "52.6 s" or "52.6s"
    assert not missing, f"figures in README prose that no linked results file holds: {missing}"


def test_the_checks_catch_a_made_up_line_and_figure():
    blocks = _blocks("x\n```\n$ exporter export --variants best\nmade up\n...\n```\nok 2.63x and 0.99712 in 71 s\n")
    assert _sessions(blocks) == [["$ exporter export --variants best", "made up", "..."]]
    assert _commands(blocks) == ["exporter export --variants best"]
    assert sorted(FIGURE.findall("ok 2.63x and 0.99712 in 71 s, cosine ≥ 0.9999")) == ["0.99712", "2.63x", "71 s"]
    with pytest.raises(Exception, match="variantz"):
        parse("exporter export --variantz best")
