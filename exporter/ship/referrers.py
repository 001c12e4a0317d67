"""Signatures and attestations attached to a model manifest as OCI referrers, and checking them.

A referrer is an OCI image manifest with ``subject`` = the model manifest's descriptor, ``artifactType``
and its one layer = a Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``, as cosign
writes), the empty config, and ``dev.sigstore.bundle.predicateType`` naming what the bundle signs.
Listing uses the registry's referrers API and, where it has none (``docker-registry`` 2.8), the
``sha256-<hex>`` tag fallback: an image index under that tag listing every referrer (kept up to date on
every attach). Annotations are only hints: ``check`` trusts nothing it has not verified with a key the
policy names, and it runs on the manifest, before a single file is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field

from exporter.errors import FidelityError, IntegrityError
from exporter.ship import attestation
from exporter.ship.oci_client import RegistryClient
from exporter.ship.oci_docs import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE
from exporter.ship.oci_ref import DIGEST_RE
from exporter.ship.signing import BUNDLE_MEDIA_TYPE, SIGNATURE_PREDICATE, Policy, TrustedKey

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
_MAX_BUNDLE = 4 << 20


def fallback_tag(digest: str) -> str:
    return digest.replace(":", "-", 1)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attach(client: RegistryClient, repo: str, subject: dict, bundle: bytes, predicate_type: str) -> str:
    """Push ``bundle`` as a referrer of ``subject`` (a descriptor) and list it under the fallback tag."""
    for blob in (EMPTY, bundle):
        if not client.blob_exists(repo, _digest(blob)):
            client.upload_blob(repo, _digest(blob), len(blob), functools.partial(bytes, blob))
    annotations = {PREDICATE_ANNOTATION: predicate_type, CONTENT_ANNOTATION: "dsse-envelope"}
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": _digest(EMPTY), "size": len(EMPTY)},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": _digest(bundle), "size": len(bundle)}],
        "subject": subject,
        "annotations": annotations,
    }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    digest = _digest(data)
    client.put_manifest(repo, digest, data)
    entry = {
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": digest,
        "size": len(data),
        "artifactType": BUNDLE_MEDIA_TYPE,
        "annotations": annotations,
    }
    index = _fallback_index(client, repo, subject["digest"]) or {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [],
    }
    if all(m.get("digest") != digest for m in index["manifests"]):
        index["manifests"].append(entry)
        body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        client.put_manifest(repo, fallback_tag(subject["digest"]), body, INDEX_MEDIA_TYPE)
    return digest


def _fallback_index(client: RegistryClient, repo: str, digest: str) -> dict | None:
    tag = fallback_tag(digest)
    if client.manifest_digest(repo, tag, INDEX_MEDIA_TYPE) is None:
        return None
    data, _ = client.get_manifest(repo, tag, INDEX_MEDIA_TYPE)
    try:
        index = json.loads(data)
    except ValueError:
        return None
    return index if isinstance(index, dict) and isinstance(index.get("manifests"), list) else None


def listed(client: RegistryClient, repo: str, digest: str) -> list[dict]:
    """Descriptors of every bundle referrer of ``digest`` (referrers API, else the tag fallback)."""
    index = client.referrers(repo, digest) or _fallback_index(client, repo, digest) or {}
    out = []
    for m in index.get("manifests") or []:
        if isinstance(m, dict) and m.get("artifactType") == BUNDLE_MEDIA_TYPE and DIGEST_RE.match(str(m.get("digest"))):
            out.append(m)
    return out


def fetch_bundle(client: RegistryClient, repo: str, descriptor: dict, subject_digest: str) -> bytes | None:
    """The bundle a referrer holds, or None when it is not one for ``subject_digest``."""
    data, _ = client.get_manifest(repo, descriptor["digest"])
    try:
        doc = json.loads(data)
        layer = doc["layers"][0]
        ok = doc["subject"]["digest"] == subject_digest and layer["mediaType"] == BUNDLE_MEDIA_TYPE
        size = layer["size"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if not ok or type(size) is not int or not 0 < size <= _MAX_BUNDLE or not DIGEST_RE.match(str(layer["digest"])):
        return None
    return client.get_blob(repo, layer["digest"], size)


@dataclass
class Trust:
    """What the referrers of one model manifest prove, under a policy."""

    signature: bytes | None = None
    signature_key: TrustedKey | None = None
    predicate: dict | None = None
    attestation_key: TrustedKey | None = None
    attestation_bundle: bytes | None = None
    refused: list[str] = field(default_factory=list)  # one phrase per referrer that did not verify

    def describe(self) -> list[str]:
        lines = []
        if self.signature_key:
            lines.append(f"signature: verified, key {self.signature_key.name} ({self.signature_key.fingerprint[:16]})")
        if self.predicate is not None and self.attestation_key:
            key = self.attestation_key
            lines.append(
                f"attestation: verified, key {key.name} ({key.fingerprint[:16]}): "
                + attestation.summary(self.predicate)
            )
        return lines + [f"ignored: {r}" for r in self.refused]


def check(client: RegistryClient, repo: str, digest: str, files: dict[str, str], policy: Policy, where: str) -> Trust:
    """Verify the referrers of ``digest`` against ``files`` (path -> sha256) and ``policy``; IntegrityError if short."""
    from exporter.ship.signing import signed_files, verify_statement

    trust = Trust()
    for desc in listed(client, repo, digest):
        bundle = fetch_bundle(client, repo, desc, digest)
        if bundle is None:
            trust.refused.append(f"referrer {desc['digest'][:19]}… is not a bundle about this artifact")
            continue
        try:
            statement, key = verify_statement(bundle, policy, f"referrer {desc['digest'][:19]}…")
            if statement.get("predicateType") == SIGNATURE_PREDICATE:
                if signed_files(statement, where) != files:
                    raise IntegrityError(f"the signature {desc['digest'][:19]}… covers other files.", "")
                trust.signature, trust.signature_key = bundle, key
            elif statement.get("predicateType") == attestation.PREDICATE_TYPE:
                predicate = attestation.check(statement, files, f"attestation {desc['digest'][:19]}…")
                if trust.predicate is None or not predicate.get("passed"):
                    trust.predicate, trust.attestation_key, trust.attestation_bundle = predicate, key, bundle
        except IntegrityError as exc:
            trust.refused.append(exc.message)
    _require(trust, policy, where)
    return trust


def _require(trust: Trust, policy: Policy, where: str) -> None:
    why = "; ".join(dict.fromkeys(r.rstrip(".") for r in trust.refused[:3])) or "none attached"
    hint = f"Trusted keys: {policy.describe()}. Nothing was written."
    if policy.require_signature and trust.signature is None:
        raise IntegrityError(f"{where} has no signature by a trusted key ({why}).", hint)
    if policy.require_attestation and trust.predicate is None:
        raise IntegrityError(f"{where} has no fidelity attestation by a trusted key ({why}).", hint)
    if policy.require_parity_passed and trust.predicate is not None and not trust.predicate.get("passed"):
        raise FidelityError(f"{where}: its signed fidelity attestation says parity did not pass.", hint)
    if policy.fidelity is not None and trust.predicate is not None:
        looser = attestation.looser_than(trust.predicate, policy.fidelity)
        if looser:
            raise FidelityError(
                f"{where}: its signed fidelity attestation was judged by thresholds looser than the policy's "
                f"({'; '.join(looser)}).",
                "Re-verify and re-sign it under this policy, or pull another variant. Nothing was written.",
            )
