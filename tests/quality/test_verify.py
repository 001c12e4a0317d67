"""verify: integrity (exit 4 naming files), parity re-run in a fresh process (exit 3), JUnit output.

The artifact is real: the tiny model seeded into the test's Hub cache at a pinned sha, two fp32 ONNX
variants (the plain graph and an ORT-optimised one) written with sentence-transformers' own export
functions, parity measured with ``exporter.quality.parity`` and a schema-valid manifest.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter import manifest as mf
from exporter.errors import ExitCode, ExporterError, FidelityError, IntegrityError
from tests.cli_runner import invoke
from tests.hub_fixtures import TINY_REPO, TINY_SHA, seed_tiny

# id -> (file name, how to make it from the exported model)
VARIANTS = {"onnx": "onnx/model.onnx", "onnx-o1": "onnx/model_O1.onnx"}


WORDS = (
    "the quick brown fox jumps over lazy dog hello world cat sat mat what why how when where rain sun cloud "
    "river city train book read write open close model export onnx graph cosine vector search query passage"
).split()


def write_probe(path: Path, n: int = 48) -> Path:
    """A small deterministic probe file (the built-in set is larger than a fast test needs)."""
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 24))) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _build_artifact(snapshot: Path, out: Path, probe_file: Path) -> Path:
    """Export two fp32 ONNX variants of the seeded tiny model and write a manifest like the pipeline's."""
    from sentence_transformers import SentenceTransformer, export_optimized_onnx_model

    from exporter import __version__, kinds
    from exporter.environment import environment
    from exporter.fsutil import record_files
    from exporter.quality import parity, probes
    from exporter.source import resolve as source
    from exporter.variants import Precision

    src = source.resolve(source.parse_model_ref(f"{TINY_REPO}@{TINY_SHA}"))
    out.mkdir(parents=True)
    copied = []
    for rec in src.files:
        if not rec.path.endswith(".safetensors"):
            (out / rec.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile((src.path / rec.path).resolve(), out / rec.path)
            copied.append(out / rec.path)
    shared = record_files(out, copied)
    onnx_model = SentenceTransformer(str(src.path), backend="onnx", device="cpu", local_files_only=True)
    onnx_model.save(str(out / ".st-export"))
    (out / "onnx").mkdir()
    shutil.copyfile(out / ".st-export" / "onnx" / "model.onnx", out / "onnx" / "model.onnx")
    shutil.rmtree(out / ".st-export")
    export_optimized_onnx_model(onnx_model, "O1", str(out))

    probe = probes.load_text_set(probe_file, "probe")
    reference = SentenceTransformer(str(src.path), device="cpu", local_files_only=True)
    ref_emb = reference.encode(probe.texts, batch_size=32, convert_to_numpy=True)
    threshold = parity.DEFAULT_THRESHOLDS[Precision.FP32]
    entries = []
    for vid, file_name in VARIANTS.items():
        model = SentenceTransformer(
            str(out), backend="onnx", device="cpu", model_kwargs={"file_name": file_name}, local_files_only=True
        )
        metrics = parity.compare(ref_emb, model.encode(probe.texts, batch_size=32, convert_to_numpy=True))
        verdict = parity.judge(metrics, threshold)
        entries.append(
            {
                "id": vid,
                "backend": "onnx",
                "precision": "fp32",
                "status": "passed" if verdict.passed else "failed",
                "error": None,
                "files": [r.to_dict() for r in record_files(out, [out / file_name])],
                "load": {"backend": "onnx", "file_name": file_name},
                "build": {"made_by": "tests/quality/test_verify.py"},
                "parity": parity.to_manifest(metrics, threshold, verdict, probe.sha256),
                "bench": None,
            }
        )
    manifest = {
        "schema_version": mf.SCHEMA_VERSION,
        "tool_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "repo": src.repo_id,
            "revision": src.revision,
            "requested_ref": src.requested_ref,
            "pinned": src.pinned,
            "local_path": None,
            "weights_format": src.weights_format,
            "files": [r.to_dict() for r in src.files],
        },
        "model": kinds.get(None).facts(reference),
        "environment": environment(),
        "probe": {"name": probe.name, "sha256": probe.sha256, "n": len(probe.texts), "source": probe.source},
        "calibration": None,
        "shared_files": [r.to_dict() for r in shared],
        "variants": entries,
        "publishable": all(e["status"] == "passed" for e in entries),
        "recommended": None,
        "bench": None,
    }
    mf.save(out, manifest)
    return out


