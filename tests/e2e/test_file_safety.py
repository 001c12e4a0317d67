"""Nothing lost, nothing leaked (issue 11): every file-system refusal through the real CLI entry point.

One table of cases, each: set up a situation, run ``exporter ...``, expect an exit code, fragments of the
one ``Error:`` line, fragments that must NOT appear (``--force`` for folders we did not write), and what
must still be on disk afterwards. Then the two cases that need processes: a second writer refused
while another holds the lock, and a run killed with SIGKILL whose leftovers the next run removes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exporter import manifest as mf
from exporter import outdir
from tests import hub_fixtures as hf
from tests.artifact_factory import make_artifact
from tests.cli_runner import invoke

PINNED = f"{hf.TINY_REPO}@{hf.TINY_SHA}"
HEAVY = "Loading the torch reference"  # the first slow step of an export
NO_REGISTRY = "oci://127.0.0.1:9/team/tiny"  # nothing listens: a case that touches the network fails


@dataclass
class Case:
    """``setup(tmp_path, model_dir)`` returns the CLI args and a check run on tmp_path afterwards."""

    id: str
    setup: Callable[[Path, Path], tuple[list[str], Callable[[Path], None] | None]]
    code: int
    says: list[str]
    never: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- set-ups
def _user_folder(tmp: Path) -> Path:
    folder = tmp / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("three years of work")
    (folder / "sub" / "data.csv").write_text("a,b\n")
    return folder


def _user_files_survive(tmp: Path) -> None:
    assert (tmp / "mine" / "thesis.txt").read_text() == "three years of work"
    assert (tmp / "mine" / "sub" / "data.csv").is_file()
    assert not [p for p in tmp.iterdir() if ".old-" in p.name or ".partial-" in p.name]


def export_force_user_folder(tmp, model):
    return ["export", PINNED, "--out", str(_user_folder(tmp)), "--force"], _user_files_survive


def export_force_foreign_manifest(tmp, model):
    folder = _user_folder(tmp)
    (folder / "manifest.json").write_text('{"name": "my web app", "version": 3}\n')
    return ["export", PINNED, "--out", str(folder), "--force"], _user_files_survive


def export_force_artifact_with_user_file(tmp, model):
    art = make_artifact(tmp / "art")
    (art / "notes.md").write_text("my notes")

    def kept(tmp):
        assert (art / "notes.md").read_text() == "my notes" and (art / "onnx" / "model.onnx").is_file()

    return ["export", PINNED, "--out", str(art), "--force"], kept


def pull_force_user_folder(tmp, model):
    return ["pull", f"{NO_REGISTRY}:v1", str(_user_folder(tmp)), "--force"], _user_files_survive


def _secret(tmp: Path) -> Path:
    secret = tmp / "home" / "secrets.txt"
    secret.parent.mkdir()
    secret.write_text("api-key=do-not-ship")
    return secret


def _local_model(tmp: Path, model: Path) -> Path:
    return hf.copy_model(model, tmp / "model")


def local_file_link_out(tmp, model):
    folder = _local_model(tmp, model)
    (folder / "notes.txt").symlink_to(_secret(tmp))
    return ["export", str(folder), "--out", str(tmp / "out")], None


def local_tokenizer_link_out(tmp, model):
    folder = _local_model(tmp, model)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    os.replace(folder / "tokenizer.json", elsewhere / "tokenizer.json")
    (folder / "tokenizer.json").symlink_to(elsewhere / "tokenizer.json")
    return ["export", str(folder), "--out", str(tmp / "out")], None


def local_folder_link_out(tmp, model):
    folder = _local_model(tmp, model)
    os.replace(folder / "1_Pooling", tmp / "pooling-elsewhere")
    (folder / "1_Pooling").symlink_to(tmp / "pooling-elsewhere", target_is_directory=True)
    return ["export", str(folder), "--out", str(tmp / "out")], None


def _artifact_with_linked_onnx(tmp: Path) -> Path:
    """A factory artifact whose onnx/ folder is a link to an outside copy: every hash still matches."""
    art = make_artifact(tmp / "art")
    os.replace(art / "onnx", tmp / "somewhere")
    (art / "onnx").symlink_to(tmp / "somewhere", target_is_directory=True)
    return art


def verify_linked_folder(tmp, model):
    return ["verify", str(_artifact_with_linked_onnx(tmp))], None


def package_linked_folder(tmp, model):
    art = _artifact_with_linked_onnx(tmp)
    return ["package", str(art), "--variant", "onnx", "--out", str(tmp / "p.tar")], _nothing_at(tmp / "p.tar")


def publish_linked_folder(tmp, model):
    return ["publish", str(_artifact_with_linked_onnx(tmp)), NO_REGISTRY, "--variants", "onnx"], None


def _crafted_source(tmp: Path, source: dict) -> Path:
    art = make_artifact(tmp / "art")
    data = json.loads((art / "manifest.json").read_text())
    data["source"] = {"repo": None, "revision": None, "pinned": False, "weights_format": "safetensors", **source}
    (art / "manifest.json").write_text(json.dumps(data))  # as an attacker would: no validation on the way
    return art


_CONFIG = {"path": "config.json", "size": 10, "sha256": "0" * 64}


def verify_local_path_root(tmp, model):
    return ["verify", str(_crafted_source(tmp, {"local_path": "/", "files": [_CONFIG]}))], None


def verify_local_path_relative(tmp, model):
    return ["verify", str(_crafted_source(tmp, {"local_path": "nowhere/model", "files": [_CONFIG]}))], None


def verify_source_file_escapes(tmp, model):
    bad = {**_CONFIG, "path": "../../etc/passwd"}
    return ["verify", str(_crafted_source(tmp, {"local_path": str(tmp), "files": [bad]}))], None


def export_out_unwritable(tmp, model):  # root passes permission bits; /proc refuses new entries even to root
    return ["export", PINNED, "--out", "/proc/exporter-test/art"], None


def export_out_in_proc(tmp, model):
    return ["export", PINNED, "--out", "/proc/x"], None


def package_out_existing_folder(tmp, model):
    art = make_artifact(tmp / "art")
    (tmp / "dist").mkdir()
    return ["package", str(art), "--variant", "onnx", "--out", str(tmp / "dist")], None


def package_out_in_proc(tmp, model):
    return ["package", str(make_artifact(tmp / "art")), "--variant", "onnx", "--out", "/proc/x.tar"], None


def export_force_onto_file(tmp, model):
    target = tmp / "model.bin"
    target.write_text("a file of mine")

    def kept(tmp):
        assert target.read_text() == "a file of mine"
        assert sorted(p.name for p in tmp.iterdir()) == ["model.bin"]

    return ["export", PINNED, "--out", str(target), "--force"], kept


def _texts(tmp: Path, name: str, lines: list[str]) -> Path:
    path = tmp / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def probe_one_text(tmp, model):
    return ["export", PINNED, "--out", str(tmp / "out"), "--probe", str(_texts(tmp, "p.txt", ["only one"]))], None


def probe_huge_line(tmp, model):
    lines = [f"an ordinary text {i}" for i in range(30)] + ["x" * 100_000]
    return ["export", PINNED, "--out", str(tmp / "out"), "--probe", str(_texts(tmp, "p.txt", lines))], None


def calibration_one_text(tmp, model):
    calib = _texts(tmp, "c.txt", ["one calibration text"])
    return ["export", PINNED, "--out", str(tmp / "out"), "--calibration", str(calib)], None


def verify_probe_one_text(tmp, model):
    return ["verify", str(make_artifact(tmp / "art")), "--probe", str(_texts(tmp, "p.txt", ["one"]))], None


def _nothing_at(path: Path) -> Callable[[Path], None]:
    def check(tmp):
        assert not path.exists()

    return check


FOREIGN = ["not an exporter artifact", "never deletes"]
CASES = [
    # 1. --force never deletes what the tool did not write, and never suggests --force for it
    Case("export --force, user folder", export_force_user_folder, 2, FOREIGN, ["--force"]),
    Case("export --force, foreign manifest.json", export_force_foreign_manifest, 2, FOREIGN, ["--force"]),
    Case("export --force, artifact + user file", export_force_artifact_with_user_file, 2, ["notes.md"], ["--force"]),
    Case("pull --force, user folder", pull_force_user_folder, 2, FOREIGN, ["--force"]),
    # 2. links out of a local model folder
    Case("local source, file link out", local_file_link_out, 2, ["notes.txt is a link", "outside the model folder"]),
    Case("local source, tokenizer link out", local_tokenizer_link_out, 2, ["tokenizer.json is a link"]),
    Case("local source, folder link out", local_folder_link_out, 2, ["1_Pooling is a link"]),
    # 3. a link inside an artifact fails integrity everywhere files are read
    Case("verify, onnx/ is a link", verify_linked_folder, 4, ["does not match its manifest", "onnx ->"]),
    Case("package, onnx/ is a link", package_linked_folder, 4, ["onnx ->"]),
    Case("publish, onnx/ is a link", publish_linked_folder, 4, ["onnx ->"]),
    # 4. a crafted source.local_path: only the listed files are looked at
    Case("verify, local_path /", verify_local_path_root, 4, ["reference source / lacks", "config.json"]),
    Case("verify, local_path relative", verify_local_path_relative, 2, ["not an existing absolute folder"]),
    Case("verify, source file ../", verify_source_file_escapes, 2, ["not a valid exporter manifest", "source/files/0"]),
    # 7, 8. the output location is checked first, in one line
    Case("export --out unwritable", export_out_unwritable, 2, ["cannot create output folder", "--out"]),
    Case("export --out /proc/x", export_out_in_proc, 2, ["not writable", "/proc"]),
    Case("package --out existing folder", package_out_existing_folder, 2, ["is a folder", "one file"]),
    Case("package --out /proc/x.tar", package_out_in_proc, 2, ["not writable"]),
    # 9. a file is never replaced by a folder
    Case("export --force onto a file", export_force_onto_file, 2, ["is a file, not a folder"], ["--force"]),
    # 10. text files too small or with absurd lines are refused up front
    Case("probe of one text", probe_one_text, 2, ["has 1 text(s)", "at least 20", "20,000 characters"]),
    Case(
        "probe with a 100k-character line",
        probe_huge_line,
        2,
        ["text 31", "100,000 characters", "20,000", "at least 20"],
    ),
    Case("calibration of one text", calibration_one_text, 2, ["calibration file", "at least 10"]),
    Case("verify --probe of one text", verify_probe_one_text, 2, ["at least 20"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refusals(case, tmp_path, tiny_model_dir):
    hf.seed_tiny(tiny_model_dir)
    args, check = case.setup(tmp_path, tiny_model_dir)
    res = invoke(*args)
    assert res.code == case.code, res.err
    errors = [line for line in res.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.err
    for fragment in case.says:
        assert fragment in errors[0], errors[0]
    for fragment in [*case.never, "unexpected", "Traceback"]:
        assert fragment not in res.err, res.err
    assert HEAVY not in res.err, "refused only after loading the model"
    assert not (tmp_path / "out").exists()
    if check:
        check(tmp_path)


# ---------------------------------------------------------------------------------- what stays allowed
def test_hub_cache_snapshot_links_into_its_blobs_still_resolve(tiny_model_dir):
    from exporter.source import resolve as source

    snapshot = hf.seed_tiny(tiny_model_dir)
    assert (snapshot / "config.json").is_symlink()
    src = source.resolve(source.parse_model_ref(PINNED))
    assert src.path == snapshot and {f.path for f in src.files} >= {"config.json", "1_Pooling/config.json"}


def test_a_link_that_stays_inside_a_local_folder_is_accepted(tiny_model_copy):
    from exporter.source import resolve as source

    (tiny_model_copy / "generation_config.json").symlink_to("1_Pooling/config.json")
    src = source.resolve(source.parse_model_ref(str(tiny_model_copy)))
    assert "generation_config.json" in {f.path for f in src.files}


def test_empty_folders_and_our_own_artifacts_may_be_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    outdir.check_out(tmp_path / "empty")
    outdir.check_out(make_artifact(tmp_path / "art"))  # ours: valid manifest, nothing unlisted
    assert outdir.foreign_content(tmp_path / "art") is None


# ------------------------------------------------------------------------------- locks and killed runs
def _hold_lock(out: Path) -> subprocess.Popen:
    """Another process holding ``out``'s lock (the same ``claim`` an export takes), until killed."""
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom exporter import outdir\n"
        f"with outdir.claim(Path({str(out)!r})):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, tiny_model_dir):
    hf.seed_tiny(tiny_model_dir)
    out = tmp_path / "art"
    holder = _hold_lock(out)
    try:
        res = invoke("export", PINNED, "--out", str(out))
    finally:
        holder.kill()
        holder.wait()
    assert res.code == 2, res.err
    (line,) = [x for x in res.err.splitlines() if x.startswith("Error:")]
    assert f"being written by another exporter run (pid {holder.pid} on " in line and "started 20" in line
    assert HEAVY not in res.err and not out.exists()
    with outdir.claim(out):  # the holder died: its lock went with it
        pass
    assert list(tmp_path.iterdir()) == [], "the lock file is removed on release"


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _mark(folder: Path, dest: str, pid: int, kind: str = "partial") -> Path:
    """The marker ``staging.staged_dir`` writes into its staging folders, as process ``pid`` would have."""
    import socket

    from exporter.staging import STAGING_MARKER

    marker = {"tool": "exporter", "pid": pid, "host": socket.gethostname(), "dest": dest, "kind": kind}
    (folder / STAGING_MARKER).write_text(json.dumps(marker))
    return folder


