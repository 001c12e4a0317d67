"""CLI conventions every command follows: ``-h`` beside ``--help``, readable metavars, ``--quiet``, and
list-variants naming the number format a variant computes in."""

from __future__ import annotations

import json

import pytest

from exporter.cli.app import COMMANDS
from tests import hub_fixtures as hf
from tests.cli_runner import invoke


@pytest.mark.parametrize("args", [(), *((name,) for name, _ in COMMANDS)])
def test_dash_h_is_help_everywhere_and_metavars_are_readable(args):
    short, long = invoke(*args, "-h"), invoke(*args, "--help")
    assert short.code == 0 and short.out == long.out and short.out.startswith("Usage: exporter")
    assert "<list[" not in short.out and "<str>" not in short.out.split("Options:")[-1], short.out


def test_list_variants_names_bf16_as_bf16():
    rows = {r["id"]: r for r in json.loads(invoke("list-variants", "--json").out)}
    assert rows["openvino-bf16"]["compute"] == "bf16" and rows["openvino-bf16"]["precision"] == "fp16"
    assert rows["onnx"]["compute"] == "fp32"
    line = next(x for x in invoke("list-variants").out.splitlines() if x.startswith("openvino-bf16 "))
    assert line.split()[2] == "bf16", line


def test_quiet_keeps_the_result_and_drops_progress(tiny_model_dir, tmp_path):
    hf.seed_tiny(tiny_model_dir)
    out = tmp_path / "art"
    res = invoke("-q", "export", f"{hf.TINY_REPO}@{hf.TINY_SHA}", "--out", str(out), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["artifact"] == str(out)
    assert "✓" not in res.err and "..." not in res.err, res.err


def test_max_seq_length_and_prompt_flags_are_the_recipe_keys(tiny_model_dir, tmp_path):
    import yaml

    hf.seed_tiny(tiny_model_dir)
    recipe = tmp_path / "r.yaml"
    args = ["export", f"{hf.TINY_REPO}@{hf.TINY_SHA}", "--max-seq-length", "64", "--prompt", "query=query: "]
    res = invoke(*args, "--prompt", "passage=passage: ", "--save-recipe", str(recipe), "--dry-run")
    assert res.code == 0, res.err
    saved = yaml.safe_load(recipe.read_text())
    assert saved["max_seq_length"] == 64 and saved["prompts"] == {"query": "query: ", "passage": "passage: "}


@pytest.mark.parametrize("flag", ["title=x", "query", "query=a --prompt query=b"])
def test_a_bad_prompt_flag_is_one_line_and_exit_2(flag):
    res = invoke("export", "--prompt", *flag.replace(" --prompt ", "\0--prompt\0").split("\0"), "--dry-run")
    assert res.code == 2 and res.err.startswith("Error: --prompt") and len(res.err.strip().splitlines()) == 1, res.err


def test_the_command_reference_is_generated_from_the_commands():
    from pathlib import Path

    from exporter.cli import reference

    doc = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert doc.read_text(encoding="utf-8") == reference.markdown(), (
        "docs/cli.md is stale: run `python -m exporter.cli.reference > docs/cli.md`"
    )


def test_on_off_flags_are_plain_flags():
    """One spelling: ``--force``, never ``--force/--no-force``; only a flag that defaults on has a ``--no-`` form."""
    from exporter.cli import reference

    pairs = [line.split()[0] for line in reference.markdown().splitlines() if " / --no-" in line]
    assert pairs == ["--report"], pairs


RESULT_COMMANDS = ("export", "list-variants", "list-architectures", "verify", "bench", "report", "package")
RESULT_COMMANDS += ("publish", "pull", "sign", "inspect", "promote", "run")


@pytest.mark.parametrize("name", RESULT_COMMANDS)
def test_every_command_that_prints_a_result_takes_json(name):
    assert "--json" in invoke(name, "-h").out


def test_package_json_is_the_result(tmp_path):
    from tests.artifact_factory import make_artifact

    art = make_artifact(tmp_path / "art", recommended="onnx")
    res = invoke("package", str(art), "--out", str(tmp_path / "p.tar"), "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["variant"] == "onnx" and doc["path"] == str(tmp_path / "p.tar") and len(doc["sha256"]) == 64


@pytest.mark.parametrize(
    ("name", "option"), [("package", "--variant "), ("publish", "--variants "), ("sign", "--variants ")]
)
def test_variant_for_one_variants_for_many(name, option):
    """``--variant`` takes one id; a command that takes several (or 'all') spells it ``--variants``."""
    text = invoke(name, "-h").out
    other = "--variants " if option == "--variant " else "--variant "
    assert option in text and other not in text


def test_variants_takes_a_comma_list(tmp_path):
    from exporter import manifest as mf
    from exporter.ship.package import select_variants
    from tests.artifact_factory import make_artifact

    manifest = mf.load(make_artifact(tmp_path / "art"))
    ids = mf.variant_ids(manifest)
    assert select_variants(manifest, ",".join(ids[:2])) == ids[:2] and select_variants(manifest, "all") == ids
