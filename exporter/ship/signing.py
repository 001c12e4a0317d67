"""Sign and verify a variant's files with OpenSSF ``model-signing`` (elliptic-curve keys), and key policy.

The signature is exactly what ``model_signing sign key`` writes for the pulled folder: a Sigstore bundle
(``application/vnd.dev.sigstore.bundle.v0.3+json``) holding a DSSE envelope around an in-toto statement
of predicate type ``https://model_signing/signature/v1.0`` listing every file's sha256. It is built from
the sha256 values the manifest records (checked against the bytes just before), so the variant's files
need not be copied into a folder of their own; ``model_signing verify key`` on a pulled folder accepts it.

Keys: PEM elliptic-curve keys (P-256/384/521), as ``openssl ecparam -name prime256v1 -genkey`` makes.
A private key readable by group or others is refused; an encrypted one takes its password from
``EXPORTER_SIGN_KEY_PASSWORD``. No message ever holds key material: keys are named by path and by
fingerprint (the sha256 of the public key's PEM, which the bundle carries as its key hint).

A policy file (YAML or JSON, ``exporter.quality.policy``) names the keys a fleet trusts::

    {"trusted_keys": [{"name": "release-ci", "public_key": "keys/release.pub"}],
     "require_signature": true, "require_attestation": true, "require_parity_passed": true,
     "thresholds": {"int8": {"cosine_min": 0.995}}}

Paths are relative to the policy file. ``--verify-key PUB`` is the same policy with one key; given with a
policy file that names no keys, the file's thresholds still apply. A policy file with ``thresholds`` (``{}``:
the kind's defaults) refuses an attestation whose thresholds are looser than the policy's (exit 3, as
``verify`` fails such a manifest); one without that key checks signatures and the verdict only.

Pinned internals of model-signing 1.1.1 used here (no public API does these): ``manifest._FileSerialization``
(to build the signed manifest from known digests) and ``Verifier._verify_signed_content`` (the DSSE check
alone, for statements that are not model_signing's own, i.e. the fidelity attestation), and
``sign_ec_key.Signer._private_key`` (to sign with the key bytes read once, not a path read again).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from exporter.errors import IntegrityError, UsageError
from exporter.user_files import open_user_file

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGNATURE_PREDICATE = "https://model_signing/signature/v1.0"
PASSWORD_ENV = "EXPORTER_SIGN_KEY_PASSWORD"
_MAX_KEY = 64 << 10
POLICY_MAX_BYTES = 64 << 10  # a policy names a few keys and flags


@dataclass(frozen=True)
class TrustedKey:
    name: str
    path: Path
    fingerprint: str  # sha256 of the public key PEM (the bundle's key hint)


@dataclass(frozen=True)
class Policy:
    keys: tuple[TrustedKey, ...]
    require_signature: bool = True
    require_attestation: bool = True
    require_parity_passed: bool = True
    fidelity: object | None = None  # exporter.quality.policy.Policy: attested thresholds may not be looser

    def describe(self) -> str:
        return ", ".join(f"{k.name} ({k.fingerprint[:16]})" for k in self.keys)


def _read_key_file(path: Path, private: bool) -> bytes:
    """The bytes of a key file, read from ONE descriptor that was checked (a private key: not a link)."""
    what = "private key" if private else "public key"
    with open_user_file(path, what=what, max_bytes=_MAX_KEY, no_links=private) as (handle, st):
        if private and st.st_mode & 0o077:
            raise UsageError(
                f"private key {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}).",
                f"Run `chmod 600 {path}` and keep it private.",
            )
        return handle.read(_MAX_KEY + 1)


def _public_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path: Path, name: str | None = None) -> TrustedKey:
    """A trusted public key (checked to be a supported EC key); its fingerprint is what bundles name."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path)
    data = _read_key_file(path, private=False)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise UsageError(f"{path} is not a PEM public key.", "Pass the .pub file made from the key.") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise UsageError(f"public key {path} is not a P-256/384/521 elliptic-curve key.", _KEY_HINT)
    return TrustedKey(name or path.name, path, hashlib.sha256(_public_pem(key)).hexdigest())