@pytest.fixture(scope="session")
def _artifact_template(tiny_model_dir, tmp_path_factory) -> Path:
    """One artifact per test session (built under its own Hub cache); tests get copies."""
    home = tmp_path_factory.mktemp("hf-build")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_HUB_CACHE", str(home / "hub"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        snapshot = seed_tiny(tiny_model_dir)
        probe = write_probe(tmp_path_factory.mktemp("probe") / "probe.txt")
        return _build_artifact(snapshot, tmp_path_factory.mktemp("artifact") / "tiny", probe)


@pytest.fixture
def artifact(_artifact_template, tiny_model_dir, tmp_path) -> Path:
    """A private copy of the good artifact, with the tiny model seeded into this test's Hub cache."""
    seed_tiny(tiny_model_dir)
    dest = tmp_path / "artifact"
    shutil.copytree(_artifact_template, dest)
    return dest


def _exit_code(exc: ExporterError) -> int:
    return int(exc.exit_code)


# -------------------------------------------------------------------------------------------- tests
def test_good_artifact_passes(artifact):
    from exporter.quality.verify import raise_for, verify

    report = verify(artifact)
    assert report.ok, report.to_dict()
    assert [c.name for c in report.variants] == list(VARIANTS)
    for case in report.variants:
        assert case.parity["cosine_min"] >= 0.9999
        assert case.parity["neighbour_agreement_at_10"] is not None
        assert case.parity["spearman_pairwise"] is not None
        assert case.recorded["probe_sha256"] == case.parity["probe_sha256"]
    assert report.source == {"repo": TINY_REPO, "revision": TINY_SHA, "path": report.source["path"]}
    raise_for(report)  # does not raise
    json.dumps(report.to_dict())  # --json output is serialisable


def test_flipped_byte_exits_4_naming_the_file(artifact):
    from exporter.quality.verify import raise_for, verify

    target = artifact / "onnx" / "model_O1.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    report = verify(artifact)
    assert report.integrity.status == "failed"
    assert "onnx/model_O1.onnx" in report.integrity.message
    statuses = {c.name: c.status for c in report.variants}
    assert statuses == {"onnx": "passed", "onnx-o1": "skipped"}
    with pytest.raises(IntegrityError) as err:
        raise_for(report)
    assert _exit_code(err.value) == ExitCode.INTEGRITY == 4
    assert "onnx/model_O1.onnx" in str(err.value)


def test_swapped_variant_file_fails(artifact):
    """A variant's model file replaced by another variant's (valid ONNX, wrong bytes) fails integrity."""
    from exporter.quality.verify import raise_for, verify

    shutil.copyfile(artifact / "onnx" / "model_O1.onnx", artifact / "onnx" / "model.onnx")
    report = verify(artifact)
    assert not report.ok
    assert "onnx/model.onnx" in report.integrity.message
    with pytest.raises(IntegrityError) as err:
        raise_for(report)
    assert err.value.exit_code == ExitCode.INTEGRITY


def test_extra_and_missing_files_are_named(artifact):
    from exporter.quality.verify import verify

    (artifact / "onnx" / "model_qint8_avx2.onnx").write_bytes(b"not listed")
    (artifact / "config.json").unlink()
    report = verify(artifact, ["onnx"])
    assert "onnx/model_qint8_avx2.onnx" in report.integrity.message
    assert "config.json" in report.integrity.message
    assert report.variants[0].status == "skipped"


