"""Nothing lost, nothing leaked, round two (issue 21): each row of the attack run's table as a case through
the real CLI entry point (``tests.cli_runner.invoke``), with a real registry where one is involved.

Every refusal ends as ONE ``Error:`` line and its exit code; what the user had is still there afterwards.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests import hub_fixtures as hf
from tests.artifact_factory import make_artifact, verify_report
from tests.cli_runner import invoke
from tests.quality.test_verify import _artifact_template, artifact  # noqa: F401 - the shared real artifact (row 13)

PINNED = f"{hf.TINY_REPO}@{hf.TINY_SHA}"
RECIPE = "source: {repo: sentence-transformers/all-MiniLM-L6-v2, revision: '" + "1" * 40 + "'}\nvariants: [onnx]\n"


def one_error(res, code: int, *fragments: str) -> str:
    """The single ``Error:`` line of a run that must end with ``code``; it holds every fragment."""
    assert res.code == code, res.err
    errors = [line for line in res.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.err
    assert "unexpected" not in res.err and "Traceback" not in res.err, res.err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _texts(path: Path, n: int = 30) -> Path:
    path.write_text("".join(f"an ordinary probe text number {i}\n" for i in range(n)), encoding="utf-8")
    return path


# ------------------------------------------------------------------- row 4: a YAML alias bomb in a recipe
def test_row4_a_recipe_alias_bomb_is_refused_fast(tmp_path):
    bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        bomb.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(RECIPE + "kind:\n" + "\n".join("  " + line for line in bomb) + "\n", encoding="utf-8")
    started = time.monotonic()
    res = invoke("plan", str(recipe))
    one_error(res, 2, "bomb.yaml", "aliases")
    assert time.monotonic() - started < 10


# ------------------------------------------------------- row 5: every user file regular, non-blocking, capped
def _probe_link_to_dev_zero(tmp):
    (tmp / "p.txt").symlink_to("/dev/zero")
    return tmp / "p.txt"


def _probe_fifo(tmp):
    os.mkfifo(tmp / "p.txt")
    return tmp / "p.txt"


def _probe_5mb(tmp):
    (tmp / "p.txt").write_text(("y" * 99 + "\n") * 50_000, encoding="utf-8")
    return tmp / "p.txt"


def _probe_100k_lines(tmp):
    (tmp / "p.txt").write_text("t\n" * 100_000, encoding="utf-8")
    return tmp / "p.txt"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_probe_link_to_dev_zero, ["p.txt", "not a regular file"]),
        (_probe_fifo, ["p.txt", "not a regular file"]),
        (_probe_5mb, ["5,000,000 bytes", "4,000,000-byte cap"]),
        (_probe_100k_lines, ["100,000 lines", "20,000-line cap"]),
    ],
    ids=["link to /dev/zero", "fifo", "5 MB", "100k lines"],
)
def test_row5_a_probe_that_is_not_a_small_regular_file_is_refused(tmp_path, make, says):
    art = make_artifact(tmp_path / "art")
    res = invoke("verify", str(art), "--probe", str(make(tmp_path)))
    one_error(res, 2, *says)


def test_row5_export_calibration_from_a_fifo_is_refused_before_loading(tmp_path, tiny_model_dir):
    hf.seed_tiny(tiny_model_dir)
    os.mkfifo(tmp_path / "c.txt")
    res = invoke("export", PINNED, "--out", str(tmp_path / "out"), "--calibration", str(tmp_path / "c.txt"))
    one_error(res, 2, "c.txt", "not a regular file")
    assert not (tmp_path / "out").exists()


def test_row5_a_policy_linked_to_dev_zero_is_refused(tmp_path):
    (tmp_path / "policy.json").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "key.pub")
    for option, name in (("--policy", "policy.json"), ("--verify-key", "key.pub")):  # read before any network
        res = invoke("inspect", "oci://127.0.0.1:9/team/tiny:v1", option, str(tmp_path / name))
        one_error(res, 2, name, "not a regular file")


def test_row5_a_recipe_that_is_a_fifo_or_too_big_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    one_error(invoke("plan", str(tmp_path / "fifo.yaml")), 2, "fifo.yaml", "not a regular file")
    (tmp_path / "big.yaml").write_text(RECIPE + "#" * 300_000 + "\n", encoding="utf-8")
    one_error(invoke("plan", str(tmp_path / "big.yaml")), 2, "big.yaml", "256,000-byte cap")


def test_row5_a_manifest_that_is_a_fifo_is_refused(tmp_path):
    art = make_artifact(tmp_path / "art")
    (art / "manifest.json").unlink()
    os.mkfifo(art / "manifest.json")
    res = invoke("verify", str(art))
    one_error(res, 2, "manifest.json")


# -------------------------------------------------------------- row 10: a JSONL probe line of 100k '['
def test_row10_a_deeply_nested_jsonl_line_is_named(tmp_path):
    art = make_artifact(tmp_path / "art")
    probe = tmp_path / "p.jsonl"
    lines = [json.dumps({"text": f"text {i}"}) for i in range(25)]
    probe.write_text("\n".join([*lines[:7], "[" * 100_000, *lines[7:]]) + "\n", encoding="utf-8")
    res = invoke("verify", str(art), "--probe", str(probe))
    one_error(res, 2, "line 8", "nested too deeply")


def test_row10_a_deeply_nested_manifest_is_refused(tmp_path):
    art = make_artifact(tmp_path / "art")
    (art / "manifest.json").write_text("[" * 100_000, encoding="utf-8")
    one_error(invoke("verify", str(art)), 2, "manifest", "nested too deeply")


# ---------------------------------------------------------- row 8: a user's file is not overwritten silently
def test_row8_package_out_over_a_user_file_needs_force(tmp_path):
    art = make_artifact(tmp_path / "art")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    one_error(invoke("package", str(art), "--variant", "onnx", "--out", str(notes)), 2, "notes.txt", "--force")
    assert notes.read_text() == "my notes"
    res = invoke("package", str(art), "--variant", "onnx", "--out", str(notes), "--force")
    assert res.code == 0, res.err
    assert notes.read_bytes()[257:262] == b"ustar"  # it is a tar now, as asked


def test_row8_save_recipe_over_a_user_file_needs_force_even_in_a_dry_run(tmp_path, tiny_model_dir):
    hf.seed_tiny(tiny_model_dir)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# my own recipe\n")
    base = ["export", PINNED, "--out", str(tmp_path / "out"), "--save-recipe", str(recipe), "--dry-run"]
    one_error(invoke(*base), 2, "r.yaml", "already exists", "--force")
    assert recipe.read_text() == "# my own recipe\n"
    res = invoke(*base, "--force")
    assert res.code == 0, res.err
    assert "written by `exporter export --save-recipe`" in recipe.read_text()


# ------------------------------------------------- row 9: report and artifact destinations checked up front
def test_row9_verify_junit_onto_a_folder_or_unwritable_place_is_refused_before_parity(tmp_path):
    art = make_artifact(tmp_path / "art")  # its source is not in the Hub cache: parity would fail, later
    (tmp_path / "reports").mkdir()
    one_error(invoke("verify", str(art), "--junit", str(tmp_path / "reports")), 2, "--junit", "is a folder")
    one_error(invoke("verify", str(art), "--junit", "/proc/exporter/junit.xml"), 2, "--junit")
    assert list((tmp_path / "reports").iterdir()) == []


def test_row9_run_artifacts_on_an_unwritable_place_is_refused_first(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    one_error(invoke("run", str(recipe), "--artifacts", "/proc/exporter-artifacts"), 2, "--artifacts")
    (tmp_path / "file").write_text("x")
    one_error(invoke("run", str(recipe), "--artifacts", str(tmp_path / "file")), 2, "--artifacts")
    assert (tmp_path / "file").read_text() == "x"


# ----------------------------------------------------------------- row 13: kill -9 of verify takes its worker
def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads children from /proc (Linux)")
def test_row13_the_parity_worker_dies_with_a_killed_verify(artifact):  # noqa: F811 - the fixture
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "exporter", "verify", str(artifact)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (workers := _children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert workers, "verify never started its parity process"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 3
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(map(_alive, workers)), "the parity process outlived verify"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------- rows 3 and 14: what a registry serves is bound to what was signed
@pytest.fixture
def open_registry(tmp_path_factory, monkeypatch, tmp_path):
    from tests.registry_server import running_registry

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


def _signed(open_registry, tmp_path) -> tuple[str, Path]:
    """A signed ModelPack publish of a factory artifact: (reference of the pushed manifest, public key)."""
    from tests.signing_keys import make_keypair

    private, public = make_keypair(tmp_path, "release")
    art = make_artifact(tmp_path / "art", recommended="onnx")
    target = f"oci://{open_registry.host}/team/tiny:v1"
    res = invoke("publish", str(art), target, "--sign-key", str(private), "--verified", str(verify_report(art)))
    assert res.code == 0, res.err
    return f"oci://{open_registry.host}/team/tiny:v1", public


def _repush(open_registry, edit_doc, edit_config=None) -> str:
    """The manifest of team/tiny:v1 edited and pushed as :forged, its referrers re-pointed at it."""
    import hashlib

    from exporter.ship import referrers
    from exporter.ship.oci_client import RegistryClient

    client = RegistryClient(open_registry.host)
    data, digest = client.get_manifest("team/tiny", "v1")
    doc = json.loads(data)
    if edit_config:
        cfg = json.loads(client.get_blob("team/tiny", doc["config"]["digest"], doc["config"]["size"]))
        edit_config(cfg)
        blob = json.dumps(cfg).encode()
        new = "sha256:" + hashlib.sha256(blob).hexdigest()
        client.upload_blob("team/tiny", new, len(blob), lambda: blob)
        doc["config"].update(digest=new, size=len(blob))
    edit_doc(doc)
    forged = json.dumps(doc).encode()
    new_digest = client.put_manifest("team/tiny", "forged", forged)
    subject = {"mediaType": doc["mediaType"], "digest": new_digest, "size": len(forged)}
    for desc in referrers.listed(client, "team/tiny", digest):
        bundle = referrers.fetch_bundle(client, "team/tiny", desc, digest)
        kind = desc["annotations"][referrers.PREDICATE_ANNOTATION]
        referrers.attach(client, "team/tiny", subject, bundle, kind)
    return f"oci://{open_registry.host}/team/tiny:forged"


def _evil_config(cfg):
    cfg["descriptor"].update(name="evil/other-model", revision="0" * 40)


def test_row3_a_forged_modelpack_config_fails_every_verifying_command_with_exit_4(open_registry, tmp_path):
    ref, public = _signed(open_registry, tmp_path)
    honest = invoke("inspect", ref, "--verify-key", str(public))
    assert honest.code == 0 and "signature: verified" in honest.out, honest.err
    forged = _repush(open_registry, lambda doc: None, _evil_config)
    for args in (
        ["inspect", forged, "--verify-key", str(public)],
        ["pull", forged, str(tmp_path / "pulled"), "--verify-key", str(public)],
        ["promote", forged, f"oci://{open_registry.host}/team/tiny:prod", "--verify-key", str(public)],
    ):
        res = invoke(*args)
        one_error(res, 4, "does not match its signed manifest.json", "descriptor.name", "descriptor.revision")
        assert "evil/other-model" not in res.out
    assert not (tmp_path / "pulled").exists()


def test_row14_pull_refuses_a_layer_whose_title_is_not_its_file_path(open_registry, tmp_path):
    from exporter.ship import modelpack

    ref, _ = _signed(open_registry, tmp_path)

    def retitle(doc):
        doc["layers"][0]["annotations"][modelpack.TITLE] = "../x"

    forged = _repush(open_registry, retitle)
    res = invoke("pull", forged, str(tmp_path / "pulled"))
    one_error(res, 4, "titled '../x'", "file path")
    assert not (tmp_path / "pulled").exists() and not (tmp_path / "x").exists()
    honest = invoke("pull", ref, str(tmp_path / "ok"))  # and what publish writes: every title is its path
    assert honest.code == 0, honest.err
    from exporter.ship.oci_client import RegistryClient

    layers = json.loads(RegistryClient(open_registry.host).get_manifest("team/tiny", "v1")[0])["layers"]
    assert all(x["annotations"][modelpack.TITLE] == x["annotations"][modelpack.FILEPATH] for x in layers)


# --------------------------------------------------- row 15: recipes that run remote code are shown, and gated
def test_row15_plan_shows_and_run_gates_recipes_that_run_remote_code(tmp_path):
    (tmp_path / "plain.yaml").write_text(RECIPE, encoding="utf-8")
    (tmp_path / "custom.yaml").write_text(RECIPE + "trust_remote_code: true\n", encoding="utf-8")
    planned = invoke("plan", str(tmp_path), "--format", "json")
    assert planned.code == 0, planned.err
    assert "runs remote code" in planned.err and "custom.yaml" in planned.err and "plain.yaml" not in planned.err
    rows = {e["name"]: e["remote_code"] for e in json.loads(planned.out)}
    assert rows == {"custom": "true", "plain": "false"}
    res = invoke("run", str(tmp_path), "--artifacts", str(tmp_path / "arts"))
    one_error(res, 2, "custom.yaml", "trust_remote_code", "--allow-remote-code")
    assert not (tmp_path / "arts" / ".logs").exists(), "refused before any recipe ran"


# ------------------------------------------- row 6: only our own marked staging folders are cleaned or restored
def test_row6_user_folders_named_like_staging_folders_survive_a_pull(open_registry, tmp_path):
    art = make_artifact(tmp_path / "art", recommended="onnx")
    ref = f"oci://{open_registry.host}/team/tiny:v1"
    assert invoke("publish", str(art), ref).code == 0
    home = tmp_path / "home"
    home.mkdir()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    names = [f".out.partial-{dead}-w", f".out.old-{dead - 1}", f".out.old-{dead - 2}-x"]
    for name in names:
        (home / name).mkdir()
        (home / name / "thesis.txt").write_text("mine")
    (home / names[2] / "set-aside").mkdir()  # looks like a set-aside artifact, but carries no marker
    res = invoke("pull", ref, str(home / "out"))
    assert res.code == 0, res.err
    assert "Removed" not in res.err and "Restored" not in res.err
    for name in names:
        assert (home / name / "thesis.txt").read_text() == "mine"
    assert (home / "out" / "manifest.json").is_file() and not (home / "out" / "thesis.txt").exists()


# ------------------------------------------ row 1: only what the model loads is copied; unpinned is not published
SECRETS = {
    ".env": "API_KEY=do-not-ship\n",
    "id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    "private/creds.json": "{}",
}


@pytest.mark.slow
def test_row1_a_local_folder_ships_only_the_model_and_publish_needs_a_flag(open_registry, tiny_model_copy, tmp_path):
    import tarfile

    from exporter.ship.oci_client import RegistryClient

    for rel, text in SECRETS.items():
        (tiny_model_copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (tiny_model_copy / rel).write_text(text)
    res = invoke("export", str(tiny_model_copy), "--out", str(tmp_path / "art"), "--variants", "onnx")
    assert res.code == 0, res.err
    art = tmp_path / "art"
    (said,) = [line for line in res.err.splitlines() if "Not copied (the model does not load them): " in line]
    assert all(rel in said for rel in SECRETS)
    manifest = json.loads((art / "manifest.json").read_text())
    assert set(SECRETS) <= set(manifest["source"]["skipped"])
    assert {"modules.json", "1_Pooling/config.json", "tokenizer.json"} <= {
        f["path"] for f in manifest["source"]["files"]
    }
    everywhere = {p.relative_to(art).as_posix() for p in art.rglob("*")}
    assert not everywhere & set(SECRETS) and "private" not in everywhere

    assert invoke("package", str(art), "--out", str(tmp_path / "p.tar")).code == 0
    with tarfile.open(tmp_path / "p.tar") as tar:
        assert not {m.name for m in tar.getmembers()} & set(SECRETS)

    ref = f"oci://{open_registry.host}/team/local:v1"
    one_error(invoke("publish", str(art), ref), 2, "not publishable", "--allow-unpublishable")
    client = RegistryClient(open_registry.host)
    assert client.manifest_digest("team/local", "v1") is None, "nothing pushed"
    res = invoke("publish", str(art), ref, "--allow-unpublishable")
    assert res.code == 0, res.err
    doc = json.loads(client.get_manifest("team/local", "v1")[0])
    assert doc["annotations"]["dev.exporter.publishable"] == "false"
    assert not {x["annotations"]["org.cncf.model.filepath"] for x in doc["layers"]} & set(SECRETS)


def test_row1_publish_refuses_an_unpinned_artifact_before_any_network(tmp_path):
    art = make_artifact(tmp_path / "art", recommended="onnx")
    data = json.loads((art / "manifest.json").read_text())
    data["source"].update(repo=None, revision=None, pinned=False, local_path=str(tmp_path / "model"))
    data["publishable"] = False
    (art / "manifest.json").write_text(json.dumps(data))
    one_error(invoke("publish", str(art), "oci://127.0.0.1:9/team/x:v1"), 2, "not publishable", "--allow-unpublishable")


# ------------------------------------------------------ row 11: a registry that accepts and never answers
@pytest.fixture
def silent_registry():
    """A loopback socket that accepts connections and never sends a byte."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    import threading

    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_row11_a_silent_registry_ends_within_the_deadline_in_one_line(silent_registry, tmp_path, monkeypatch):
    from exporter.ship import oci_transport

    monkeypatch.setenv(oci_transport.TIMEOUT_ENV, "0.5")
    monkeypatch.setenv(oci_transport.DEADLINE_ENV, "2")
    started = time.monotonic()
    res = invoke("pull", f"oci://{silent_registry}/team/tiny:v1", str(tmp_path / "pulled"))
    took = time.monotonic() - started
    one_error(res, 1, silent_registry, "gave up", "2s deadline")
    assert took < 6, took
    waits = [line for line in res.err.splitlines() if line.startswith("… waiting for registry")]
    assert waits and all(silent_registry in w and "team/tiny:v1" in w for w in waits), res.err
    assert not (tmp_path / "pulled").exists()


