"""Recipe files: the shipped recipes validate, bad recipes are refused with file/field/allowed, and a
recipe and an ExportPlan map onto each other."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from exporter.cli import dry_run
from exporter.cli import recipes as cli_recipes
from exporter.errors import SourceError, UsageError
from exporter.fleet.recipe import Kind
from exporter.fleet.recipe_loading import find_recipes, load_all, load_recipe, parse_recipe
from exporter.fleet.recipe_plan import plan_to_recipe, recipe_to_plan, save_recipe
from exporter.pipeline import ExportPlan

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHA = "0123456789abcdef0123456789abcdef01234567"
# The pins the project ships (issue 6).
SHIPPED = {
    "sentence-transformers/all-MiniLM-L6-v2": "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
    "sentence-transformers/all-mpnet-base-v2": "e8c3b32edf5434bc2275fc9bab85f82640a19130",
    "BAAI/bge-small-en-v1.5": "5c38ec7c405ec4b44b94cc5a9bb96e735b38267a",
    "BAAI/bge-base-en-v1.5": "a5beb1e3e68b9ab74eb54cfd186867f64f240e1a",
    "intfloat/e5-small-v2": "dca8b1a9dae0d4575df2bf423a5edb485a431236",
    "intfloat/multilingual-e5-small": "fd1525a9fd15316a2d503bf26ab031a61d056e98",
    "thenlper/gte-small": "17e1f347d17fe144873b1201da91788898c639cd",
    "mixedbread-ai/mxbai-embed-large-v1": "990580e27d329c7408b3741ecff85876e128e203",
    "cross-encoder/ms-marco-MiniLM-L6-v2": "c5ee24cb16019beea0893ab7796b1df96625c6b8",
}
BGE_QUERY = "Represent this sentence for searching relevant passages: "


def _write(tmp_path: Path, data: dict | str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def _minimal(**extra) -> dict:
    return {"source": {"repo": "acme/embedder", "revision": SHA}, **extra}


# ------------------------------------------------------------------------------------ shipped recipes
@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert SHIPPED[recipe.source.repo] == recipe.source.revision
    assert recipe.kind is not None, "shipped recipes state their kind for reviewers"


def test_the_shipped_folder_is_exactly_the_issue_table():
    recipes = load_all([RECIPES])
    assert {r.source.repo: r.source.revision for _, r in recipes} == SHIPPED


def test_shipped_prompts_and_kinds():
    by_repo = {r.source.repo: r for _, r in load_all([RECIPES])}
    for repo in ("intfloat/e5-small-v2", "intfloat/multilingual-e5-small"):
        assert by_repo[repo].prompts.as_dict() == {"query": "query: ", "passage": "passage: "}
    for repo in ("BAAI/bge-small-en-v1.5", "BAAI/bge-base-en-v1.5", "mixedbread-ai/mxbai-embed-large-v1"):
        assert by_repo[repo].prompts.as_dict() == {"query": BGE_QUERY}
    assert by_repo["cross-encoder/ms-marco-MiniLM-L6-v2"].kind is Kind.CROSS_ENCODER
    for repo in ("sentence-transformers/all-MiniLM-L6-v2", "thenlper/gte-small", "cross-encoder/ms-marco-MiniLM-L6-v2"):
        assert by_repo[repo].prompts is None


def test_the_default_recipe_maps_to_the_default_plan():
    path = RECIPES / "all-MiniLM-L6-v2.yaml"
    plan = recipe_to_plan(load_recipe(path), path.parent)
    assert plan.model == "sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
    assert plan.variants == ["onnx"]
    assert plan.thresholds == {"fp32": {"cosine_min": 0.9999}}


# ------------------------------------------------------------------------------------ invalid recipes
BAD = [
    ("unknown top-level field", _minimal(model="x"), ["field model", "unknown field", "Allowed top-level fields"]),
    ("unknown source field", {"source": {"repo": "a/b", "revision": SHA, "ref": "main"}}, ["field source.ref"]),
    ("branch as revision", {"source": {"repo": "a/b", "revision": "main"}}, ["source.revision", "40-hex"]),
    ("short sha", {"source": {"repo": "a/b", "revision": SHA[:12]}}, ["source.revision", "40-hex"]),
    ("uppercase sha", {"source": {"repo": "a/b", "revision": SHA.upper()}}, ["source.revision", "40-hex"]),
    ("missing revision", {"source": {"repo": "a/b"}}, ["source.revision", "required"]),
    ("bad repo id", {"source": {"repo": "justaname", "revision": SHA}}, ["source.repo", "org/name"]),
    ("missing source", {"variants": ["onnx"]}, ["field source", "required"]),
    (
        "unknown variant id",
        _minimal(variants=["onnx", "onnx-O9"]),
        ["field variants", "onnx-O9", "allowed: onnx", "all or best"],
    ),
    ("variants as a string", _minimal(variants="onnx"), ["field variants", "list"]),
    ("empty variants", _minimal(variants=[]), ["field variants", "no variants"]),
    ("bad threshold metric", _minimal(thresholds={"int8": {"cosine": 0.99}}), ["thresholds", "'cosine'", "cosine_min"]),
    ("bad threshold scope", _minimal(thresholds={"int4": {"cosine_min": 0.9}}), ["thresholds", "'int4'", "fp32"]),
    ("threshold out of range", _minimal(thresholds={"fp32": {"cosine_min": 1.5}}), ["cosine_min=1.5", "-1 to 1"]),
    ("cosine gate off", _minimal(thresholds={"fp32": {"cosine_min": None}}), ["cannot be switched off"]),
    ("bad kind", _minimal(kind="reranker"), ["field kind", "'reranker'", "cross-encoder"]),
    ("prompts on a cross-encoder", _minimal(kind="cross-encoder", prompts={"query": "q: "}), ["prompts apply"]),
    ("unknown prompt name", _minimal(prompts={"document": "d: "}), ["prompts.document", "query, passage"]),
    ("max_seq_length zero", _minimal(max_seq_length=0), ["field max_seq_length", "greater than or equal to 1"]),
    ("publish not oci", _minimal(publish="docker://x/y"), ["field publish", "oci://HOST"]),
    ("absolute probe path", _minimal(probe="/etc/passwd"), ["field probe", "relative to the recipe file"]),
    ("unknown version", _minimal(version=2), ["field version"]),
    (
        "missing probe file",
        _minimal(probe="probes/missing.txt"),
        ["field probe", "probes/missing.txt", "does not exist"],
    ),
    ("not a mapping", "- just\n- a list\n", ["must be a mapping"]),
    ("not yaml", "source: {repo: [\n", ["not valid YAML"]),
]


@pytest.mark.parametrize(("data", "fragments"), [(d, f) for _, d, f in BAD], ids=[name for name, _, _ in BAD])
def test_invalid_recipes_are_refused_naming_file_and_field(tmp_path, data, fragments):
    path = _write(tmp_path, data)
    with pytest.raises(UsageError) as info:
        load_recipe(path)
    text = str(info.value)
    assert str(path) in text
    for fragment in fragments:
        assert fragment in text
    assert info.value.exit_code == 2
    assert "\n" not in text


def test_several_problems_are_counted(tmp_path):
    path = _write(tmp_path, {"source": {"repo": "a/b", "revision": "main"}, "colour": "blue"})
    with pytest.raises(UsageError, match=r"and 1 more problem"):
        load_recipe(path)


def test_a_folder_with_one_bad_recipe_is_refused_before_anything_runs(tmp_path):
    _write(tmp_path, _minimal(), "good.yaml")
    _write(tmp_path, _minimal(variants=["nope"]), "bad.yaml")
    with pytest.raises(UsageError, match="bad.yaml"):
        load_all([tmp_path])


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no recipe files"),
        (lambda d: d / "x.json" if (d / "x.json").write_text("{}") else None, "not a recipe file"),
    ],
    ids=["missing path", "empty folder", "not yaml"],
)
def test_bad_recipe_paths(tmp_path, setup, fragment):
    with pytest.raises(UsageError, match=fragment):
        load_all([setup(tmp_path)])


def test_two_recipes_with_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write(tmp_path / "a", _minimal(), "same.yaml")
    _write(tmp_path / "b", _minimal(), "same.yaml")
    with pytest.raises(UsageError, match="both named 'same'"):
        load_all([tmp_path / "a", tmp_path / "b"])


def test_a_file_given_twice_runs_once(tmp_path):
    path = _write(tmp_path, _minimal())
    assert find_recipes([path, tmp_path]) == [path.resolve()]


# -------------------------------------------------------------------------------------- plan mapping
def test_recipe_paths_are_relative_to_the_recipe_file(tmp_path):
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "p.txt").write_text("hello\nworld\n")
    (tmp_path / "probes" / "c.jsonl").write_text('{"text": "hi"}\n')
    path = _write(tmp_path, _minimal(probe="probes/p.txt", calibration="probes/c.jsonl"))
    plan = recipe_to_plan(load_recipe(path), path.parent)
    assert plan.probe == tmp_path / "probes" / "p.txt"
    assert plan.calibration == tmp_path / "probes" / "c.jsonl"


def test_recipe_to_plan_overrides_run_options(tmp_path):
    recipe = parse_recipe(_minimal(variants=["onnx"]))
    plan = recipe_to_plan(recipe, tmp_path, artifacts_root=tmp_path / "out", force=True)
    assert plan.artifacts_root == tmp_path / "out" and plan.force


_PLAN_FIELDS = {f.name for f in dataclasses.fields(ExportPlan)}


@pytest.mark.parametrize("name", ["prompts", "max_seq_length"])
def test_settings_the_pipeline_cannot_apply_are_refused_not_ignored(name):
    value = {"prompts": {"query": "query: "}, "max_seq_length": 128}[name]
    recipe = parse_recipe(_minimal(**{name: value}))
    if name in _PLAN_FIELDS:
        plan = recipe_to_plan(recipe, Path("."))
        assert getattr(plan, name) == value
    else:
        with pytest.raises(UsageError, match=f"sets {name}"):
            recipe_to_plan(recipe, Path("."))


def test_plan_to_recipe_round_trips(tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\n")
    data = _minimal(
        variants=["onnx"],
        thresholds={"fp32": {"cosine_min": 0.99999, "spearman_pairwise": None}, "onnx": {"cosine_min": 0.9999}},
        probe="p.txt",
        trust_remote_code=True,
    )
    recipe = load_recipe(_write(tmp_path, data))
    back = plan_to_recipe(recipe_to_plan(recipe, tmp_path), base_dir=tmp_path)
    assert parse_recipe(back) == recipe


def test_save_recipe_writes_a_loadable_file_atomically(tmp_path):
    (tmp_path / "probes").mkdir()
    probe = tmp_path / "probes" / "p.txt"
    probe.write_text("one\ntwo\n")
    plan = ExportPlan(
        model=f"acme/embedder@{SHA}", variants=["onnx"], probe=probe, thresholds={"*": {"cosine_min": 0.9}}
    )
    dest = tmp_path / "recipes" / "embedder.yaml"
    save_recipe(plan, dest)
    assert [p.name for p in dest.parent.iterdir()] == ["embedder.yaml"]  # no temp file left behind
    recipe = load_recipe(dest)
    assert recipe.source.revision == SHA
    assert recipe.probe == Path("../probes/p.txt")
    assert recipe_to_plan(recipe, dest.parent).probe.resolve() == probe.resolve()
    assert recipe.thresholds == {"*": {"cosine_min": 0.9}}


@pytest.mark.parametrize(
    ("plan", "fragment"),
    [
        (ExportPlan(model="acme/embedder@main", allow_unpinned=True), "not pinned to a commit"),
        (ExportPlan(model="acme/embedder"), "not pinned to a commit"),
        (ExportPlan(model=f"acme/embedder@{SHA}", variants=["nope"]), "field variants"),
    ],
    ids=["branch", "no revision", "bad variant"],
)
def test_save_recipe_refuses_what_a_recipe_cannot_say(tmp_path, plan, fragment):
    with pytest.raises(UsageError, match=fragment):
        save_recipe(plan, tmp_path / "r.yaml")
    assert not (tmp_path / "r.yaml").exists()


def test_save_recipe_refuses_a_local_folder(tmp_path, tiny_model_dir):
    with pytest.raises(UsageError, match="local folder"):
        save_recipe(ExportPlan(model=str(tiny_model_dir)), tmp_path / "r.yaml")


# --------------------------------------------------------------------------------- --dry-run / --save
def test_dry_run_shows_pin_variants_outputs_and_thresholds(tmp_path, capsys):
    plan = ExportPlan(
        model=f"acme/embedder@{SHA}", artifacts_root=tmp_path / "art", thresholds={"fp32": {"cosine_min": 0.5}}
    )
    stop = dry_run.handle_save_and_dry_run(plan, save_recipe=None, dry_run=True)
    out = capsys.readouterr().out
    assert stop is True
    assert SHA in out and "not in the local Hub cache" in out
    assert f"{(tmp_path / 'art').as_posix()}/acme--embedder/{SHA[:12]}/onnx/model.onnx" in out
    assert "cosine_min>=0.5" in out
    assert not (tmp_path / "art").exists()  # nothing was built


def test_dry_run_uses_the_local_cache_ref_for_an_unpinned_plan(capsys, tiny_model_dir):
    from tests.hub_fixtures import TINY_REPO, TINY_SHA, seed_tiny

    seed_tiny(tiny_model_dir)
    text = dry_run.dry_run_text(ExportPlan(model=f"{TINY_REPO}@main", allow_unpinned=True))
    assert TINY_SHA in text and "unpinned" in text
    text = dry_run.dry_run_text(ExportPlan(model=f"{TINY_REPO}@{TINY_SHA}"))
    assert "pinned, in the local Hub cache" in text


@pytest.mark.parametrize(
    ("plan", "error"),
    [
        (ExportPlan(model="acme/embedder@main"), SourceError),
        (ExportPlan(model=f"acme/embedder@{SHA}", variants=["nope"]), UsageError),
        (ExportPlan(model=f"acme/embedder@{SHA}", thresholds={"int4": {"cosine_min": 0.9}}), UsageError),
        (ExportPlan(model=f"acme/embedder@{SHA}", probe=Path("/nonexistent/p.txt")), UsageError),
    ],
    ids=["unpinned", "bad variant", "bad threshold scope", "missing probe"],
)
def test_dry_run_refuses_what_the_export_would_refuse(plan, error):
    with pytest.raises(error):
        dry_run.dry_run_text(plan)


def test_save_recipe_with_an_unpinned_plan_records_the_commit_it_resolves_to(tmp_path, tiny_model_dir):
    from tests.hub_fixtures import TINY_REPO, TINY_SHA, seed_tiny

    seed_tiny(tiny_model_dir)
    plan = ExportPlan(model=f"{TINY_REPO}@main", allow_unpinned=True)
    assert dry_run.handle_save_and_dry_run(plan, save_recipe=tmp_path / "t.yaml", dry_run=False) is False
    assert load_recipe(tmp_path / "t.yaml").source.revision == TINY_SHA


def test_a_bf16_recipe_validates_and_plans_on_a_host_without_bf16(tmp_path, monkeypatch):
    """The planner's CPU is not the builder's: a recipe naming openvino-bf16 loads, passes `run`'s up-front
    check and is planned on a host without bf16 units; the export itself (on the builder) checks the CPU."""
    from exporter import variants
    from exporter.fleet.matrix import matrix_entries
    from exporter.hostcaps import Host
    from exporter.pipeline import ExportPlan, run_export

    monkeypatch.setattr(variants, "this_host", lambda: Host.of("avx2", "avx512f"))  # a CPU without bf16
    path = _write(tmp_path, _minimal(kind="sentence-transformer", variants=["openvino-bf16"]))
    recipe = load_recipe(path)
    cli_recipes._plan_for(path, recipe, variants=None, artifacts=tmp_path, force=False)
    entries = matrix_entries([(path, recipe)], per_variant=True)
    assert [e["variant"] for e in entries] == ["openvino", "openvino-bf16"]
    with pytest.raises(UsageError, match="openvino-bf16 needs avx512_bf16 or amx_bf16"):
        run_export(ExportPlan(model=str(tmp_path / "nowhere"), variants=["openvino-bf16"]))
