"""Signed ModelPack artifacts on a real registry with htpasswd auth: sign, publish, inspect, promote, pull.

Every tamper case must exit 4 and write nothing; keys are never printed; loose private keys are refused;
an independent ModelPack client (``modelpack-client``) pulls what we publish, and we pull what it pushes.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from exporter import manifest as mf
from exporter.ship import attestation, modelpack, referrers
from exporter.ship import registry as reg
from exporter.ship.oci_client import RegistryClient
from exporter.ship.oci_docs import INDEX_MEDIA_TYPE
from exporter.ship.signing import BUNDLE_MEDIA_TYPE
from tests.artifact_factory import REVISION, SHA12, make_artifact, verify_report
from tests.cli_runner import invoke
from tests.registry_server import AUTH_PASSWORD, AUTH_USER, running_registry
from tests.signing_keys import make_keypair

CREDS = (AUTH_USER, AUTH_PASSWORD)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with running_registry(tmp_path_factory.mktemp("registry-signed"), {AUTH_USER: AUTH_PASSWORD}) as server:
        yield server


@pytest.fixture(autouse=True)
def _credentials(monkeypatch, tmp_path):
    monkeypatch.setenv(reg.USER_ENV, AUTH_USER)
    monkeypatch.setenv(reg.PASSWORD_ENV, AUTH_PASSWORD)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("EXPORTER_SIGN_KEY_PASSWORD", raising=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: make_keypair(folder, name) for name in ("release", "other")}


@pytest.fixture
def artifact(tmp_path) -> Path:
    return make_artifact(tmp_path / "art" / SHA12, recommended="onnx")


def _cli(*args: str):
    return invoke(*[str(a) for a in args])


def _nothing_at(dest: Path) -> None:
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")] == []


def _key_secrets(private: Path) -> list[str]:
    """Text that would show a private key was printed: its PEM body lines."""
    return [line for line in private.read_text().splitlines() if line and not line.startswith("-----")]


# ----------------------------------------------------------------------------------------- the whole flow


def test_sign_publish_inspect_promote_pull(registry, artifact, keys, tmp_path):
    private, public = keys["release"]
    host = registry.host
    candidate, prod, serving = (
        f"oci://{host}/team/e2e:candidate",
        f"oci://{host}/team/e2e:prod",
        f"oci://{host}/serving/e2e:prod",
    )
    outputs = []
    signed = _cli("sign", artifact, "--key", private, "--verified", verify_report(artifact))
    assert signed.code == 0, signed.err
    assert signed.out.startswith("signed onnx: 6 files, key ")
    assert mf.check_files(artifact, mf.load(artifact)).ok  # the bundles are not "unlisted model files"
    pub = _cli("publish", artifact, candidate)  # attaches the bundles `sign` left in the artifact
    assert pub.code == 0, pub.err
    assert "signed by key" in pub.out
    digest = pub.out.split("@", 1)[1].split(",", 1)[0]
    # the referrers sit under the sha256-<hex> fallback tag (docker-registry 2.8 has no referrers API)
    assert sorted(registry.tags("team/e2e", auth=CREDS)) == ["candidate", referrers.fallback_tag(digest)]

    again = _cli("publish", artifact, candidate, "--sign-key", private, "--verified", verify_report(artifact))
    # same key, same statements: nothing new attached
    assert again.code == 0 and again.out.startswith("unchanged onnx: ")
    client = RegistryClient(host, credentials=reg.Credentials(*CREDS))
    assert len(referrers.listed(client, "team/e2e", digest)) == 2

    unverified = _cli("inspect", candidate)
    verified = _cli("inspect", candidate, "--verify-key", public)
    as_json = _cli("inspect", candidate, "--verify-key", public, "--json")
    assert [r.code for r in (unverified, verified, as_json)] == [0, 0, 0], verified.err
    assert "not verified" in unverified.out and "parity passed, cosine_min 0.99990" in unverified.out
    assert "signature: verified, key release.pub" in verified.out
    assert "attestation: verified, key release.pub" in verified.out
    info = json.loads(as_json.out)
    assert info["digest"] == digest and info["encoding"] == "modelpack" and info["variant"] == "onnx"
    assert info["config"]["descriptor"]["revision"] == REVISION
    assert {r["predicateType"] for r in info["referrers"]} == {attestation.PREDICATE_TYPE, reg_sig_type()}

    same_repo = _cli("promote", candidate, prod, "--verify-key", public)
    other_repo = _cli("promote", candidate, serving, "--verify-key", public)
    assert [same_repo.code, other_repo.code] == [0, 0], other_repo.err
    assert "no blob copied" in same_repo.out and "7 blobs mounted" in other_repo.out
    assert client.manifest_digest("team/e2e", "prod") == digest == client.manifest_digest("serving/e2e", "prod")

    dest = tmp_path / "pulled"
    pulled = _cli("pull", serving, dest, "--verify-key", public)
    assert pulled.code == 0, pulled.err
    assert pulled.out.startswith("pulled onnx: 5 files") and "attestation: verified" in pulled.out
    narrowed = mf.narrow(mf.load(artifact), "onnx")
    for rel in mf.listed_files(narrowed):
        assert (dest / rel).read_bytes() == (artifact / rel).read_bytes()
    # model_signing's own verifier accepts the signature for the pulled folder
    from model_signing import verifying

    sig = tmp_path / "model.sig"
    sig.write_bytes((artifact / "signatures" / "onnx.model.sigstore.json").read_bytes())
    verifying.Config().use_elliptic_key_verifier(public_key=public).verify(dest, sig)

    outputs += [
        r.out + r.err for r in (signed, pub, again, unverified, verified, as_json, same_repo, other_repo, pulled)
    ]
    for text in outputs:
        assert not any(secret in text for secret in _key_secrets(private))


def reg_sig_type() -> str:
    from exporter.ship.signing import SIGNATURE_PREDICATE

    return SIGNATURE_PREDICATE


# ----------------------------------------------------------------------------------------- tamper cases


def _publish_signed(registry, artifact, repo: str, key: Path, policy=None) -> tuple[str, str]:
    report = verify_report(artifact, policy=policy)
    (result,) = reg.publish(artifact, f"oci://{registry.host}/{repo}:t", sign_key=key, policy=policy, verified=report)
    assert result.signed
    return result.reference, result.digest


def _alter_blob(registry, artifact, keys, ref, digest):
    rec = next(r for r in mf.load(artifact)["variants"][0]["files"] if r["path"] == "onnx/model.onnx")
    blob = registry.blob_path(f"sha256:{rec['sha256']}")
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))


def _alter_attestation(registry, artifact, keys, ref, digest):
    """Edit the attestation's payload (keep its signature) and make it the only one listed."""
    client = RegistryClient(registry.host, credentials=reg.Credentials(*CREDS))
    repo = ref.split("/", 3)[3].split(":")[0]
    listed = referrers.listed(client, repo, digest)
    kept, forged = [], None
    for desc in listed:
        bundle = json.loads(referrers.fetch_bundle(client, repo, desc, digest))
        stmt = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        if stmt["predicateType"] != attestation.PREDICATE_TYPE:
            kept.append(desc)
            continue
        stmt["predicate"]["parity"]["cosine_min"] = 0.99999
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
        forged = json.dumps(bundle).encode()
    subject = {
        "mediaType": reg.MANIFEST_MEDIA_TYPE,
        "digest": digest,
        "size": len(client.get_manifest(repo, digest)[0]),
    }
    client.put_manifest(
        repo,
        referrers.fallback_tag(digest),
        json.dumps({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": kept}).encode(),
        INDEX_MEDIA_TYPE,
    )
    referrers.attach(client, repo, subject, forged, attestation.PREDICATE_TYPE)
    assert len(referrers.listed(client, repo, digest)) == 2


@pytest.mark.parametrize(
    ("case", "signer", "verify", "tamper", "match"),
    [
        ("blob", "release", "key", _alter_blob, "does not match its digest"),
        ("attestation", "release", "key", _alter_attestation, "no fidelity attestation by a trusted key"),
        ("other-key", "other", "key", None, "no signature by a trusted key"),
        ("unsigned", None, "policy", None, "no signature by a trusted key"),
    ],
)
def test_tampered_artifacts_exit_4_and_write_nothing(registry, keys, tmp_path, case, signer, verify, tamper, match):
    repo = f"tamper/{case}"
    artifact = make_artifact(tmp_path / "art" / SHA12, recommended="onnx", seed=case)  # blobs of its own
    if signer:
        ref, digest = _publish_signed(registry, artifact, repo, keys[signer][0])
    else:
        (result,) = reg.publish(artifact, f"oci://{registry.host}/{repo}:t")
        ref, digest = result.reference, result.digest
    if tamper:
        tamper(registry, artifact, keys, ref, digest)
    if verify == "policy":
        policy = tmp_path / "policy.json"
        shutil.copy(keys["release"][1], tmp_path / "release.pub")
        policy.write_text(json.dumps({"trusted_keys": [{"name": "release", "public_key": "release.pub"}]}))
        args = ["--policy", policy]
    else:
        args = ["--verify-key", keys["release"][1]]
    dest = tmp_path / "pulled"
    result = _cli("pull", ref, dest, *args)
    assert result.code == 4, (result.out, result.err)
    assert match in result.err and result.err.count("\n") == 1
    _nothing_at(dest)
    if case != "blob":  # promote reads no layer, so only pull can see bytes altered in storage
        promoted = _cli("promote", ref, f"oci://{registry.host}/{repo}:prod", *args)
        assert promoted.code == 4 and "prod" not in registry.tags(repo, auth=CREDS)


def test_fleet_policy_trusts_any_named_key_and_reads_flags(registry, artifact, keys, tmp_path):
    ref, _ = _publish_signed(registry, artifact, "fleet/model", keys["other"][0])
    for name in ("release", "other"):
        shutil.copy(keys[name][1], tmp_path / f"{name}.pub")
    policy = tmp_path / "fleet.json"
    policy.write_text(
        json.dumps(
            {
                "trusted_keys": [
                    {"name": "ci-release", "public_key": "release.pub"},
                    {"name": "ci-other", "public_key": "other.pub"},
                ]
            }
        )
    )
    ok = _cli("pull", ref, tmp_path / "pulled", "--policy", policy)
    assert ok.code == 0, ok.err
    assert "signature: verified, key ci-other" in ok.out
    bad = tmp_path / "bad.json"
    for doc, code in (({"trusted_keys": []}, 2), ({"trusted_keys": [{"public_key": "missing.pub"}]}, 2)):
        bad.write_text(json.dumps(doc))
        assert _cli("pull", ref, tmp_path / "x", "--policy", bad).code == code


def test_failed_parity_attestation_is_refused_with_exit_3(registry, tmp_path, keys):
    art = make_artifact(tmp_path / "art" / SHA12, failed=("onnx-qint8",))
    (result,) = reg.publish(
        art,
        f"oci://{registry.host}/failed/model:t",
        variant="onnx-qint8",
        allow_failed=True,
        sign_key=keys["release"][0],
        verified=verify_report(art),
    )
    pulled = _cli("pull", result.reference, tmp_path / "pulled", "--verify-key", keys["release"][1])
    assert pulled.code == 3 and "parity did not pass" in pulled.err
    gate = _cli("inspect", result.reference, "--verify-key", keys["release"][1])  # a CI gate's question
    assert gate.code == 3
    _nothing_at(tmp_path / "pulled")


def test_policy_refuses_attested_thresholds_looser_than_its_own_with_exit_3(registry, artifact, keys, tmp_path):
    """pull/promote --verify-key --policy: signed under a lax policy (cosine_min 0.999 for an fp32 graph), the
    attestation records that policy's digest and thresholds, looser than the default policy's 0.9999: refused,
    exit 3, nothing written; a policy that asks no more than the attestation accepts it. Without --policy
    nothing changes. A report judged under another policy than the one in force is not attested (exit 2)."""
    from exporter.quality.policy import Policy
    from exporter.ship.sign_artifact import bundle_path
    from exporter.ship.signing import unverified_statement

    private, pub = keys["release"]
    strict, lax = tmp_path / "strict.yaml", tmp_path / "lax.json"
    strict.write_text("thresholds: {}\n")
    lax.write_text(json.dumps({"thresholds": {"fp32": {"cosine_min": 0.999}}}))
    report = verify_report(artifact, policy=Policy.load(lax))
    other = _cli("sign", artifact, "--key", private, "--verified", report)  # in force: the defaults
    assert other.code == 2 and "not the policy in force" in other.err
    assert _cli("sign", artifact, "--key", private, "--policy", lax, "--verified", report).code == 0
    path = bundle_path(artifact, "onnx", "fidelity")
    predicate = unverified_statement(path.read_bytes(), str(path))["predicate"]
    assert predicate["policy"] == Policy.load(lax).record("sentence-transformer", "fp32", "onnx")
    ref = f"oci://{registry.host}/policy/model:t"
    assert _cli("publish", artifact, ref).code == 0
    refused = _cli("pull", ref, tmp_path / "pulled", "--verify-key", pub, "--policy", strict)
    assert refused.code == 3, refused.err
    assert "cosine_min >= 0.999 is looser than the policy's 0.9999" in refused.err
    _nothing_at(tmp_path / "pulled")
    promote = _cli("promote", ref, f"oci://{registry.host}/policy/model:prod", "--verify-key", pub, "--policy", strict)
    assert promote.code == 3, promote.err
    assert _cli("pull", ref, tmp_path / "ok", "--verify-key", pub, "--policy", lax).code == 0
    assert _cli("pull", ref, tmp_path / "plain", "--verify-key", pub).code == 0
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trusted_key: []\n")
    bad = _cli("pull", ref, tmp_path / "x", "--verify-key", pub, "--policy", unknown)
    assert bad.code == 2 and "unknown key(s): trusted_key" in bad.err and "trusted_keys" in bad.err


def test_loose_or_wrong_keys_are_refused_in_one_line_without_printing_them(registry, artifact, keys, tmp_path):
    private, public = keys["release"]
    loose = tmp_path / "loose.pem"
    shutil.copy(private, loose)
    loose.chmod(0o640)
    target = f"oci://{registry.host}/keys/model:t"
    for args in (("sign", artifact, "--key", loose), ("publish", artifact, target, "--sign-key", loose)):
        result = _cli(*args)
        assert result.code == 2 and "readable by group or others (mode 0640)" in result.err
        assert "chmod 600" in result.err and result.err.count("\n") == 1
        assert not any(s in result.err + result.out for s in _key_secrets(private))
    assert registry.tags("keys/model", auth=CREDS) == []
    assert not (artifact / "signatures").exists()
    public_copy = tmp_path / "public-as-private.pem"
    shutil.copy(public, public_copy)
    public_copy.chmod(0o600)
    as_private = _cli("sign", artifact, "--key", public_copy)  # a public key is not a signing key
    assert as_private.code == 2 and "not a usable" in as_private.err
    as_public = _cli("pull", target, tmp_path / "p", "--verify-key", private)
    assert as_public.code == 2 and "not a PEM public key" in as_public.err
    assert not any(s in as_public.err for s in _key_secrets(private))


def test_encrypted_key_takes_its_password_from_the_environment(artifact, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "enc.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass-phrase-not-printed"),
        )
    )
    key.chmod(0o600)
    locked = _cli("sign", artifact, "--key", key)
    assert locked.code == 2 and "EXPORTER_SIGN_KEY_PASSWORD" in locked.err
    monkeypatch.setenv("EXPORTER_SIGN_KEY_PASSWORD", "wrong")
    assert _cli("sign", artifact, "--key", key).code == 2
    monkeypatch.setenv("EXPORTER_SIGN_KEY_PASSWORD", "pass-phrase-not-printed")
    unlocked = _cli("sign", artifact, "--key", key, "--variants", "all", "--verified", verify_report(artifact))
    assert unlocked.code == 0 and unlocked.out.count("signed ") == 2
    assert "pass-phrase" not in locked.err + unlocked.out