# ---------------------------------------- row 2: credentials never go in clear text to another host
def _own_address() -> str:
    """This machine's non-loopback IPv4 address (no packet is sent), or a TEST-NET one when it has none."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
        except OSError:
            return "192.0.2.1"
    return address if not address.startswith("127.") else "192.0.2.1"


@pytest.fixture
def bearer_trap():
    """A hostile loopback registry whose 401 points a Bearer realm at plain HTTP on a non-loopback address,
    where a second server records every Authorization header it is sent."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []
    address = _own_address()

    class Realm(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            seen.append(self.headers.get("Authorization") or "")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"token": "t"}')

        def log_message(self, *args):
            pass

    realm = ThreadingHTTPServer(("0.0.0.0", 0), Realm)

    class Registry(BaseHTTPRequestHandler):
        def _challenge(self):
            self.send_response(401)
            self.send_header(
                "WWW-Authenticate", f'Bearer realm="http://{address}:{realm.server_port}/token",service="r"'
            )
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _challenge  # noqa: N815

        def log_message(self, *args):
            pass

    registry = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (realm, registry)]
    for t in threads:
        t.start()
    yield f"127.0.0.1:{registry.server_port}", seen
    for s in (realm, registry):
        s.shutdown()
        s.server_close()


def test_row2_credentials_are_not_sent_to_a_plain_http_realm_elsewhere(bearer_trap, tmp_path, monkeypatch):
    from exporter.ship import registry as reg

    host, seen = bearer_trap
    monkeypatch.setenv(reg.USER_ENV, "alice")
    monkeypatch.setenv(reg.PASSWORD_ENV, "s3cret-password")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    res = invoke("pull", f"oci://{host}/team/tiny:v1", str(tmp_path / "pulled"))
    line = one_error(res, 1, "plain HTTP", "refusing")
    assert "s3cret" not in res.err + res.out and "alice" not in line
    assert seen == [], "credentials reached the realm"
    assert not (tmp_path / "pulled").exists()


