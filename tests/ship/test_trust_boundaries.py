"""What the tool trusts and records about artifacts it did not just build: signatures in re-exported
artifacts, signing keys read once and checked, variant file names that would leave the artifact, and the
precision a ModelPack config states for bf16 variants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporter.errors import IntegrityError
from exporter.ship import modelpack


def _narrowed(variant: dict) -> dict:
    return {
        "variants": [variant],
        "source": {"repo": "org/model", "revision": "a" * 40},
        "created_at": "2026-01-01T00:00:00Z",
        "tool_version": "0.0.0",
        "model": {"kind": "sentence-transformer"},
    }


@pytest.mark.parametrize(
    ("variant_precision", "build", "expected"),
    [("fp16", {"precision": "bf16"}, "bf16"), ("fp16", {"precision": "fp16"}, "fp16"), ("fp32", {}, "fp32")],
)
def test_modelpack_precision_is_the_recorded_build_precision(variant_precision, build, expected):
    variant = {"id": "openvino-x", "backend": "openvino", "precision": variant_precision, "build": build}
    config = json.loads(modelpack.config_bytes(_narrowed(variant), [{"sha256": "0" * 64}]))["config"]
    assert config["precision"] == expected


@pytest.mark.parametrize("file_name", ["../x.onnx", "/abs/x.onnx", "onnx/../../x.onnx"])
def test_runtime_refuses_a_file_name_outside_the_artifact(tmp_path_factory, tmp_path, file_name):
    from exporter import runtime
    from tests.builders.test_onnx import exported_tiny

    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    art = Path(shutil.copytree(art, tmp_path / "art"))
    shutil.copy(art / "onnx" / "model.onnx", tmp_path / "x.onnx")  # a loadable graph outside the artifact
    with pytest.raises(IntegrityError, match="unsafe file path"):
        runtime.load(art, file_name=file_name)


def test_runtime_refuses_a_link_out_of_the_artifact(tmp_path_factory, tmp_path):
    from exporter import runtime
    from tests.builders.test_onnx import exported_tiny

    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    art = Path(shutil.copytree(art, tmp_path / "art"))
    shutil.copy(art / "onnx" / "model.onnx", tmp_path / "x.onnx")
    (art / "onnx" / "link.onnx").symlink_to(tmp_path / "x.onnx")
    with pytest.raises(IntegrityError, match="leads outside"):
        runtime.load(art, file_name="onnx/link.onnx")


def test_unencrypted_key_signs_even_with_a_password_set(tmp_path, monkeypatch):
    from exporter.ship import signing
    from tests.signing_keys import make_keypair

    private, public = make_keypair(tmp_path, "plain")
    monkeypatch.setenv(signing.PASSWORD_ENV, "not-needed")
    _, fingerprint = signing.load_signer(private)
    assert fingerprint == signing.load_public_key(public).fingerprint


def test_private_key_is_read_once_from_a_checked_descriptor(tmp_path, monkeypatch):
    from exporter.errors import UsageError
    from exporter.ship import signing
    from tests.signing_keys import make_keypair

    private, public = make_keypair(tmp_path, "k")
    link = tmp_path / "link.pem"
    link.symlink_to(private)
    with pytest.raises(UsageError, match="symbolic link"):
        signing.load_signer(link)

    def no_second_read(self):
        raise AssertionError(f"{self} read again by path")

    monkeypatch.setattr(Path, "read_bytes", no_second_read)
    signer, _ = signing.load_signer(private)
    monkeypatch.undo()
    statement = {"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x", "predicate": {}}
    bundle = signing.sign_statement(statement, signer)
    got, key = signing.verify_statement(bundle, signing.key_policy([public]), "the bundle")
    assert got["predicateType"] == "x" and key.path == public


def test_untrusted_bundle_without_key_hint_names_no_none(tmp_path):
    from exporter.ship import signing
    from tests.signing_keys import make_keypair

    private, _ = make_keypair(tmp_path, "signer")
    _, other_public = make_keypair(tmp_path, "other")
    signer, _ = signing.load_signer(private)
    statement = {"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x", "predicate": {}}
    doc = json.loads(signing.sign_statement(statement, signer))
    del doc["verificationMaterial"]["publicKey"]["hint"]
    with pytest.raises(IntegrityError, match="signed by an unnamed key") as err:
        signing.verify_statement(json.dumps(doc).encode(), signing.key_policy([other_public]), "the bundle")
    assert "None" not in err.value.message


def test_signed_artifact_resumes_and_may_be_replaced(tiny_model_dir, tmp_path):
    from exporter import outdir
    from tests import hub_fixtures as hf
    from tests.cli_runner import invoke
    from tests.signing_keys import make_keypair

    hf.seed_tiny(tiny_model_dir)
    pinned, out = f"{hf.TINY_REPO}@{hf.TINY_SHA}", tmp_path / "art"
    assert invoke("export", pinned, "--out", str(out), "--variants", "onnx").code == 0
    signed = invoke("sign", str(out), "--key", str(make_keypair(tmp_path, "k")[0]))
    assert signed.code == 0, signed.err
    assert any((out / "signatures").iterdir())
    assert outdir.foreign_content(out) is None  # `pull --force` / `export --force` may replace it
    resumed = invoke("export", pinned, "--out", str(out), "--variants", "onnx")
    assert resumed.code == 0, resumed.err
    assert any((out / "signatures").iterdir())  # nothing rebuilt: the bundles still sign these files


def test_a_rebuild_drops_the_signatures_its_new_manifest_makes_stale(tmp_path):
    from exporter.artifact import remove_stale_files

    stage = tmp_path / "stage"  # what staged_dir(clone=True) holds: the old artifact, hard-linked
    (stage / "signatures").mkdir(parents=True)
    (stage / "signatures" / "onnx.model.sigstore.json").write_text("{}")
    (stage / "onnx").mkdir()
    (stage / "onnx" / "model.onnx").write_bytes(b"graph")
    remove_stale_files(stage, {"onnx": {"files": [{"path": "onnx/model.onnx"}]}})
    assert not (stage / "signatures").exists() and (stage / "onnx" / "model.onnx").is_file()