def test_stale_signature_is_not_attached(registry, artifact, keys):
    assert _cli("sign", artifact, "--key", keys["release"][0], "--verified", verify_report(artifact)).code == 0
    manifest = mf.load(artifact)
    manifest["created_at"] = "2026-11-27T00:00:00Z"  # the manifest.json that travels changes
    mf.save(artifact, manifest)
    result = _cli("publish", artifact, f"oci://{registry.host}/stale/model:t")
    assert result.code == 4 and "signs other files" in result.err


# ----------------------------------------------------------------------------------------- modelpack-client


def _docker_config(tmp_path: Path, host: str) -> Path:
    path = tmp_path / "modelpack-auth.json"
    auth = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def test_modelpack_client_pulls_and_validates_what_we_publish(registry, artifact, tmp_path):
    from modelpack_client import ModelPackClient
    from modelpack_client.schema import CONFIG_SCHEMA

    (result,) = reg.publish(artifact, f"oci://{registry.host}/interop/ours:v1")
    got = ModelPackClient(insecure=True, auth_backend="basic").pull(
        f"{registry.host}/interop/ours:v1", tmp_path / "mp", config_path=_docker_config(tmp_path, registry.host)
    )
    jsonschema.Draft202012Validator(CONFIG_SCHEMA).validate(got.config)
    assert got.config["descriptor"]["revision"] == REVISION
    assert (got.config["config"]["format"], got.config["config"]["precision"]) == ("onnx", "fp32")
    assert got.manifest["artifactType"] == modelpack.ARTIFACT_TYPE
    narrowed = mf.narrow(mf.load(artifact), "onnx")
    for rel in mf.listed_files(narrowed):
        assert (tmp_path / "mp" / rel).read_bytes() == (artifact / rel).read_bytes()
    assert json.loads((tmp_path / "mp" / "manifest.json").read_bytes()) == narrowed
    assert reg.pull(result.reference, tmp_path / "again").digest == result.digest


