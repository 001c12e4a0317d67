"""`exporter export` through the real entry point: exit codes, messages, outputs, atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import manifest as mf
from tests import hub_fixtures as hf
from tests.cli_runner import run_cli

PINNED = f"{hf.TINY_REPO}@{hf.TINY_SHA}"


@pytest.fixture
def seeded(tiny_model_dir):
    hf.seed_tiny(tiny_model_dir)
    return tiny_model_dir


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """One real export of the tiny model through the Hub cache, shared by the read-only tests."""
    home = tmp_path_factory.mktemp("hf-export")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HOME", str(home))
    mp.setenv("HF_HUB_CACHE", str(home / "hub"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    hf.seed_tiny(tiny_model_dir)
    out = tmp_path_factory.mktemp("art") / "tiny"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "export", PINNED, "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    mp.undo()
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


def test_export_writes_a_valid_manifest_and_json_summary(exported):
    out, summary = exported
    assert summary["artifact"] == str(out)
    assert summary["variants"][0]["id"] == "onnx" and summary["variants"][0]["status"] == "passed"
    m = mf.load(out)  # validates against the JSON Schema
    assert m["source"]["repo"] == hf.TINY_REPO and m["source"]["revision"] == hf.TINY_SHA
    assert m["source"]["pinned"] is True and m["publishable"] is True
    assert {f["path"] for f in m["source"]["files"]} >= {"model.safetensors", "tokenizer.json", "modules.json"}
    parity = m["variants"][0]["parity"]
    assert parity["cosine_min"] >= 0.9999 and parity["n"] >= 300 and parity["passed"] is True
    assert m["environment"]["packages"]["onnxruntime"] and m["environment"]["cpu"]["flags"]
    assert mf.check_files(out, m).ok
    assert not (out / "model.safetensors").exists(), "torch weights are not copied into the artifact"


def test_rerun_on_complete_artifact_does_nothing(exported, capsys, tiny_model_dir):
    out, _ = exported
    hf.seed_tiny(tiny_model_dir)
    before = (out / "manifest.json").stat().st_mtime_ns
    res = run_cli(capsys, "export", PINNED, "--out", str(out), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["skipped"] is True
    assert (out / "manifest.json").stat().st_mtime_ns == before


def test_artifact_loads_in_a_fresh_process_with_sentence_transformers(exported):
    out, _ = exported
    code = (
        "import sys, numpy as np\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"m = SentenceTransformer({str(out)!r}, backend='onnx', model_kwargs={{'file_name': 'onnx/model.onnx'}})\n"
        "e = m.encode(['hello world', 'the quick brown fox'])\n"
        "assert e.shape[0] == 2 and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_default_out_is_artifacts_org_name_sha12(seeded, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_cli(capsys, "export", hf.TINY_REPO, "--revision", hf.TINY_SHA)
    assert res.code == 0, res.err
    expected = Path("artifacts") / hf.TINY_REPO.replace("/", "--") / hf.TINY_SHA[:12]
    assert (tmp_path / expected / "manifest.json").is_file()
    assert str(expected) in res.out


def test_fidelity_gate_failure_exits_3_and_marks_nothing_publishable(seeded, tmp_path, capsys):
    out = tmp_path / "strict"
    # fp32 ONNX differs from torch in the last float bits, so a cosine_min of exactly 1 cannot be met.
    res = run_cli(capsys, "export", PINNED, "--out", str(out), "--threshold", "fp32:cosine_min=1.0", "--json")
    assert res.code == 3, res.err
    assert "fidelity gate" in res.err and "onnx" in res.err
    m = mf.load(out)  # the artifact is kept, with the verdict recorded
    v = mf.get_variant(m, "onnx")
    assert v["status"] == "failed" and v["parity"]["passed"] is False
    assert any("cosine_min" in f for f in v["parity"]["failures"])
    assert m["publishable"] is False
    assert json.loads(res.out)["publishable"] is False


BAD_INPUTS = [
    # (args after `export`, exit code, fragment of the one-line message)
    ([f"{hf.TINY_REPO}@main"], 2, "pin"),
    ([f"{hf.TINY_REPO}@v1.0"], 2, "pin"),
    ([f"{hf.TINY_REPO}@0123456"], 2, "pin"),
    ([f"{hf.TINY_REPO}@{hf.OTHER_SHA}"], 2, "not in the local Hub cache"),
    ([f"nobody/nothing@{hf.TINY_SHA}"], 2, "not in the local Hub cache"),
    (["a/b/c"], 2, "org/name@<40-hex"),
    ([PINNED, "--variants", "onnx,bogus"], 2, "unknown variant"),
    ([PINNED, "--probe", "MISSING.txt"], 2, "MISSING.txt"),
    ([PINNED, "--threshold", "nonsense"], 2, "threshold"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), BAD_INPUTS, ids=[" ".join(a[0]) for a in BAD_INPUTS])
def test_bad_input_table(seeded, tmp_path, capsys, args, code, fragment):
    out = tmp_path / "never"
    res = run_cli(capsys, "export", *args, "--out", str(out))
    assert res.code == code, res.err
    assert fragment.lower() in res.err.lower()
    lines = [ln for ln in res.err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in res.err
    assert not out.exists()


DAMAGED = [
    (hf.add_auto_map, "trust_remote_code", 2),
    (hf.make_pickle_only, "pickle", 2),
    (hf.drop_tokenizer, "tokenizer", 2),
    (hf.truncate_safetensors, "safetensors", 2),
]


@pytest.mark.parametrize(("damage", "fragment", "code"), DAMAGED, ids=[d[0].__name__ for d in DAMAGED])
def test_damaged_models_are_refused(tiny_model_copy, tmp_path, capsys, damage, fragment, code):
    damage(tiny_model_copy)
    hf.seed_tiny(tiny_model_copy)
    out = tmp_path / "never"
    res = run_cli(capsys, "export", PINNED, "--out", str(out))
    assert res.code == code, res.err
    assert fragment in res.err.lower()
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "no texts"), (b"\x00\x01\x02binary", "nul"), (b"\xff\xfe\xfa bad utf8", "utf-8")],
    ids=["empty", "binary", "not-utf8"],
)
def test_bad_probe_files(seeded, tmp_path, capsys, content, fragment):
    probe = tmp_path / "probe.txt"
    probe.write_bytes(content)
    res = run_cli(capsys, "export", PINNED, "--out", str(tmp_path / "never"), "--probe", str(probe))
    assert res.code == 2
    assert fragment in res.err.lower()


def test_unwritable_output_folder(seeded, tmp_path, capsys):
    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new folders even to root
        target = Path("/proc/exporter-test/art")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "art"
    res = run_cli(capsys, "export", PINNED, "--out", str(target))
    assert res.code == 2, res.err
    assert "cannot create output folder" in res.err or "not writable" in res.err
    assert "--out" in res.err


def test_output_under_a_file_is_refused(seeded, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = run_cli(capsys, "export", PINNED, "--out", str(blocker / "art"))
    assert res.code == 2 and "--out" in res.err


def test_interrupted_export_leaves_no_partial_folder(seeded, tmp_path):
    """Ctrl-C while the variant is staged and its gate is running: exit 130, no artifact, no staging folder left.

    The export starts with Ctrl-C's default disposition, as from a terminal: a suite run as a background job of a
    non-interactive shell inherits SIGINT ignored (POSIX), and Python then never raises KeyboardInterrupt. The
    signal goes when the export says it is part-way through running the variant on the probe texts (a progress
    line on stderr), not after a sleep; 6,000 probe texts keep the gate running for seconds after that line."""
    out = tmp_path / "art"
    probe = tmp_path / "probe.txt"
    probe.write_text("".join(f"probe text number {i} about the weather in town\n" for i in range(6000)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "export", PINNED, "--out", str(out), "--probe", str(probe)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # one progress line per finished step or chunk
        seen.append(line)
        if "Running onnx on the probe texts (" in line:  # the first chunk of the variant's probe run is done
            break
    assert any(p.name.startswith(".art.partial-") for p in tmp_path.iterdir()), "".join(seen)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, "".join(seen) + rest
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.txt"]


def test_local_folder_is_recorded_unpinned_with_hashes(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "local"
    res = run_cli(capsys, "export", str(tiny_model_dir), "--out", str(out))
    assert res.code == 0, res.err
    m = mf.load(out)
    assert m["source"]["pinned"] is False and m["source"]["revision"] is None
    assert m["publishable"] is False
    assert all(len(f["sha256"]) == 64 for f in m["source"]["files"])
