"""Publish and pull against a real registry (CNCF distribution on loopback), open and with htpasswd auth."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from exporter import manifest as mf
from exporter.errors import FidelityError, IntegrityError, OutputError, RegistryError, UsageError
from exporter.ship import modelpack
from exporter.ship import registry as reg
from exporter.ship.oci_ops import inspect
from exporter.ship.package import manifest_bytes
from exporter.ship.signing import key_policy
from tests.artifact_factory import SHA12, make_artifact, verify_report
from tests.cli_runner import invoke
from tests.registry_server import AUTH_PASSWORD, AUTH_USER, running_registry
from tests.signing_keys import make_keypair

FAST = reg.RetryPolicy(attempts=3, first_delay=0.05, factor=2.0, max_delay=0.2)


@pytest.fixture
def open_registry(tmp_path_factory):
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture
def auth_registry(tmp_path_factory):
    with running_registry(tmp_path_factory.mktemp("registry-auth"), {AUTH_USER: AUTH_PASSWORD}) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv(reg.USER_ENV, raising=False)
    monkeypatch.delenv(reg.PASSWORD_ENV, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture
def artifact(tmp_path) -> Path:
    return make_artifact(tmp_path / "art" / SHA12, recommended="onnx")


def _remote_manifest(server, repo: str, ref: str, auth=None) -> dict:
    resp = requests.get(
        f"{server.url}/v2/{repo}/manifests/{ref}", headers={"Accept": reg.MANIFEST_MEDIA_TYPE}, auth=auth, timeout=5
    )
    resp.raise_for_status()
    return resp.json()


def _push_raw(server, repo: str, tag: str, blobs: list[bytes], manifest: dict) -> None:
    """Push blobs and a hand-made manifest with plain requests (for attacks the client would never build)."""
    for data in blobs:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=5)
        loc = requests.compat.urljoin(server.url, start.headers["Location"])
        sep = "&" if "?" in loc else "?"
        requests.put(f"{loc}{sep}digest={digest}", data=data, timeout=5).raise_for_status()
    body = json.dumps(manifest).encode()
    headers = {"Content-Type": reg.MANIFEST_MEDIA_TYPE}
    requests.put(f"{server.url}/v2/{repo}/manifests/{tag}", data=body, headers=headers, timeout=5).raise_for_status()


def _nothing_beside(dest: Path) -> None:
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")] == []


# ----------------------------------------------------------------------------------------- references


def test_reference_parsing_and_transport():
    r = reg.Reference.parse("oci://127.0.0.1:5000/team/model:v1")
    assert (r.host, r.repository, r.tag, r.digest, r.hostname) == (
        "127.0.0.1:5000",
        "team/model",
        "v1",
        None,
        "127.0.0.1",
    )
    assert reg.Reference.parse("oci://[::1]:5000/m").hostname == "::1"
    d = "sha256:" + "a" * 64
    assert reg.Reference.parse(f"oci://localhost/m@{d}").digest == d
    assert reg.RegistryClient("127.0.0.2:1").scheme == "http"
    assert reg.RegistryClient("[::1]:1").scheme == "http"
    assert reg.RegistryClient("localhost:1").scheme == "http"
    assert reg.RegistryClient("registry.example.com").scheme == "https"
    assert reg.RegistryClient("10.0.0.5:5000").scheme == "https"
    assert reg.RegistryClient("10.0.0.5:5000", insecure=True).scheme == "http"
    for bad in ("http://h/m", "oci://h", "oci://h/UPPER", "oci://h/m:bad tag", "oci://h/m@sha256:12"):
        with pytest.raises(UsageError):
            reg.Reference.parse(bad)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(UsageError) as info:
        reg.Reference.parse("oci://alice:hunter2@127.0.0.1:5000/m:t")
    assert "hunter2" not in str(info.value)


def test_credentials_from_env_then_docker_config(monkeypatch, tmp_path):
    assert reg.find_credentials("r.example:5000") is None
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    auth = base64.b64encode(b"bob:pw-from-docker").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {"https://r.example:5000/v2/": {"auth": auth}}}))
    creds = reg.find_credentials("r.example:5000")
    assert (creds.username, creds.password) == ("bob", "pw-from-docker")
    assert "pw-from-docker" not in repr(creds) and "bob" not in repr(creds)
    assert reg.find_credentials("other:5000") is None
    monkeypatch.setenv(reg.USER_ENV, "alice")
    with pytest.raises(UsageError, match="both"):
        reg.find_credentials("r.example:5000")
    monkeypatch.setenv(reg.PASSWORD_ENV, "pw-from-env")
    assert reg.find_credentials("r.example:5000").password == "pw-from-env"


# ----------------------------------------------------------------------------------------- open registry


def test_round_trip_is_byte_identical_and_annotated(open_registry, artifact, tmp_path):
    (result,) = reg.publish(artifact, f"oci://{open_registry.host}/team/tiny", retry=FAST)
    assert result.status == "pushed" and result.reference.endswith(f"/team/tiny:{SHA12}-onnx")
    pulled = reg.pull(result.reference, tmp_path / "pulled", retry=FAST)
    assert pulled.digest == result.digest and pulled.variant == "onnx"
    narrowed = mf.narrow(mf.load(artifact), "onnx")
    for rel in mf.listed_files(narrowed):
        assert (tmp_path / "pulled" / rel).read_bytes() == (artifact / rel).read_bytes()
    assert (tmp_path / "pulled" / "manifest.json").read_bytes() == manifest_bytes(narrowed)
    assert not (tmp_path / "pulled" / "onnx" / "model_qint8_avx2.onnx").exists()

    remote = _remote_manifest(open_registry, "team/tiny", f"{SHA12}-onnx")
    assert (
        remote["artifactType"] == modelpack.ARTIFACT_TYPE
        and remote["config"]["mediaType"] == modelpack.CONFIG_MEDIA_TYPE
    )
    titles = {layer["annotations"][modelpack.FILEPATH]: layer["digest"] for layer in remote["layers"]}
    own = "sha256:" + hashlib.sha256(manifest_bytes(narrowed)).hexdigest()
    assert titles == {rel: f"sha256:{rec['sha256']}" for rel, rec in mf.listed_files(narrowed).items()} | {
        "manifest.json": own
    }
    kinds = {layer["annotations"][modelpack.FILEPATH]: layer["mediaType"] for layer in remote["layers"]}
    assert kinds["onnx/model.onnx"] == modelpack.WEIGHT and kinds["tokenizer.json"] == modelpack.WEIGHT_CONFIG
    assert kinds["manifest.json"] == modelpack.DOC
    ann = remote["annotations"]
    assert ann["dev.exporter.source.repo"] == "acme/tiny-embedder"
    assert ann["dev.exporter.source.revision"].startswith(SHA12)
    assert (ann["dev.exporter.variant"], ann["dev.exporter.parity"], ann["dev.exporter.tool-version"]) == (
        "onnx",
        "passed",
        "0.1.0",
    )
    assert "dev.exporter.allow-failed" not in ann
    by_digest = reg.pull(f"oci://{open_registry.host}/team/tiny@{result.digest}", tmp_path / "by-digest")
    assert by_digest.files == pulled.files


def test_v1_exporter_format_still_publishes_and_pulls_signed(open_registry, artifact, tmp_path):
    target = f"oci://{open_registry.host}/team/legacy"
    private, public = make_keypair(tmp_path, "k")
    report = verify_report(artifact)
    (result,) = reg.publish(artifact, target, artifact_format="exporter", sign_key=private, verified=report, retry=FAST)
    remote = _remote_manifest(open_registry, "team/legacy", f"{SHA12}-onnx")
    assert remote["artifactType"] == reg.ARTIFACT_TYPE and remote["config"]["mediaType"] == reg.CONFIG_MEDIA_TYPE
    pulled = reg.pull(result.reference, tmp_path / "pulled", policy=key_policy([public]), retry=FAST)
    assert (pulled.variant, pulled.files, len(pulled.trust)) == ("onnx", 5, 2)
    info = inspect(result.reference, retry=FAST)
    assert (info.encoding, info.variant, len(info.files), len(info.referrers)) == ("exporter", "onnx", 6, 2)
    narrowed = mf.narrow(mf.load(artifact), "onnx")
    assert (tmp_path / "pulled" / "manifest.json").read_bytes() == manifest_bytes(narrowed)


def test_pulled_variant_loads_with_sentence_transformers(open_registry, tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    art = make_artifact(tmp_path / "art" / SHA12, variants=("onnx",), model_dir=tiny_model_dir)
    (result,) = reg.publish(art, f"oci://{open_registry.host}/team/tiny-st", retry=FAST)
    reg.pull(result.reference, tmp_path / "pulled", retry=FAST)
    text = ["the quick brown fox"]
    got = SentenceTransformer(str(tmp_path / "pulled"), device="cpu").encode(text)
    want = SentenceTransformer(str(tiny_model_dir), device="cpu").encode(text)
    assert (got == want).all()


def test_republish_is_a_no_op(open_registry, artifact):
    target = f"oci://{open_registry.host}/team/tiny"
    first = reg.publish(artifact, target, variant="all", retry=FAST)
    again = reg.publish(artifact, target, variant="all", retry=FAST)
    assert [r.status for r in first] == ["pushed", "pushed"]
    assert [(r.status, r.uploaded) for r in again] == [("unchanged", 0), ("unchanged", 0)]
    assert [r.digest for r in again] == [r.digest for r in first]
    assert sorted(open_registry.tags("team/tiny")) == [f"{SHA12}-onnx", f"{SHA12}-onnx-qint8"]


def test_tag_pointing_at_other_content_is_refused_unless_force(open_registry, artifact, tmp_path):
    target = f"oci://{open_registry.host}/team/tiny:stable"
    (first,) = reg.publish(artifact, target, retry=FAST)
    other = make_artifact(tmp_path / "other" / SHA12, recommended="onnx", seed="different")
    with pytest.raises(OutputError, match="--force"):
        reg.publish(other, target, retry=FAST)
    assert reg.RegistryClient(open_registry.host).manifest_digest("team/tiny", "stable") == first.digest
    (moved,) = reg.publish(other, target, force=True, retry=FAST)
    assert moved.status == "replaced" and moved.digest != first.digest
    reg.pull(target, tmp_path / "pulled", retry=FAST)
    assert (tmp_path / "pulled/onnx/model.onnx").read_bytes() == (other / "onnx/model.onnx").read_bytes()


def test_failed_or_tampered_variants_are_refused(open_registry, tmp_path):
    art = make_artifact(tmp_path / "art" / SHA12, failed=("onnx-qint8",))
    target = f"oci://{open_registry.host}/team/tiny"
    with pytest.raises(FidelityError, match="--allow-failed"):
        reg.publish(art, target, variant="all", retry=FAST)
    assert open_registry.tags("team/tiny") == []  # checked before anything is sent
    (forced,) = reg.publish(art, target, variant="onnx-qint8", allow_failed=True, retry=FAST)
    ann = _remote_manifest(open_registry, "team/tiny", f"{SHA12}-onnx-qint8")["annotations"]
    assert forced.allow_failed and ann["dev.exporter.allow-failed"] == "true" and ann["dev.exporter.parity"] == "failed"
    (art / "onnx" / "model.onnx").write_bytes(b"edited after export")
    with pytest.raises(IntegrityError, match="onnx/model.onnx"):
        reg.publish(art, target, variant="onnx", allow_failed=True, retry=FAST)
    assert open_registry.tags("team/tiny") == [f"{SHA12}-onnx-qint8"]


def test_tampered_blob_in_registry_storage_fails_pull_writing_nothing(open_registry, artifact, tmp_path):
    (result,) = reg.publish(artifact, f"oci://{open_registry.host}/team/tiny", retry=FAST)
    digest = "sha256:" + mf.load(artifact)["variants"][0]["files"][0]["sha256"]
    blob = open_registry.blob_path(digest)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    blob.write_bytes(bytes(data))
    dest = tmp_path / "pulled"
    with pytest.raises(IntegrityError, match="does not match its digest"):
        reg.pull(result.reference, dest, retry=FAST)
    _nothing_beside(dest)


def test_stopped_registry_gives_one_clear_line_and_no_tag(open_registry, artifact):
    open_registry.stop()
    with pytest.raises(RegistryError) as info:
        reg.publish(artifact, f"oci://{open_registry.host}/team/tiny", retry=FAST)
    text = str(info.value)
    assert "\n" not in text and "connection refused" in text and "gave up after 3 attempts" in text
    open_registry.start()
    assert open_registry.tags("team/tiny") == []


def test_registry_dying_mid_publish_leaves_no_tag(open_registry, artifact, monkeypatch):
    real_upload = reg.RegistryClient.upload_blob
    calls = []

    def upload_then_die(self, *args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            open_registry.stop()
        return real_upload(self, *args, **kwargs)

    monkeypatch.setattr(reg.RegistryClient, "upload_blob", upload_then_die)
    with pytest.raises(RegistryError, match="connection refused"):
        reg.publish(artifact, f"oci://{open_registry.host}/team/tiny", retry=FAST)
    open_registry.start()
    assert open_registry.tags("team/tiny") == []
    monkeypatch.setattr(reg.RegistryClient, "upload_blob", real_upload)
    (result,) = reg.publish(artifact, f"oci://{open_registry.host}/team/tiny", retry=FAST)
    blobs = len(mf.listed_files(mf.load(artifact))) + 2  # + the ModelPack config and manifest.json
    assert result.status == "pushed" and 0 < result.uploaded < blobs


def test_5xx_is_retried_with_backoff_then_reported(tmp_path):
    hits = []

    class Unavailable(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (http.server naming)
            hits.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        art = make_artifact(tmp_path / "a" / SHA12, recommended="onnx")
        with pytest.raises(RegistryError, match="HTTP 503 .*gave up after 3 attempts"):
            reg.publish(art, f"oci://127.0.0.1:{server.server_address[1]}/team/tiny", retry=FAST)
    finally:
        server.shutdown()
    assert len(hits) == 3


def _attack(open_registry, artifact, tmp_path, edit_config, edit_layers):
    """Push a hand-made artifact whose config/layers were edited, then try to pull it."""
    honest = mf.narrow(mf.load(artifact), "onnx")
    narrowed = mf.narrow(mf.load(artifact), "onnx")
    edit_config(narrowed)
    config = json.dumps(narrowed).encode()
    doc = json.loads(reg.oci_manifest(honest, config))
    edit_layers(doc["layers"])
    blobs = [config] + [(artifact / rel).read_bytes() for rel in mf.listed_files(honest)]
    _push_raw(open_registry, "team/evil", "t", blobs, doc)
    dest = tmp_path / "pulled"
    with pytest.raises(IntegrityError) as info:
        reg.pull(f"oci://{open_registry.host}/team/evil:t", dest, retry=FAST)
    _nothing_beside(dest)
    assert not (tmp_path / "evil").exists()
    return str(info.value)


def _title(path):
    def edit(layers):
        layers[0]["annotations"][reg.TITLE] = path

    return edit


def _config_path(path):
    def edit(narrowed):
        narrowed["shared_files"][0]["path"] = path

    return edit


@pytest.mark.parametrize(
    ("edit_config", "edit_layers", "match"),
    [
        (lambda n: None, _title("../evil"), "unsafe"),
        (lambda n: None, _title("/tmp/evil"), "unsafe"),
        (_config_path("../evil"), _title("../evil"), "valid exporter manifest"),
        (lambda n: None, lambda layers: layers.append(dict(layers[0])), "twice"),
        (lambda n: None, lambda layers: layers.pop(), "different files"),
        (lambda n: None, lambda layers: layers[0].update(mediaType="application/vnd.oci.image.layer.v1.tar"), "plain"),
    ],
    ids=["title-dotdot", "title-absolute", "config-dotdot", "duplicate", "missing-layer", "tar-layer"],
)
def test_malicious_manifests_are_refused_writing_nothing(
    open_registry, artifact, tmp_path, edit_config, edit_layers, match
):
    assert match in _attack(open_registry, artifact, tmp_path, edit_config, edit_layers)


def test_pull_refuses_an_existing_folder_and_a_missing_tag(open_registry, artifact, tmp_path):
    (result,) = reg.publish(artifact, f"oci://{open_registry.host}/team/tiny", retry=FAST)
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputError, match="--force"):
        reg.pull(result.reference, tmp_path / "exists", retry=FAST)
    reg.pull(result.reference, tmp_path / "exists", force=True, retry=FAST)
    assert (tmp_path / "exists" / "manifest.json").is_file()
    with pytest.raises(RegistryError, match="not in registry"):
        reg.pull(f"oci://{open_registry.host}/team/tiny:nope", tmp_path / "nope", retry=FAST)


# ----------------------------------------------------------------------------------------- htpasswd registry


def test_auth_registry_with_good_bad_and_no_credentials(auth_registry, artifact, tmp_path, monkeypatch):
    target = f"oci://{auth_registry.host}/team/tiny"
    with pytest.raises(RegistryError, match="requires credentials") as info:
        reg.publish(artifact, target, retry=FAST)
    assert reg.USER_ENV in info.value.hint
    monkeypatch.setenv(reg.USER_ENV, AUTH_USER)
    monkeypatch.setenv(reg.PASSWORD_ENV, "wrong-password")
    with pytest.raises(RegistryError, match="refused the credentials") as info:
        reg.publish(artifact, target, retry=FAST)
    assert "wrong-password" not in str(info.value)
    monkeypatch.setenv(reg.PASSWORD_ENV, AUTH_PASSWORD)
    (result,) = reg.publish(artifact, target, retry=FAST)
    assert result.status == "pushed"
    assert auth_registry.tags("team/tiny", auth=(AUTH_USER, AUTH_PASSWORD)) == [f"{SHA12}-onnx"]
    reg.pull(result.reference, tmp_path / "pulled", retry=FAST)
    assert (tmp_path / "pulled/onnx/model.onnx").read_bytes() == (artifact / "onnx/model.onnx").read_bytes()


def test_auth_registry_with_docker_config_credentials(auth_registry, artifact, tmp_path):
    cfg = Path(os.environ["DOCKER_CONFIG"])
    cfg.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth}}}))
    (result,) = reg.publish(artifact, f"oci://{auth_registry.host}/team/tiny", retry=FAST)
    assert reg.pull(result.reference, tmp_path / "pulled", retry=FAST).files == 5


# ----------------------------------------------------------------------------------------- CLI


def test_cli_never_shows_or_stores_credentials(auth_registry, artifact, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    target = f"oci://{auth_registry.host}/team/tiny"
    monkeypatch.setenv(reg.USER_ENV, AUTH_USER)
    monkeypatch.setenv(reg.PASSWORD_ENV, AUTH_PASSWORD)
    pkg = invoke("package", str(artifact), "--out", str(tmp_path / "p.tar"))
    pub = invoke("publish", str(artifact), target)
    again = invoke("publish", str(artifact), target)
    pulled = invoke("pull", f"{target}:{SHA12}-onnx", str(tmp_path / "pulled"))
    assert [r.code for r in (pkg, pub, again, pulled)] == [0, 0, 0, 0], [r.err for r in (pub, pulled)]
    assert pub.out.startswith("pushed onnx: ") and again.out.startswith("unchanged onnx: ")
    assert pulled.out.startswith("pulled onnx: 5 files")
    monkeypatch.setenv(reg.PASSWORD_ENV, AUTH_PASSWORD + "-wrong")
    bad = invoke("publish", str(artifact), f"{target}:other")
    assert bad.code == 1 and bad.err.startswith("Error: ")  # a RegistryError, one line
    outputs = [text for r in (pkg, pub, again, pulled, bad) for text in (r.out, r.err)] + [caplog.text]
    secrets = (AUTH_PASSWORD, base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode())
    for text in outputs:
        assert not any(s in text for s in secrets)
    stored = [tmp_path / "p.tar", *(p for p in (tmp_path / "pulled").rglob("*") if p.is_file())]
    stored += [p for p in auth_registry.root.rglob("*") if p.is_file()]
    for path in stored:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secrets), path


# ----------------------------------------------------------------------------------------- real export


@pytest.mark.slow
def test_exported_artifact_round_trip_loads(open_registry, tiny_model_dir, tmp_path):
    """Export the tiny model through the real pipeline, publish, pull, and serve what was pulled."""
    import subprocess
    import sys

    from tests import hub_fixtures as hf

    hf.seed_tiny(tiny_model_dir)
    folder = tmp_path / "exported"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "export", f"{hf.TINY_REPO}@{hf.TINY_SHA}", "--out", str(folder)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    from sentence_transformers import SentenceTransformer

    from exporter import runtime

    manifest = mf.load(folder)
    variant = next(v for v in manifest["variants"] if v["status"] == "passed")
    private, public = make_keypair(tmp_path, "release")
    (result,) = reg.publish(folder, f"oci://{open_registry.host}/e2e/model", variant=variant["id"], sign_key=private)
    dest = tmp_path / "pulled"
    pulled = reg.pull(result.reference, dest, policy=key_policy([public]))
    assert [line.split(",")[0] for line in pulled.trust] == ["signature: verified", "attestation: verified"]
    for rel in (f["path"] for f in manifest["shared_files"] + variant["files"]):
        assert (dest / rel).read_bytes() == (folder / rel).read_bytes()
    kwargs = {"file_name": variant["load"]["file_name"]}
    model = SentenceTransformer(str(dest), backend=variant["load"]["backend"], model_kwargs=kwargs, device="cpu")
    texts = ["hello world", "the quick brown fox"]
    served = runtime.load(dest, variant["load"]["file_name"]).encode(texts)
    import numpy as np

    assert np.allclose(model.encode(texts), served, atol=1e-5)
