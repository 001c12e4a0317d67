"""``exporter run``: each model in its own process, a broken or crashing model does not stop the others,
the summary and exit code say what failed, and an interrupted run resumes without rebuilding."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from exporter.fleet import runs as fleet
from exporter.fleet.recipe_loading import load_all, load_recipe
from exporter.fleet.recipe_plan import recipe_to_plan
from tests.artifact_factory import make_artifact
from tests.cli_runner import invoke
from tests.hub_fixtures import TINY_SHA, seed_tiny

GOOD_REPO = "fleet-org/tiny-good"
MISSING_REPO = "fleet-org/not-in-the-cache"
MISSING_SHA = "ab" * 20


def _recipe(folder: Path, name: str, repo: str, sha: str, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"source": {"repo": repo, "revision": sha}, "variants": ["onnx"], **extra}))
    return path


# --------------------------------------------------------------------------------- summary, exit code
@pytest.mark.parametrize(
    ("codes", "expected"),
    [([0, 0], 0), ([0, 3], 3), ([3, 3], 3), ([0, 2], 2), ([2, 3], 1), ([0, -9], 1), ([1, 0], 1), ([], 0)],
)
def test_fleet_exit_code(codes, expected):
    runs = [fleet.ModelRun(Path(f"{i}.yaml"), str(i), "a/b@x", c, 0.0, Path("log")) for i, c in enumerate(codes)]
    assert fleet.fleet_exit_code(runs) == expected


def test_summary_rows_have_verdict_fidelity_speed_and_artifact(tmp_path):
    art = make_artifact(tmp_path / "art", variants=("onnx", "onnx-qint8"), failed=("onnx-qint8",))
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["variants"][0]["bench"] = {"ratio_to_torch": {"1": 1.5, "32": 2.25, "8": 2.0}}
    ok = fleet.ModelRun(Path("a.yaml"), "a", "acme/a@x", 3, 1.0, tmp_path / "a.log", art, manifest)
    broken = fleet.ModelRun(Path("b.yaml"), "b", "acme/b@y", 2, 1.0, tmp_path / "b.log", error="not in the cache")
    killed = fleet.ModelRun(Path("c.yaml"), "c", "acme/c@z", -9, 1.0, tmp_path / "c.log", error="killed")
    rows = fleet.summary_rows([ok, broken, killed])
    assert [(r["recipe"], r["variant"], r["verdict"]) for r in rows] == [
        ("a", "onnx", "passed"),
        ("a", "onnx-qint8", "failed"),
        ("b", None, "error"),
        ("c", None, "crashed"),
    ]
    assert rows[0]["speed_ratio"] == 2.25  # the largest batch size benchmarked
    assert rows[0]["cosine_min"] == 0.9999 and rows[1]["cosine_min"] == 0.91
    assert rows[1]["speed_ratio"] is None
    assert rows[0]["artifact"] == str(art) and rows[2]["artifact"] is None
    assert rows[2]["error"] == "not in the cache"


# ------------------------------------------------------------------------- isolation (fake workers)
_WORKER = """
import json, os, signal, sys
mode, artifact, result = sys.argv[1], sys.argv[2], sys.argv[3]
print("backend chatter on stdout, as NNCF and OpenVINO print")
if mode == "crash":
    sys.stderr.write("about to segfault\\n"); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "fail":
    sys.stderr.write("Error: tests-org/x@abc is not in the local Hub cache. Seed it first.\\n")
    sys.exit(2)
with open(result, "w") as fh:
    json.dump({"artifact": artifact}, fh)
