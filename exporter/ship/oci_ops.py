"""``inspect`` and ``promote`` of a published artifact: read its manifest, config and referrers, no weights.

``inspect`` reads the manifest, the config, ``manifest.json`` (a few KiB) and every signature/attestation
referrer; with a policy it verifies them as ``pull`` would. ``promote`` re-tags by digest inside one
registry once the policy holds: the same manifest bytes under the new tag (the digest cannot change),
blobs mounted across repositories rather than re-uploaded, and the referrers attached there as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.errors import IntegrityError, RegistryError, UsageError
from exporter.ship import attestation, modelpack, referrers
from exporter.ship.oci_client import RegistryClient
from exporter.ship.oci_docs import MANIFEST_MEDIA_TYPE
from exporter.ship.oci_ref import Reference
from exporter.ship.oci_transport import RetryPolicy
from exporter.ship.registry import Fetched, client_for, fetch_checked
from exporter.ship.signing import Policy, bundle_key_hint, unverified_statement


def _need_ref(url: str) -> Reference:
    ref = Reference.parse(url)
    if not (ref.tag or ref.digest):
        raise UsageError(f"{url} names no tag or digest.", "Write oci://HOST/REPO:TAG or …/REPO@sha256:….")
    return ref


@dataclass(frozen=True)
class Inspection:
    reference: str
    digest: str
    encoding: str  # "modelpack" | "exporter"
    variant: str | None
    config: dict | None  # the ModelPack config (descriptor, config, modelfs)
    annotations: dict
    files: list[tuple[str, str, int]]  # (path, media type, size), manifest.json included
    referrers: list[dict] = field(default_factory=list)  # digest, predicateType, key, summary (unverified)
    trust: list[str] = field(default_factory=list)  # verified lines, when a policy was given

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def inspect(
    source: str, *, policy: Policy | None = None, insecure: bool = False, retry: RetryPolicy | None = None
) -> Inspection:
    """Describe a published artifact and what is attached to it, without downloading its weights."""
    ref = _need_ref(source)
    with client_for(ref, insecure, retry) as client:
        got = fetch_checked(client, ref)
        found = []
        for desc in referrers.listed(client, ref.repository, got.digest):
            bundle = referrers.fetch_bundle(client, ref.repository, desc, got.digest)
            if bundle is None:
                continue
            try:
                stmt = unverified_statement(bundle, f"referrer {desc['digest'][:19]}…")
            except IntegrityError:
                stmt = {"predicateType": "(unreadable bundle)"}
            entry = {
                "digest": desc["digest"],
                "predicateType": stmt.get("predicateType"),
                "key": bundle_key_hint(bundle),
            }
            if stmt.get("predicateType") == attestation.PREDICATE_TYPE:
                entry["summary"] = attestation.summary(stmt.get("predicate") or {})
            found.append(entry)
        trust = referrers.check(client, ref.repository, got.digest, got.files, policy, str(ref)) if policy else None
    return Inspection(
        str(ref),
        got.digest,
        "modelpack" if got.config is not None else "exporter",
        got.narrowed["variants"][0]["id"] if got.narrowed else None,
        got.config,
        got.doc.get("annotations") or {},
        _files(got),
        found,
        trust.describe() if trust else [],
    )


def _files(got: Fetched) -> list[tuple[str, str, int]]:
    types = {
        (layer.get("annotations") or {}).get(k): layer.get("mediaType")
        for layer in got.doc.get("layers") or []
        for k in (modelpack.FILEPATH, modelpack.TITLE)
    }
    out = [(p, types.get(p) or "", size) for p, _, size in got.layers]
    out += [(p, types.get(p) or got.doc["config"]["mediaType"], len(b)) for p, b in got.inline.items()]
    return sorted(out)


@dataclass(frozen=True)
class Promotion:
    source: str
    target: str
    digest: str
    previous: str | None  # what the target tag named before, if anything
    mounted: int  # blobs mounted from the source repository (0 within one repository)
    trust: list[str]


def promote(
    source: str, target: str, *, policy: Policy, insecure: bool = False, retry: RetryPolicy | None = None
) -> Promotion:
    """Point ``target``'s tag at ``source``'s manifest (by digest) once its signature and attestation verify."""
    src, dst = _need_ref(source), Reference.parse(target)
    if dst.digest or not dst.tag:
        raise UsageError("promote needs a target tag.", "Write the target as oci://HOST/REPO:TAG.")
    if dst.host != src.host:
        raise UsageError("promote re-tags within one registry.", "Pull, verify and publish to copy across registries.")
    with client_for(src, insecure, retry) as client:
        got = fetch_checked(client, src)
        trust = referrers.check(client, src.repository, got.digest, got.files, policy, str(src))
        data, _ = client.get_manifest(src.repository, got.digest)
        mounted = 0
        if dst.repository != src.repository:
            mounted = _mount_all(client, got, src.repository, dst.repository)
            subject = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": got.digest, "size": len(data)}
            client.put_manifest(dst.repository, got.digest, data)
            for predicate_type, bundle in _verified_bundles(trust):
                referrers.attach(client, dst.repository, subject, bundle, predicate_type)
        previous = client.manifest_digest(dst.repository, dst.tag)
        stored = client.put_manifest(dst.repository, dst.tag, data)
        if stored and stored != got.digest:
            raise RegistryError(f"registry {src.host} stored {stored}, not {got.digest}.", "Check the registry.")
    return Promotion(
        str(src), str(dst), got.digest, previous if previous != got.digest else None, mounted, trust.describe()
    )


def _mount_all(client: RegistryClient, got: Fetched, src_repo: str, dst_repo: str) -> int:
    digests = [got.doc["config"]["digest"], *(layer["digest"] for layer in got.doc.get("layers") or [])]
    count = 0
    for digest in dict.fromkeys(digests):
        if client.blob_exists(dst_repo, digest):
            continue
        if not client.mount_blob(dst_repo, digest, src_repo):
            raise RegistryError(
                f"registry {client.host} would not mount blob {digest[:19]}… from {src_repo}.",
                "Promote within one repository, or check that these credentials may read the source.",
            )
        count += 1
    return count


def _verified_bundles(trust: referrers.Trust) -> list[tuple[str, bytes]]:
    from exporter.ship.signing import SIGNATURE_PREDICATE

    out = [(SIGNATURE_PREDICATE, trust.signature)] if trust.signature else []
    if trust.attestation_bundle:
        out.append((attestation.PREDICATE_TYPE, trust.attestation_bundle))
    return out
