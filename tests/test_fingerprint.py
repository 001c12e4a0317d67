"""One fingerprint decides reuse: each input part moves the digest, a re-run keeps a variant only on an equal
digest, and ``exporter run`` builds nothing the recipe's registry already holds with the same fingerprint."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from exporter import fingerprint, variants
from exporter.hostcaps import Host
from exporter.pipeline import run_export
from tests.cli_runner import invoke
from tests.hub_fixtures import TINY_SHA, seed_tiny
from tests.registry_server import running_registry

EXPORT = dict(
    source_files=[{"path": "config.json", "sha256": "1" * 64}, {"path": "model.safetensors", "sha256": "2" * 64}],
    environment={"python": "3.12.1", "implementation": "cpython", "packages": {"torch": "2.5.0", "onnx": "1.17"}},
    settings={"kind": "sentence-transformer", "max_seq_length": None, "truncate_dim": None, "prompts": None},
    probe_sha256="3" * 64,
    batching={"batch": 32, "batching": "length-sorted"},
    host=Host.of("avx2", "avx512_vnni"),
)
CALIBRATION = "4" * 64
QINT8 = variants.BY_ID["openvino-qint8"]  # calibrates (NNCF static int8)

# one change to one input -> the part it must move
EXPORT_CHANGES = {
    "source": {
        "source_files": [{"path": "config.json", "sha256": "1" * 64}, {"path": "model.safetensors", "sha256": "5" * 64}]
    },
    "toolchain": {"environment": {**EXPORT["environment"], "packages": {"torch": "2.6.0", "onnx": "1.17"}}},
    "cpu": {"host": Host.of("avx2")},
    "settings": {"settings": {**EXPORT["settings"], "max_seq_length": 128}},
    "probe": {"probe_sha256": "6" * 64},
    "batching": {"batching": {**EXPORT["batching"], "batch": 16}},
}


def _print(spec=QINT8, calibration=CALIBRATION, threshold=None, consumers=(), **export_changes):
    base = fingerprint.export_inputs(**{**EXPORT, **export_changes})
    threshold = threshold or {"cosine_min": 0.99}
    return fingerprint.for_variant(base, spec, calibration_sha256=calibration, threshold=threshold, consumers=consumers)


@pytest.mark.parametrize("part", list(EXPORT_CHANGES))
def test_changing_one_export_input_moves_its_part_and_the_digest(part):
    same, changed = _print(), _print(**EXPORT_CHANGES[part])
    assert same.digest == _print().digest  # deterministic
    assert changed.digest != same.digest and same.changed(changed.to_dict()) == [part]
    assert changed.reference_key != same.reference_key  # the reference cache is keyed by these parts too


@pytest.mark.parametrize(
    ("part", "kwargs"),
    [
        ("variant", {"spec": dataclasses.replace(QINT8, options=dataclasses.replace(QINT8.options, subset_size=300))}),
        ("variant", {"spec": variants.BY_ID["openvino-int8-weights"]}),
        ("variant", {"calibration": "7" * 64}),  # a calibrating variant depends on the calibration set
        ("judging", {"threshold": {"cosine_min": 0.995}}),
        ("judging", {"consumers": ("runtime",)}),
    ],
)
def test_changing_the_variant_or_its_judging_moves_only_that_part(part, kwargs):
    same, changed = _print(), _print(**kwargs)
    assert same.changed(changed.to_dict()) == [part] and changed.digest != same.digest
    assert changed.reference_key == same.reference_key  # the reference does not depend on the variant


def test_a_variant_that_does_not_calibrate_ignores_the_calibration_set_and_file_order():
    onnx = variants.BY_ID["onnx"]
    assert _print(onnx).digest == _print(onnx, calibration="7" * 64).digest
    shuffled = {"source_files": list(reversed(EXPORT["source_files"]))}
    assert _print(**shuffled).digest == _print().digest


@pytest.mark.slow  # two tiny exports, a registry and a fleet worker: ~25 s of CPU
def test_a_rerun_keeps_a_variant_only_when_its_recorded_fingerprint_is_equal_and_a_fleet_skips_the_published(
    tmp_path, tiny_model_dir
):
    from exporter.fleet.recipe_loading import load_recipe
    from exporter.fleet.recipe_plan import recipe_to_plan
    from exporter.ship import published

    repo = "fp-org/tiny"
    seed_tiny(tiny_model_dir, repo_id=repo, sha=TINY_SHA)
    with running_registry(tmp_path / "registry") as server:
        target = f"oci://{server.host}/models/tiny"
        recipe = tmp_path / "recipes" / "tiny.yaml"
        recipe.parent.mkdir()
        recipe.write_text(yaml.safe_dump({"source": {"repo": repo, "revision": TINY_SHA}, "variants": ["onnx"]}))
        plan = recipe_to_plan(load_recipe(recipe), recipe.parent, artifacts_root=tmp_path / "artifacts")

        first = run_export(plan)
        recorded = first.manifest["variants"][0]["fingerprint"]
        assert set(recorded["parts"]) == set(fingerprint.PARTS)
        assert run_export(plan).skipped  # equal digest: kept

        # A recorded part that differs (as after a toolchain upgrade): the variant is rebuilt and re-recorded.
        manifest_path = first.artifact / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["variants"][0]["fingerprint"]["parts"]["toolchain"] = "0" * 64
        manifest_path.write_text(json.dumps(manifest))
        again = run_export(plan)
        assert not again.skipped and again.manifest["variants"][0]["fingerprint"] == recorded

        # Published under its default tag, annotated with its digest; only that digest counts as published.
        assert invoke("publish", str(first.artifact), target).code == 0
        assert published.published_with(target, TINY_SHA, {"onnx": recorded["digest"]}) == {
            "onnx": f"{target}:{TINY_SHA[:12]}-onnx"
        }
        assert published.published_with(target, TINY_SHA, {"onnx": "f" * 64}) == {}

        # A fleet whose recipe publishes there builds nothing and says so.
        recipe.write_text(
            yaml.safe_dump({"source": {"repo": repo, "revision": TINY_SHA}, "variants": ["onnx"], "publish": target})
        )
        fresh = tmp_path / "fleet-artifacts"
        result = invoke("run", str(recipe), "--json", "--artifacts", str(fresh))
        assert result.code == 0, result.err
        rows = json.loads(result.out)["rows"]
        assert [(r["variant"], r["verdict"], r["published"]) for r in rows] == [
            ("onnx", "published", f"{target}:{TINY_SHA[:12]}-onnx")
        ]
        assert "already published with the same fingerprint" in result.err
        assert not list(fresh.rglob("*.onnx"))  # nothing was built


def test_derived_keys_take_any_fact_name_and_a_memo_runs_once_per_facts(tmp_path):
    from exporter.builders.context import BuildContext

    assert fingerprint.derive("r", "x", base="a", what="b") != fingerprint.derive("r", "x", base="a", what="c")
    ctx = BuildContext(source_dir=tmp_path, stage_dir=tmp_path, reference_key="k")
    calls = []
    make = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert ctx.memo("search", make, base="a") == ctx.memo("search", make, base="a") == 1
    assert ctx.memo("search", make, base="b") == 2 and ctx.memo("other", make, base="a") == 3