# ------------------------------------------- row 7: --force deletes only what the tool recorded, by hash
def _signed_artifact(tmp_path) -> Path:
    from tests.signing_keys import make_keypair

    art = make_artifact(tmp_path / "art", recommended="onnx")
    key = str(make_keypair(tmp_path, "k")[0])
    assert invoke("sign", str(art), "--key", key, "--verified", str(verify_report(art))).code == 0
    return art


@pytest.mark.parametrize(
    ("planted", "named"),
    [
        ({"REPORT.md": "my own report"}, "REPORT.md"),
        ({"signatures/mykey.pem": "-----BEGIN PRIVATE KEY-----"}, "signatures/mykey.pem"),
        ({"config.json": '{"edited": "by hand"}'}, "config.json"),  # listed, but not the bytes recorded
    ],
    ids=["report", "key in signatures", "edited listed file"],
)
def test_row7_export_force_refuses_to_delete_a_user_file_naming_it(tmp_path, tiny_model_dir, planted, named):
    hf.seed_tiny(tiny_model_dir)
    art = _signed_artifact(tmp_path)
    for rel, text in planted.items():
        (art / rel).write_text(text)
    one_error(invoke("export", PINNED, "--out", str(art), "--force"), 2, named, "changed since the tool wrote them")
    for rel, text in planted.items():
        assert (art / rel).read_text() == text