def test_claim_removes_only_dead_runs_staging_folders(tmp_path):
    out = tmp_path / "art"
    dead, alive = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = {
            "dead": tmp_path / f".art.partial-{dead}-k3j2", "alive": tmp_path / f".art.partial-{alive.pid}-x9",
            "unknown": tmp_path / ".art.partial-abc123", "other": tmp_path / f".other.partial-{dead}-q",
            "unmarked": tmp_path / f".art.partial-{dead}-user",
        }  # fmt: skip
        for key, folder in left.items():
            (folder / "onnx").mkdir(parents=True)
            (folder / "onnx" / "model.onnx").write_bytes(b"x" * 1_000_000)
            if key != "unmarked":
                pid = alive.pid if key == "alive" else dead
                _mark(folder, "other" if key == "other" else "art", pid)
        with outdir.claim(out) as notes:
            assert len(notes) == 1 and str(left["dead"]) in notes[0] and f"pid {dead} is gone" in notes[0]
            assert "1.0 MB" in notes[0]
        assert not left["dead"].exists()
        assert all(left[k].is_dir() for k in ("alive", "unknown", "other", "unmarked"))
    finally:
        alive.kill()
        alive.wait()


def test_claim_puts_back_an_artifact_a_killed_swap_had_set_aside(tmp_path):
    from exporter.staging import SET_ASIDE

    out, dead = tmp_path / "art", _dead_pid()
    old = tmp_path / f".art.old-{dead}-x1"
    make_artifact(old / SET_ASIDE)
    _mark(old, "art", dead, "old")
    with outdir.claim(out) as notes:
        assert notes == [f"Restored {out} from {old.name}, set aside by a killed run (pid {dead})."]
    assert mf.check_files(out, mf.load(out)).ok and not old.exists()