def _perturb_weights(artifact: Path, file_name: str) -> None:
    """Add noise to the largest weight of an ONNX file and re-record its hash: intact files, wrong model."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from exporter.fsutil import record_files

    path = artifact / file_name
    model = onnx.load(path)
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr += np.random.default_rng(0).normal(0.0, float(arr.std()), arr.shape).astype(arr.dtype)
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, path)
    manifest = mf.load(artifact)
    variant = next(v for v in manifest["variants"] if v["load"]["file_name"] == file_name)
    variant["files"] = [r.to_dict() for r in record_files(artifact, [path])]
    mf.save(artifact, manifest)


def test_fidelity_failure_exits_3(artifact):
    """Files match a (re-written) manifest, but the model drifted from torch: the re-run parity fails, exit 3."""
    from exporter.quality.verify import raise_for, verify

    _perturb_weights(artifact, "onnx/model_O1.onnx")
    report = verify(artifact)
    assert report.integrity.ok
    by_name = {c.name: c for c in report.variants}
    assert by_name["onnx"].status == "passed"
    assert by_name["onnx-o1"].status == "failed"
    assert any("cosine_min" in line for line in by_name["onnx-o1"].failures)
    with pytest.raises(FidelityError) as err:
        raise_for(report)
    assert _exit_code(err.value) == ExitCode.FIDELITY == 3
    assert "onnx-o1" in str(err.value)


def test_unknown_variant_is_usage_error(artifact):
    from exporter.quality.verify import verify

    with pytest.raises(ExporterError) as err:
        verify(artifact, ["nope"])
    assert err.value.exit_code == ExitCode.USAGE


def test_junit_has_one_case_per_variant_and_integrity(artifact, tmp_path):
    from exporter.quality import junit
    from exporter.quality.verify import verify

    target = artifact / "onnx" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    path = tmp_path / "out" / "verify.xml"
    junit.write(path, verify(artifact))
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["integrity", "onnx", "onnx-o1", "onnx-o1[user]"]  # a user's probe file: one stratum
    assert suite.get("tests") == "4" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    failure = cases["integrity"].find("failure")
    assert failure is not None and "onnx/model.onnx" in failure.get("message")
    assert cases["onnx"].find("skipped") is not None
    assert list(cases["onnx-o1"]) == [cases["onnx-o1"].find("system-out")]  # passed: no failure element


def test_cli_verify_json_and_junit(artifact, tmp_path):
    """The command: --json prints the verdicts, --junit writes the file, a changed file exits 4."""
    junit_path = tmp_path / "v.xml"
    result = invoke("verify", str(artifact), "--json", "--junit", str(junit_path))
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["ok"] is True and [v["status"] for v in data["variants"]] == ["passed", "passed"]
    assert ET.parse(junit_path).getroot().find("testsuite").get("failures") == "0"

    (artifact / "onnx" / "model.onnx").write_bytes(b"swapped")
    result = invoke("verify", str(artifact), "--variants", "onnx")
    assert result.code == 4 and result.err.strip().splitlines()[-1].startswith("Error: ")
    assert "onnx/model.onnx" in result.err


def test_missing_reference_source(artifact):
    """Source not in the Hub cache: exit 2 when files are intact; a file failure still reports exit 4."""
    from exporter.quality.verify import raise_for, verify
    from exporter.source.hubcache import hub_cache_dir

    shutil.rmtree(hub_cache_dir())
    with pytest.raises(ExporterError) as err:
        verify(artifact)
    assert err.value.exit_code == ExitCode.USAGE and TINY_REPO in str(err.value)

    (artifact / "onnx" / "model.onnx").write_bytes(b"swapped")
    report = verify(artifact)
    assert {c.name: c.status for c in report.variants} == {"onnx": "skipped", "onnx-o1": "error"}
    assert "reference unavailable" in report.variants[1].message
    with pytest.raises(IntegrityError):
        raise_for(report)


# ------------------------------------------------------------------------------------- policy, not artifact
def _forge(artifact: Path, file_name: str | None, variant_id: str) -> None:
    """The forgery of issue 20: scale a LayerNorm's weight by 30 % (when ``file_name``), re-hash the file in
    the manifest, and record thresholds that pass anything (and a perfect parity) for ``variant_id``."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from exporter.fsutil import record_files

    manifest = mf.load(artifact)
    variant = mf.get_variant(manifest, variant_id)
    if file_name:
        path = artifact / file_name
        model = onnx.load(path)
        scales = {n.input[1] for n in model.graph.node if n.op_type == "LayerNormalization"}
        init = next(t for t in model.graph.initializer if t.name in scales or "LayerNorm.weight" in t.name)
        arr = numpy_helper.to_array(init).copy()
        arr *= np.where(np.arange(arr.size) % 2 == 0, 1.3, 0.7).reshape(arr.shape).astype(arr.dtype)
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        onnx.save(model, path)
        variant["files"] = [r.to_dict() for r in record_files(artifact, [path])]
    variant["parity"]["threshold"] = {
        "cosine_min": -1.0,
        "neighbour_agreement_at_10": 0.0,
        "spearman_pairwise": -1.0,
        "norm_rel_err_max": None,
    }
    variant["parity"].update(cosine_min=1.0, passed=True, failures=[])
    mf.save(artifact, manifest)