def test_row7_what_the_tool_wrote_may_still_be_replaced(tmp_path):
    from exporter import outdir

    art = _signed_artifact(tmp_path)
    assert any((art / "signatures").iterdir())
    assert outdir.foreign_content(art) is None


def test_row7_pull_force_keeps_a_users_key_in_signatures(open_registry, tmp_path):
    art = make_artifact(tmp_path / "art", recommended="onnx")
    ref = f"oci://{open_registry.host}/team/tiny:v1"
    assert invoke("publish", str(art), ref).code == 0
    dest = tmp_path / "pulled"
    assert invoke("pull", ref, str(dest)).code == 0
    (dest / "signatures").mkdir()
    (dest / "signatures" / "user.pem").write_text("mine")
    one_error(invoke("pull", ref, str(dest), "--force"), 2, "signatures/user.pem")
    assert (dest / "signatures" / "user.pem").read_text() == "mine"


# --------------------------------------------------------- row 12: a full disk is one line and nothing partial
@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs (a real full disk: the kernel says ENOSPC at the real write)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _full(res, disk: Path, mb: int | None = None) -> None:
    line = one_error(res, 1, f"no space left on {disk}")
    if mb is not None:
        assert f"needed about {mb} MB" in line, line
    assert "opset" not in res.err
    assert list(disk.iterdir()) == [], "something partial was left on the full disk"


def test_row12_pull_package_and_layout_onto_a_full_disk(open_registry, small_disk, tmp_path):
    art = make_artifact(tmp_path / "art", variants=("onnx",), size=25_000_000, recommended="onnx")
    ref = f"oci://{open_registry.host}/team/big:v1"
    assert invoke("publish", str(art), ref).code == 0
    _full(invoke("pull", ref, str(small_disk / "pulled")), small_disk, 25)
    _full(invoke("package", str(art), "--out", str(small_disk / "p.tar")), small_disk, 25)
    _full(invoke("package", str(art), "--layout", "st", "--out", str(small_disk / "st")), small_disk)


def test_row12_export_onto_a_full_disk(small_disk, tiny_model_dir):
    hf.seed_tiny(tiny_model_dir)
    (small_disk / "filler").write_bytes(b"\0" * (20 * 1024 * 1024 - 64 * 1024))  # 64 KB left
    res = invoke("export", PINNED, "--out", str(small_disk / "art"), "--variants", "onnx")
    (small_disk / "filler").unlink()
    _full(res, small_disk)