"""


def test_a_crashed_worker_does_not_stop_the_others(tmp_path, monkeypatch):
    art = make_artifact(tmp_path / "art")
    paths = [_recipe(tmp_path / "r", n, f"acme/{n}", "c" * 40) for n in ("crash", "fail", "good")]

    def fake_worker(recipe, result, **_):
        return [sys.executable, "-c", _WORKER, recipe.stem, str(art), str(result)]

    monkeypatch.setattr(fleet, "worker_command", fake_worker)
    done = []
    runs = fleet.run_fleet(load_all(paths), jobs=2, artifacts_root=tmp_path / "out", on_done=done.append)
    assert [r.name for r in runs] == ["crash", "fail", "good"]  # recipe order, whatever finished first
    assert sorted(r.name for r in done) == ["crash", "fail", "good"]
    crash, fail, good = runs
    assert crash.exit_code < 0 and "signal 9" in crash.error and crash.manifest is None
    assert fail.exit_code == 2 and fail.error.startswith("tests-org/x@abc is not in the local Hub cache")
    assert good.ok and good.manifest["source"]["repo"] == "acme/tiny-embedder"
    assert "about to segfault" in (tmp_path / "out" / ".logs" / "crash.log").read_text()
    assert fleet.fleet_exit_code(runs) == 1


def test_worker_command_runs_the_recipe_in_a_fresh_interpreter(tmp_path):
    result = tmp_path / "r.result.json"
    cmd = fleet.worker_command(tmp_path / "r.yaml", artifacts_root=tmp_path, result=result, force=True, variants="onnx")
    assert cmd[:3] == [sys.executable, "-m", "exporter.cli.fleet_worker"]
    assert cmd[-1] == str(tmp_path / "r.yaml") and "--force" in cmd
    assert cmd[cmd.index("--result") + 1] == str(result)


# ---------------------------------------------------------------------- end to end on the tiny model
def test_run_over_two_recipes_finishes_the_good_one_and_exits_non_zero(tmp_path, tiny_model_dir):
    seed_tiny(tiny_model_dir, repo_id=GOOD_REPO, sha=TINY_SHA)
    recipes = tmp_path / "recipes"
    _recipe(recipes, "good", GOOD_REPO, TINY_SHA, thresholds={"fp32": {"cosine_min": 0.999}})
    _recipe(recipes, "broken", MISSING_REPO, MISSING_SHA)
    out = tmp_path / "artifacts"

    result = invoke("run", str(recipes), "--jobs", "2", "--json", "--artifacts", str(out))
    assert result.code == 2, result.err  # the broken model's error class (bad input)
    summary = json.loads(result.out)
    assert summary["exit_code"] == 2 and summary["passed"] is False
    rows = {r["recipe"]: r for r in summary["rows"]}
    assert rows["broken"]["verdict"] == "error"
    assert MISSING_REPO in rows["broken"]["error"]
    good = rows["good"]
    assert (good["variant"], good["verdict"]) == ("onnx", "passed")
    assert good["cosine_min"] > 0.999
    artifact = Path(good["artifact"])
    assert artifact == (out / GOOD_REPO.replace("/", "--") / TINY_SHA[:12]).resolve()
    assert json.loads((artifact / "manifest.json").read_text())["variants"][0]["status"] == "passed"

    # Re-running the good recipe rebuilds nothing: the finished variant's file is the same file.
    onnx = artifact / "onnx" / "model.onnx"
    before = onnx.stat()
    again = invoke("run", str(recipes / "good.yaml"), "--json", "--artifacts", str(out))
    assert again.code == 0, again.err
    after = onnx.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_run_refuses_a_bad_recipe_before_any_model_starts(tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    _recipe(recipes, "good", GOOD_REPO, TINY_SHA)
    _recipe(recipes, "bad", GOOD_REPO, TINY_SHA, thresholds={"int8": {"cosine": 0.9}})
    monkeypatch.setattr(fleet, "run_fleet", lambda *a, **k: pytest.fail("a model started"))
    result = invoke("run", str(recipes))
    assert result.code == 2
    assert result.err.startswith("Error: ") and "bad.yaml" in result.err and "cosine_min" in result.err


# ----------------------------------------------------------------------------------------------- resume
class Interrupt:
    armed = True


def build_copy(ctx, spec):
    """A derived test variant: a copy of the base ONNX graph (Ctrl-C while building it when armed)."""
    from exporter.builders.context import BuildResult

    if Interrupt.armed:
        raise KeyboardInterrupt
    dest = ctx.stage_dir / spec.file_name
    shutil.copyfile(ctx.stage_dir / "onnx" / "model.onnx", dest)
    return BuildResult(files=[dest], build={"copied_from": "onnx"})


@pytest.fixture
def copy_variant(monkeypatch):
    """Add a variant derived from onnx to the catalogue, and count how often the base is built."""
    from exporter import variants
    from exporter.builders import export_onnx

    spec = variants.VariantSpec(
        id="onnx-copy",
        backend=variants.Backend.ONNX,
        precision=variants.Precision.FP32,
        file_name="onnx/model_copy.onnx",
        summary="test only",
        builder="tests.fleet.test_run:build_copy",
        derives_from="onnx",
    )
    monkeypatch.setattr(variants, "CATALOGUE", (*variants.CATALOGUE, spec))
    monkeypatch.setattr(variants, "BY_ID", {**variants.BY_ID, spec.id: spec})
    calls = []
    real = export_onnx.build_base

    def counting(ctx, s):
        calls.append(s.id)
        return real(ctx, s)

    monkeypatch.setattr(export_onnx, "build_base", counting)
    Interrupt.armed = True
    return calls


def test_an_interrupted_run_resumes_without_rebuilding_finished_variants(tmp_path, tiny_model_dir, copy_variant):
    from exporter.pipeline import run_export

    seed_tiny(tiny_model_dir, repo_id=GOOD_REPO, sha=TINY_SHA)
    path = _recipe(tmp_path / "recipes", "tiny", GOOD_REPO, TINY_SHA, variants=["onnx", "onnx-copy"])
    plan = recipe_to_plan(load_recipe(path), path.parent, artifacts_root=tmp_path / "artifacts")

    with pytest.raises(KeyboardInterrupt):
        run_export(plan)
    artifact = tmp_path / "artifacts" / GOOD_REPO.replace("/", "--") / TINY_SHA[:12]
    first = json.loads((artifact / "manifest.json").read_text())
    assert [v["id"] for v in first["variants"]] == ["onnx"]  # the finished variant was committed
    assert not (artifact / "onnx" / "model_copy.onnx").exists()
    assert not [p for p in artifact.parent.iterdir() if ".partial-" in p.name]
    assert copy_variant == ["onnx"]
    base_file = (artifact / "onnx" / "model.onnx").read_bytes()

    Interrupt.armed = False
    outcome = run_export(plan)
    assert copy_variant == ["onnx"], "the finished base variant was rebuilt"
    assert [(v["id"], v["status"]) for v in outcome.manifest["variants"]] == [
        ("onnx", "passed"),
        ("onnx-copy", "passed"),
    ]
    assert outcome.manifest["variants"][0] == first["variants"][0]  # kept as it was, parity and all
    assert (artifact / "onnx" / "model.onnx").read_bytes() == base_file

    assert run_export(plan).skipped  # and a third run has nothing left to do
    assert copy_variant == ["onnx"]


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    # Workers inherit the environment: keep tokenizers quiet and single-threaded on the 2-core runner.
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


def test_run_prints_a_summary_table_and_exits_with_the_failure(tmp_path, monkeypatch):
    art = make_artifact(tmp_path / "art")
    recipes = tmp_path / "r"
    for name in ("crash", "good"):
        _recipe(recipes, name, f"acme/{name}", "c" * 40)
    monkeypatch.setattr(
        fleet,
        "worker_command",
        lambda recipe, result, **_: [sys.executable, "-c", _WORKER, recipe.stem, str(art), str(result)],
    )
    result = invoke("run", str(recipes), "--artifacts", str(tmp_path / "out"))
    assert result.code == 1
    for text in ("crash", "crashed", "good", "onnx-qint8", "passed", "0.999900"):
        assert text in result.out
    assert "signal 9" in result.err


# ------------------------------------------------------------------------------ the default, offline
@pytest.mark.slow
def test_the_default_recipe_runs_end_to_end_offline(tmp_path):
    from exporter.source.default_model import seed_default

    seed_default()
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "all-MiniLM-L6-v2.yaml"
    result = invoke("run", str(recipe), "--json", "--artifacts", str(tmp_path / "artifacts"))
    assert result.code == 0, result.err
    (row,) = json.loads(result.out)["rows"]
    assert (row["variant"], row["verdict"]) == ("onnx", "passed")
    assert row["cosine_min"] >= 0.9999
    assert Path(row["artifact"]).name == "1110a243fdf4"


def test_run_shows_every_variant_when_some_fail_the_gate(tmp_path, tiny_model_dir):
    """A model whose int8 variant fails the gate still shows its passing variants, row by row."""
    seed_tiny(tiny_model_dir, repo_id=GOOD_REPO, sha=TINY_SHA)
    recipes = tmp_path / "recipes"
    strict = {"int8": {"cosine_min": 0.99999999}}  # no int8 build of a random model reaches this
    _recipe(recipes, "mixed", GOOD_REPO, TINY_SHA, variants=["onnx", "onnx-quint8-avx2"], thresholds=strict)
    result = invoke("run", str(recipes), "--json", "--artifacts", str(tmp_path / "out"))
    assert result.code == 3, result.err
    rows = {r["variant"]: r["verdict"] for r in json.loads(result.out)["rows"]}
    assert rows == {"onnx": "passed", "onnx-quint8-avx2": "failed"}


@pytest.mark.slow
def test_a_best_recipe_is_benched_and_recommended_like_export_best(tmp_path, tiny_model_dir):
    """`variants: [best]` in a recipe runs what `export --variants best` runs: the candidates are benched and
    one is recommended in the manifest the fleet reads (its speed ratios in the summary rows)."""
    seed_tiny(tiny_model_dir, repo_id=GOOD_REPO, sha=TINY_SHA)
    recipes = tmp_path / "recipes"
    _recipe(recipes, "best", GOOD_REPO, TINY_SHA, variants=["best"])
    result = invoke("run", str(recipes), "--json", "--artifacts", str(tmp_path / "out"))
    assert result.code == 0, result.err
    manifest = json.loads(next((tmp_path / "out").rglob("manifest.json")).read_text())
    rec = manifest["recommended"]["variant"]
    assert rec in manifest["bench"]["variants"]
    assert {r["variant"]: r["speed_ratio"] for r in json.loads(result.out)["rows"]}[rec] > 0
