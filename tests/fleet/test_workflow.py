"""The fleet workflow in ``.github/workflows/`` is a real file: actionlint accepts it, its matrix comes from
``exporter plan``, and every ``matrix.KEY`` it reads is a key that ``plan`` emits."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli_runner import invoke

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "export-models.yml"


def _actionlint() -> str | None:
    here = Path(sys.executable).parent / "actionlint"
    return str(here) if here.exists() else shutil.which("actionlint")


def test_actionlint_accepts_the_workflow():
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (the [test] extra installs it)")
    proc = subprocess.run([exe, "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    """The lint is live: a reference to an undefined step output fails it."""
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (the [test] extra installs it)")
    broken = tmp_path / "w.yml"
    broken.write_text(WORKFLOW.read_text().replace("steps.plan.outputs.matrix", "steps.nosuchstep.outputs.matrix"))
    proc = subprocess.run([exe, "-no-color", str(broken)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "nosuchstep" in proc.stdout


def test_the_workflow_matrix_is_what_plan_prints():
    doc = yaml.safe_load(WORKFLOW.read_text())
    plan_steps = [s.get("run", "") for s in doc["jobs"]["plan"]["steps"]]
    assert any("exporter plan recipes --format github-matrix" in run for run in plan_steps)
    result = invoke("plan", str(REPO / "recipes"), "--format", "github-matrix")
    assert result.code == 0, result.err
    keys = set(json.loads(result.out)["include"][0])
    used = set(re.findall(r"matrix\.([a-z_]+)", WORKFLOW.read_text()))
    assert used and used <= keys, f"the workflow reads matrix keys plan does not emit: {sorted(used - keys)}"