def test_forged_thresholds_do_not_judge_and_sign_attests_its_own_gate(artifact, tmp_path):
    """Issue 20's forgery: a perturbed LayerNorm re-hashed into the manifest with thresholds of -1 fails the
    policy's gate (exit 3); recorded thresholds looser than the policy fail an intact variant too, saying so,
    with the recorded ones shown beside. ``sign`` attests no record: given the ``verify --json`` report of the
    same files under the same policy it refuses both (exit 3, nothing written) and, with --allow-failed,
    attests the measured failure with the policy's digest and thresholds; under a ``--policy`` file it runs
    the gate itself."""
    from exporter.quality.policy import Policy
    from exporter.ship.sign_artifact import bundle_path
    from exporter.ship.signing import unverified_statement
    from tests.signing_keys import make_keypair

    _forge(artifact, "onnx/model_O1.onnx", "onnx-o1")
    _forge(artifact, None, "onnx")
    res = invoke("verify", str(artifact), "--json")
    assert res.code == 3, res.err
    report = json.loads(res.out)
    assert report["policy"]["digest"] == Policy().digest
    cases = {c["name"]: c for c in report["variants"]}
    assert any(f.startswith("cosine_min") and "below the threshold 0.9999" in f for f in cases["onnx-o1"]["failures"])
    assert cases["onnx"]["parity"]["passed"] and cases["onnx"]["status"] == "failed"  # measured fine, recorded -1
    (looser,) = cases["onnx"]["failures"]
    assert "looser than the policy" in looser and "cosine_min >= -1 is looser than the policy's 0.9999" in looser
    assert "spearman_pairwise >= -1" in looser and "norm_rel_err_max is switched off" in looser
    assert "threshold" in cases["onnx"]["recorded"] and cases["onnx"]["recorded"]["threshold"]["cosine_min"] == -1

    # sign attests the report's verdicts, never the record: both refused; onnx attested as failed on request
    path = tmp_path / "verify.json"
    path.write_text(res.out)
    key = str(make_keypair(tmp_path, "k")[0])
    refused = invoke("sign", str(artifact), "--key", key, "--variants", "all", "--verified", str(path))
    assert refused.code == 3 and "onnx-o1" in refused.err and "cosine_min" in refused.err, refused.err
    assert not (artifact / "signatures").exists()
    signed = invoke(
        "sign", str(artifact), "--key", key, "--variants", "onnx", "--verified", str(path), "--allow-failed"
    )
    assert signed.code == 0, signed.err

    def predicate(vid):
        bundle = bundle_path(artifact, vid, "fidelity")
        return unverified_statement(bundle.read_bytes(), str(bundle))["predicate"]

    onnx = predicate("onnx")
    assert not onnx["passed"] and onnx["policy"] == Policy().record(EMBEDDER, "fp32", "onnx")
    assert onnx["parity"]["threshold"]["cosine_min"] == 0.9999 and "looser" in onnx["parity"]["failures"][0]
    strict = tmp_path / "strict.yaml"
    strict.write_text("thresholds:\n  fp32: {norm_rel_err_max: 0.0}\n")
    other = invoke(
        "sign", str(artifact), "--key", key, "--variants", "onnx", "--policy", str(strict), "--verified", str(path)
    )
    assert other.code == 2 and "not the policy in force" in other.err
    gated = invoke(
        "sign", str(artifact), "--key", key, "--variants", "onnx-o1", "--allow-failed", "--policy", str(strict)
    )
    assert gated.code == 0, gated.err
    o1 = predicate("onnx-o1")
    assert o1["policy"] == Policy.load(strict).record(EMBEDDER, "fp32", "onnx-o1") and not o1["passed"]
    assert o1["parity"]["cosine_min"] < 0.9999 and o1["parity"]["threshold"]["norm_rel_err_max"] == 0.0
    assert any("looser than the policy" in f for f in o1["parity"]["failures"])