def test_we_pull_what_modelpack_client_pushed(registry, tiny_model_dir, keys, tmp_path):
    from modelpack_client import ModelLayer, ModelPackClient, ModelPackConfig
    from modelpack_client.models import ModelDescriptor, ModelTechnicalConfig

    files = sorted(p for p in tiny_model_dir.rglob("*") if p.is_file())
    layers = [
        ModelLayer(
            p, media_type=modelpack.layer_media_type(p.name), artifact_path=p.relative_to(tiny_model_dir).as_posix()
        )
        for p in files
    ]
    config = ModelPackConfig(
        ModelDescriptor(name="tiny-st", revision="local"), ModelTechnicalConfig(format="safetensors")
    )
    ModelPackClient(insecure=True, auth_backend="basic").push(
        f"{registry.host}/interop/theirs:v1", layers, config, config_path=_docker_config(tmp_path, registry.host)
    )
    ref = f"oci://{registry.host}/interop/theirs:v1"
    dest = tmp_path / "pulled"
    result = _cli("pull", ref, dest)
    assert result.code == 0, result.err
    assert result.out.startswith(f"pulled modelpack artifact: {len(files)} files")
    for p in files:
        assert (dest / p.relative_to(tiny_model_dir)).read_bytes() == p.read_bytes()
    unsigned = _cli("pull", ref, tmp_path / "verified", "--verify-key", keys["release"][1])
    assert unsigned.code == 4 and "no signature" in unsigned.err
    info = _cli("inspect", ref)
    assert info.code == 0 and "(modelpack, variant -)" in info.out and BUNDLE_MEDIA_TYPE not in info.out