_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_KEY_HINT = "Make one with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`."


def load_signer(path: Path) -> tuple[Any, str]:
    """model_signing's EC signer for ``path`` after checking its permissions; (signer, fingerprint).

    The key is read once (see ``_read_key_file``) and handed to the signer as a key object, so the file
    that was checked is the one that signs.
    """
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _read_key_file(path, private=True)
    password = os.environ.get(PASSWORD_ENV)
    secret = password.encode() if password else None
    try:
        try:
            key = serialization.load_pem_private_key(data, secret)
        except TypeError:
            if secret is None:
                raise
            key = serialization.load_pem_private_key(data, None)  # not encrypted: the password is not needed
    except TypeError as exc:
        raise UsageError(f"private key {path} is encrypted.", f"Set {PASSWORD_ENV}.") from exc
    except ValueError as exc:
        raise UsageError(f"{path} is not a usable PEM private key (or the password is wrong).", _KEY_HINT) from exc
    if getattr(getattr(key, "curve", None), "name", None) not in _CURVES:
        raise UsageError(f"private key {path} is not a P-256/384/521 elliptic-curve key.", _KEY_HINT)
    return _key_signer(key), hashlib.sha256(_public_pem(key.public_key())).hexdigest()


def _key_signer(key):
    """``sign_ec_key.Signer`` around a loaded key (its constructor only reads a path, which we already did)."""
    from model_signing._signing import sign_ec_key

    class _LoadedKeySigner(sign_ec_key.Signer):
        def __init__(self, private_key) -> None:  # noqa: D107 - no super().__init__: it would re-read a file
            self._private_key = private_key
            sign_ec_key._check_supported_ec_key(private_key.public_key())

    return _LoadedKeySigner(key)


def load_policy(path: Path, verify_keys: list[Path] | None = None) -> Policy:
    """Read a policy file (see the module docstring); every key it names is loaded and checked. Its
    thresholds become ``Policy.fidelity``; ``verify_keys`` are the trusted keys when the file names none."""
    from exporter.quality import policy as fidelity

    path = Path(path)
    hint = 'Write it as {"trusted_keys": [{"name": "...", "public_key": "FILE.pub"}]}.'
    doc = fidelity.read_file(path)[1]
    rules = fidelity.Policy.load(path) if "thresholds" in doc else None  # ``thresholds: {}``: the defaults
    if verify_keys:
        if "trusted_keys" in doc:
            raise UsageError("pass --verify-key or name trusted_keys in the policy file, not both.", hint)
        return Policy(key_policy(verify_keys).keys, fidelity=rules)
    entries = doc.get("trusted_keys")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"policy file {path} names no trusted_keys.", hint)
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("public_key"), str):
            raise UsageError(f"policy file {path}: each trusted key needs a public_key path.", hint)
        keys.append(load_public_key(path.parent / entry["public_key"], str(entry.get("name") or entry["public_key"])))
    flags = {}
    for flag in ("require_signature", "require_attestation", "require_parity_passed"):
        value = doc.get(flag, True)
        if not isinstance(value, bool):
            raise UsageError(f"policy file {path}: {flag} must be true or false.", hint)
        flags[flag] = value
    return Policy(tuple(keys), **flags, fidelity=rules)


def key_policy(paths: list[Path]) -> Policy:
    return Policy(tuple(load_public_key(p) for p in paths))


# --------------------------------------------------------------------------------------------- signing


def _payload_manifest(files: dict[str, str], name: str):
    from model_signing import manifest as ms_manifest
    from model_signing._hashing import hashing as ms_hashing

    items = [
        ms_manifest.FileManifestItem(path=PurePosixPath(p), digest=ms_hashing.Digest("sha256", bytes.fromhex(h)))
        for p, h in sorted(files.items())
    ]
    return ms_manifest.Manifest(name, items, ms_manifest._FileSerialization("sha256", False))