EMBEDDER = "sentence-transformer"


def test_bad_policy_files_exit_2_naming_the_known_keys(artifact, tmp_path):
    """A folder, an oversized file or an unknown key is refused (exit 2) before anything runs."""
    from exporter.quality.policy import MAX_POLICY_BYTES

    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_POLICY_BYTES + 1))
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"threshold": {}}')
    for path, says in ((tmp_path, "not a regular file"), (big, "byte cap"), (unknown, "unknown key(s): threshold")):
        bad = invoke("verify", str(artifact), "--policy", str(path))
        assert bad.code == 2 and says in bad.err, bad.err
    assert "thresholds" in bad.err and "trusted_keys" in bad.err  # the known keys are listed


def test_threshold_line_shows_the_policy_beside_the_record():
    from exporter.cli.quality import threshold_line

    line = threshold_line(
        {"cosine_min": 0.9999, "norm_rel_err_max": 0.01, "spearman_pairwise": None},
        {"threshold": {"cosine_min": -1, "score_rel_err_max": 0.001}},
    )
    assert line.startswith("thresholds, policy (recorded): cosine_min >=0.9999 (-1), norm_rel_err_max <=0.01 (-)")
    assert "score_rel_err_max <= not judged (0.001)" in line


def test_recorded_reference_verify_is_the_export_gate_judged_by_the_policy(consumer_artifact):
    """Verify against the reference vectors the export recorded (what a host without torch runs) is the
    export's gate through the runtime: the record the export wrote (metrics, per-stratum worst cases, batch
    invariance), the runtime's consumer row being the verdict, judged by the policy, not the record (a
    stricter policy fails what the recorded thresholds pass). The vectors count for their probe set only."""
    from exporter.quality import recorded_reference, verify
    from exporter.quality.policy import DEFAULT, Policy

    manifest = mf.load(consumer_artifact)
    report = verify.verify(consumer_artifact, recorded=True)
    assert report.ok and report.source["reference"] == "recorded", [c.failures for c in report.variants]
    assert report.probe["sha256"] == manifest["probe"]["sha256"]
    for case in report.variants:
        exported = mf.get_variant(manifest, case.name)["parity"]
        assert "recorded at export" in case.message and case.parity["probe_sha256"] == exported["probe_sha256"]
        assert set(exported) - {"consumers", "serving_paths"} <= set(case.parity), set(exported) - set(case.parity)
        assert set(case.parity["strata"]) == set(exported["strata"]) and case.parity["batch_invariance"]["texts"]
        assert case.parity["threshold"] == DEFAULT.thresholds_for("sentence-transformer", "fp32", case.name).to_dict()
        assert [r["consumer"] for r in case.parity["consumers"]] == ["runtime"]
        assert case.parity["consumers"][0]["cosine_min"] == case.parity["cosine_min"] >= 0.9999

    strict = verify.verify(consumer_artifact, ["onnx"], recorded=True, policy=Policy.load(flags=["cosine_min=1.0"]))
    (case,) = strict.variants
    assert case.status == "failed" and case.parity["threshold"]["cosine_min"] == 1.0
    assert any(f.startswith("cosine_min") for f in case.failures), case.failures

    assert recorded_reference.load(consumer_artifact, manifest) is not None
    other = {**manifest, "probe": {**manifest["probe"], "sha256": "0" * 64}}  # another probe set: not its key
    assert recorded_reference.load(consumer_artifact, other) is None
    assert recorded_reference.open_gate(consumer_artifact, other, lambda v: None) is None