# ----------------------------------------------------------------------------------------- hostile ModelPack


def _path_of(index: int, path: str):
    def edit(doc):
        doc["layers"][index]["annotations"][modelpack.FILEPATH] = path

    return edit


def _swap_first_two(doc):
    doc["layers"][0], doc["layers"][1] = doc["layers"][1], doc["layers"][0]


def _as_tar(doc):
    doc["layers"][0]["mediaType"] = "application/vnd.cncf.model.weight.v1.tar"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_path_of(0, "../evil"), "unsafe"),
        (_path_of(0, "/etc/evil"), "unsafe"),
        (_path_of(0, "manifest.json/x"), "as a folder"),
        (_swap_first_two, "diffIds do not match"),
        (_as_tar, "tar layers are not read"),
    ],
    ids=["dotdot", "absolute", "manifest-folder", "diffids", "tar"],
)
def test_hostile_modelpack_manifests_are_refused_writing_nothing(registry, artifact, tmp_path, edit, match):
    import requests

    (result,) = reg.publish(artifact, f"oci://{registry.host}/hostile/model:honest")
    url = f"{registry.url}/v2/hostile/model/manifests"
    headers = {"Accept": reg.MANIFEST_MEDIA_TYPE}
    doc = requests.get(f"{url}/honest", headers=headers, auth=CREDS, timeout=5).json()
    edit(doc)
    put = requests.put(
        f"{url}/evil",
        data=json.dumps(doc).encode(),
        headers={"Content-Type": reg.MANIFEST_MEDIA_TYPE},
        auth=CREDS,
        timeout=5,
    )
    put.raise_for_status()
    dest = tmp_path / "pulled"
    pulled = _cli("pull", f"oci://{registry.host}/hostile/model:evil", dest)
    assert pulled.code == 4 and match in pulled.err, pulled.err
    _nothing_at(dest)
    assert not (tmp_path / "evil").exists()