@pytest.mark.slow
def test_kill_9_mid_export_then_the_next_run_cleans_up_and_replaces_our_artifact(tmp_path, tiny_model_dir):
    """A real export killed with SIGKILL while staging; the next run removes its leftovers and says so."""
    hf.seed_tiny(tiny_model_dir)
    out = make_artifact(tmp_path / "art")  # one of ours (another model): --force may replace it
    cmd = [sys.executable, "-m", "exporter", "export", PINNED, "--out", str(out), "--force"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.time() + 180
    while time.time() < deadline and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (partial,) = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert partial.name.startswith(f".art.partial-{proc.pid}-")

    res = invoke("export", PINNED, "--out", str(out), "--force", "--json")
    assert res.code == 0, res.err
    assert f"Removed {partial}" in res.err and f"pid {proc.pid} is gone" in res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"], "no partial folder, lock or old copy left"
    assert mf.load(out)["source"]["repo"] == hf.TINY_REPO


def test_pull_force_replaces_an_earlier_pull_and_cleans_a_killed_pulls_leftovers(tmp_path_factory, tmp_path):
    from exporter.ship import registry as reg
    from tests.registry_server import running_registry

    art = make_artifact(tmp_path / "art", recommended="onnx")
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        (pushed,) = reg.publish(art, f"oci://{server.host}/team/tiny")
        dest = tmp_path / "pulled"
        assert invoke("pull", pushed.reference, str(dest)).code == 0
        dead = _dead_pid()
        (tmp_path / f".pulled.partial-{dead}-zz").mkdir()
        _mark(tmp_path / f".pulled.partial-{dead}-zz", "pulled", dead)
        res = invoke("pull", pushed.reference, str(dest), "--force")
    assert res.code == 0, res.err
    assert f"! Removed {tmp_path / f'.pulled.partial-{dead}-zz'} (0.0 MB)" in res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "pulled"]
    assert mf.check_files(dest, mf.load(dest)).ok