def sign_files(files: dict[str, str], signer, name: str) -> bytes:
    """A model_signing bundle (JSON bytes) over ``files`` (relative path -> sha256 hex)."""
    from model_signing._signing import signing as ms_signing

    return signer.sign(ms_signing.Payload(_payload_manifest(files, name))).bundle.to_json().encode("utf-8")


def sign_statement(statement: dict, signer) -> bytes:
    """A Sigstore bundle with a DSSE envelope around any in-toto ``statement`` (model_signing's signer)."""
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2

    pb = json_format.ParseDict(statement, statement_pb2.Statement())
    holder = type("Payload", (), {"statement": type("Statement", (), {"pb": pb})()})()
    return signer.sign(holder).bundle.to_json().encode("utf-8")


def bundle_key_hint(bundle: bytes) -> str | None:
    try:
        return json.loads(bundle)["verificationMaterial"]["publicKey"]["hint"]
    except (ValueError, KeyError, TypeError):
        return None


def unverified_statement(bundle: bytes, where: str) -> dict:
    """The in-toto statement inside a bundle, WITHOUT checking its signature (to compare before publishing)."""
    try:
        return json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{where} is not a Sigstore bundle with a DSSE envelope.", "Re-sign it.") from exc


def verify_statement(bundle: bytes, policy: Policy, where: str) -> tuple[dict, TrustedKey]:
    """The in-toto statement of ``bundle`` once its DSSE signature verifies with a key the policy trusts."""
    from model_signing._signing import sign_ec_key
    from model_signing._signing import sign_sigstore_pb as sigstore_pb

    hint = bundle_key_hint(bundle)
    candidates = [k for k in policy.keys if k.fingerprint == hint] or list(policy.keys)
    with tempfile.TemporaryDirectory(prefix="exporter-bundle-") as tmp:
        path = Path(tmp) / "bundle.json"
        path.write_bytes(bundle)
        try:
            signature = sigstore_pb.Signature.read(path)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{where} is not a readable Sigstore bundle.", "Refusing it.") from exc
        for key in candidates:
            try:
                payload_type, payload = sign_ec_key.Verifier(key.path)._verify_signed_content(signature)
            except Exception:  # noqa: BLE001 - cryptography raises several types; any means "not this key"
                continue
            if payload_type != "application/vnd.in-toto+json":
                raise IntegrityError(f"{where} does not sign an in-toto statement.", "Refusing it.")
            try:
                return json.loads(payload), key
            except ValueError as exc:
                raise IntegrityError(f"{where} signs a payload that is not JSON.", "Refusing it.") from exc
    signer = f"key {str(hint)[:16]}" if hint else "an unnamed key (the bundle has no key hint)"
    raise IntegrityError(
        f"{where} is signed by {signer}, which is not trusted",
        f"Trusted: {policy.describe()}. Refusing it.",
    )


def signed_files(statement: dict, where: str) -> dict[str, str]:
    """path -> sha256 of a verified model_signing statement (file serialization with sha256 only)."""
    pred = statement.get("predicate") or {}
    ser = pred.get("serialization") or {}
    if statement.get("predicateType") != SIGNATURE_PREDICATE or ser.get("method") != "files":
        raise IntegrityError(f"{where} is not a model_signing file signature.", "Refusing it.")
    out = {}
    for res in pred.get("resources") or []:
        if not isinstance(res, dict) or res.get("algorithm") != "sha256" or res.get("name") in out:
            raise IntegrityError(f"{where} lists a file twice or not by sha256.", "Refusing it.")
        out[str(res.get("name"))] = str(res.get("digest"))
    return out


def verify_folder(folder: Path, bundle: bytes, key: TrustedKey) -> None:
    """model_signing's own verification of every file in ``folder`` against ``bundle`` (hashes the bytes)."""
    from model_signing import verifying

    with tempfile.TemporaryDirectory(prefix="exporter-bundle-") as tmp:
        sig = Path(tmp) / "model.sig"
        sig.write_bytes(bundle)
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=key.path).verify(folder, sig)
        except ValueError as exc:
            raise IntegrityError(
                f"the downloaded files do not match their signature ({str(exc)[:200]}).", "Nothing was written."
            ) from exc
