"""``exporter plan``: the shipped recipe folder as a GitHub Actions matrix or plain JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from exporter.errors import UsageError
from exporter.fleet.matrix import GITHUB_MATRIX_LIMIT, matrix_entries, render
from exporter.fleet.recipe_loading import load_all
from tests.cli_runner import invoke

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHA = "0123456789abcdef0123456789abcdef01234567"
KEYS = {"name", "recipe", "model", "revision", "kind", "variants", "artifact", "publish", "remote_code"}


def test_plan_of_the_shipped_folder_parses_as_a_github_matrix():
    result = invoke("plan", str(RECIPES), "--format", "github-matrix")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert len(lines) == 1, "GITHUB_OUTPUT takes name=value on one line"
    matrix = json.loads(lines[0])
    assert set(matrix) == {"include"}
    entries = matrix["include"]
    assert len(entries) == len(list(RECIPES.glob("*.yaml"))) == 9
    for e in entries:
        assert set(e) == KEYS
        assert all(isinstance(v, str) for v in e.values())
        assert len(e["revision"]) == 40
        assert e["artifact"] == f"artifacts/{e['model'].replace('/', '--')}/{e['revision'][:12]}"
        assert Path(e["recipe"]).name == f"{e['name']}.yaml"
    assert len({e["name"] for e in entries}) == len(entries)


def test_plan_per_variant_gives_one_entry_per_model_and_variant():
    result = invoke("plan", str(RECIPES), "--format", "json", "--per-variant")
    assert result.code == 0, result.err
    entries = json.loads(result.out)
    recipes = load_all([RECIPES])
    assert len(entries) == sum(len(r.variants or ["onnx"]) for _, r in recipes)
    for e in entries:
        assert set(e) == KEYS | {"variant"}
        assert e["variants"] == e["variant"]
        assert e["name"].endswith(f"-{e['variant']}")


def test_plan_refuses_a_folder_with_a_bad_recipe(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"source": {"repo": "a/b", "revision": "main"}}))
    result = invoke("plan", str(tmp_path))
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("Error: ") and "bad.yaml: field source.revision" in result.err


def test_plan_refuses_an_unknown_format():
    result = invoke("plan", str(RECIPES), "--format", "yaml")
    assert result.code == 2 and "'yaml' is not one of" in result.err


def test_entries_carry_publish_target_and_requested_variants(tmp_path):
    data = {
        "source": {"repo": "acme/embedder", "revision": SHA},
        "variants": ["onnx"],
        "publish": "oci://registry.example.com:5000/models/embedder:v1",
    }
    (tmp_path / "embedder.yml").write_text(yaml.safe_dump(data))
    (entry,) = matrix_entries(load_all([tmp_path]), artifacts_root=Path("out"))
    assert entry["publish"] == data["publish"]
    assert entry["variants"] == "onnx"
    assert entry["kind"] == ""
    assert entry["artifact"] == f"out/acme--embedder/{SHA[:12]}"


def test_a_github_matrix_over_the_job_limit_is_refused():
    entries = [{"name": str(i)} for i in range(GITHUB_MATRIX_LIMIT + 1)]
    with pytest.raises(UsageError, match="at most 256"):
        render(entries, "github-matrix")
    assert len(json.loads(render(entries, "json"))) == GITHUB_MATRIX_LIMIT + 1
