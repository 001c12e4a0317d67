"""Publish and pull variants as OCI artifacts, with every digest checked end to end.

Two encodings, one layer per file (digest = the file's sha256 from the manifest):

- ``modelpack`` (default): a CNCF ModelPack artifact (``exporter.ship.modelpack``) that KitOps, modctl, Harbor
  and KServe read; the narrowed manifest travels as its ``manifest.json`` layer;
- ``exporter`` (the v1 dialect): artifact type ``application/vnd.exporter.model.v1``, config = the narrowed
  manifest, layers ``application/vnd.exporter.file.v1`` titled by path. ``pull`` reads both, and any
  ModelPack artifact of raw layers (e.g. pushed by ``modelpack-client``).

Blobs first, the manifest (and so the tag) last: a failed publish never leaves a tag behind. With
``sign_key`` (or bundles from ``exporter sign``) the manifest goes up by digest, the signature and the
fidelity attestation are attached as referrers (``exporter.ship.referrers``), and only then is it tagged.
The same bytes again is a no-op (compared by manifest digest); another digest under the tag is refused
unless ``force``. ``pull`` with a policy checks the referrers before downloading, and model_signing checks
the downloaded bytes before the folder is moved into place. Transport, retries and credentials:
``exporter.ship.oci_client``, ``exporter.ship.oci_docs`` and ``exporter.ship.oci_ref``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import oras.defaults
import oras.schemas

from exporter import manifest as mf
from exporter import outdir
from exporter.errors import IntegrityError, OutputError, RegistryError, UsageError
from exporter.ship import modelpack, referrers
from exporter.ship.oci_client import _MAX_JSON, RegistryClient
from exporter.ship.oci_docs import MANIFEST_MEDIA_TYPE, canonical_json, image_manifest
from exporter.ship.oci_ref import _DIGEST, PASSWORD_ENV, USER_ENV, Credentials, Reference, find_credentials, is_loopback
from exporter.ship.oci_transport import RetryPolicy
from exporter.ship.package import (
    check_layout,
    parse_narrowed_manifest,
    require_publishable,
    select_variants,
    variant_files,
)
from exporter.ship.sign_artifact import Bundles, VariantPayload, gate, make_bundles, payload, stored_bundles
from exporter.ship.signing import Policy, load_signer, verify_folder
from exporter.staging import staged_dir

__all__ = ["Credentials", "PASSWORD_ENV", "USER_ENV", "find_credentials", "is_loopback"]

ARTIFACT_TYPE = "application/vnd.exporter.model.v1"
CONFIG_MEDIA_TYPE = "application/vnd.exporter.manifest.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.exporter.file.v1"
TITLE = oras.defaults.annotation_title
ANNOTATION = "dev.exporter."
FINGERPRINT = ANNOTATION + "fingerprint"  # the variant's fingerprint digest (exporter.fingerprint)
FORMATS = ("modelpack", "exporter")

# --------------------------------------------------------------------------------------------- artifacts


def oci_manifest(narrowed: dict, config: bytes, *, allow_failed: bool = False) -> bytes:
    """The OCI image manifest (canonical JSON bytes) for one narrowed exporter manifest."""
    variant = narrowed["variants"][0]
    layers = [
        {
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": f"sha256:{rec['sha256']}",
            "size": rec["size"],
            "annotations": {TITLE: rec["path"]},
        }
        for rec in variant_files(narrowed, variant["id"])
    ]
    doc = image_manifest(
        media_type=MANIFEST_MEDIA_TYPE,
        artifact_type=ARTIFACT_TYPE,
        config_media_type=CONFIG_MEDIA_TYPE,
        config=config,
        layers=layers,
        annotations=manifest_annotations(narrowed, allow_failed),
    )
    jsonschema.validate(doc, oras.schemas.manifest)
    return canonical_json(doc)


def manifest_annotations(narrowed: dict, allow_failed: bool) -> dict[str, str]:
    """Manifest annotations: creation time, the pin, the variant, its parity verdict and its fingerprint."""
    variant = narrowed["variants"][0]
    passed = variant["status"] == "passed" and bool((variant.get("parity") or {}).get("passed"))
    verdict = "passed" if passed else ("failed" if variant["status"] == "passed" else variant["status"])
    found = {
        "org.opencontainers.image.created": narrowed["created_at"],
        "org.opencontainers.image.revision": narrowed["source"].get("revision"),
        ANNOTATION + "source.repo": narrowed["source"].get("repo"),
        ANNOTATION + "source.revision": narrowed["source"].get("revision"),
        ANNOTATION + "variant": variant["id"],
        ANNOTATION + "backend": variant["backend"],
        ANNOTATION + "precision": variant["precision"],
        ANNOTATION + "parity": verdict,
        ANNOTATION + "tool-version": narrowed["tool_version"],
        FINGERPRINT: (variant.get("fingerprint") or {}).get("digest"),
        ANNOTATION + "allow-failed": "true" if allow_failed else None,
        ANNOTATION + "publishable": None if narrowed.get("publishable") else "false",
    }
    return {k: str(v) for k, v in found.items() if v is not None}


def default_tag(manifest: dict, variant_id: str) -> str:
    revision = manifest["source"].get("revision")
    if not revision:
        raise UsageError("this artifact has no pinned source revision for a default tag.", "Name a tag: …/REPO:TAG.")
    return variant_tag(revision, variant_id)


def variant_tag(revision: str, variant_id: str) -> str:
    """The default tag of one variant of a pinned source: ``<sha12>-<variant>``."""
    return f"{revision[:12]}-{variant_id}"


@dataclass(frozen=True)
class PublishResult:
    variant: str
    reference: str  # oci://host/repo:tag
    digest: str
    status: str  # "pushed" | "unchanged" | "replaced"
    uploaded: int  # blobs sent (the rest were already there)
    allow_failed: bool
    signed: str | None = None  # fingerprint of the key whose signature and attestation were attached


@dataclass(frozen=True)
class PullResult:
    dest: Path
    reference: str
    digest: str
    variant: str | None  # None for a ModelPack artifact that carries no exporter manifest
    files: int
    size: int
    trust: list[str] = field(default_factory=list)  # what was verified, one line each
    cleaned: tuple[str, ...] = ()  # what killed earlier pulls had left beside dest, now removed


def publish(
    artifact: Path,
    target: str,
    *,
    variant: str | None = None,
    allow_failed: bool = False,
    force: bool = False,
    insecure: bool = False,
    retry: RetryPolicy | None = None,
    sign_key: Path | None = None,
    artifact_format: str = "modelpack",
    policy=None,
    verified: Path | None = None,
    allow_unpublishable: bool = False,
) -> list[PublishResult]:
    """Push each chosen variant of ``artifact`` as an OCI artifact (all are checked before any is sent).

    ``sign_key`` signs the files and a fidelity attestation of the gate run now under ``policy`` (or of the
    verify report ``verified``: ``sign_artifact.gate``); without it, bundles that ``exporter sign`` left in
    the artifact are attached (after checking they cover the same files).
    An artifact whose source is not pinned to a Hub commit (a local folder, a branch) is not publishable
    (``publishable: false``) and is refused unless ``allow_unpublishable``; the pushed manifest.json then
    says ``publishable: false`` and the OCI manifest carries the annotation ``…publishable: false``.
    """
    artifact = Path(artifact)
    ref = Reference.parse(target)
    if ref.digest:
        raise UsageError("publish needs a tag, not a digest.", "Write oci://HOST/REPO[:TAG].")
    if artifact_format not in FORMATS:
        raise UsageError(f"unknown artifact format {artifact_format!r}.", f"Use one of: {', '.join(FORMATS)}.")
    signer = load_signer(sign_key) if sign_key else None
    manifest = mf.load(artifact)
    if not manifest["source"].get("pinned") and not allow_unpublishable:
        raise UsageError(
            f"{artifact} is not publishable: its source ({manifest['source'].get('repo') or 'a local folder'}) is "
            "not pinned to a Hub commit, so nobody can rebuild or check it (manifest publishable: false).",
            "Export from org/name@<commit sha>, or pass --allow-unpublishable to push it marked as such.",
        )
    ids = select_variants(manifest, variant)
    if ref.tag and len(ids) > 1:
        raise UsageError("one tag cannot name several variants.", "Drop the :TAG (default <sha12>-<variant>).")
    forced_ids = [vid for vid in ids if require_publishable(artifact, manifest, vid, allow_failed=allow_failed)]
    verdicts = gate(artifact, manifest, ids, policy, verified, allow_failed=allow_failed) if signer else {}
    plans = []
    for vid in ids:
        forced = vid in forced_ids
        p = payload(manifest, vid)
        bundles = make_bundles(p, *signer, verdicts[vid]) if signer else stored_bundles(artifact, p)
        data, blobs = _encode(artifact, p, forced, artifact_format)
        plans.append((vid, ref.tag or default_tag(manifest, vid), data, blobs, bundles, forced))
    results = []
    with client_for(ref, insecure, retry) as client:
        for vid, tag, data, blobs, bundles, forced in plans:
            status, digest, uploaded = _publish_one(client, ref.repository, tag, data, blobs, bundles, force)
            where = str(Reference(ref.host, ref.repository, tag))
            signed = bundles.fingerprint if bundles else None
            results.append(PublishResult(vid, where, digest, status, uploaded, forced, signed))
    return results


_Blobs = dict[str, tuple[int, Callable[[], object]]]


def _encode(artifact: Path, p: VariantPayload, forced: bool, artifact_format: str) -> tuple[bytes, _Blobs]:
    """The manifest bytes and every blob (digest -> size, body) of one variant in the chosen encoding."""
    blobs: _Blobs = {}
    if artifact_format == "modelpack":
        config = modelpack.config_bytes(p.narrowed, p.files)
        data = modelpack.manifest_bytes(config, p.files, manifest_annotations(p.narrowed, forced), MANIFEST_MEDIA_TYPE)
        blobs["sha256:" + hashlib.sha256(config).hexdigest()] = (len(config), lambda: config)
    else:
        config = p.manifest_json
        data = oci_manifest(p.narrowed, config, allow_failed=forced)
    for rec in p.files:
        body = (
            (lambda: p.manifest_json)
            if rec["path"] == mf.MANIFEST_NAME
            else functools.partial(open, artifact / rec["path"], "rb")
        )
        blobs.setdefault(f"sha256:{rec['sha256']}", (rec["size"], body))
    return data, blobs


def client_for(ref: Reference, insecure: bool, retry: RetryPolicy | None) -> RegistryClient:
    return RegistryClient(ref.host, insecure=insecure, credentials=lambda: find_credentials(ref.host), retry=retry)


def _publish_one(
    client: RegistryClient, repo: str, tag: str, data: bytes, blobs: _Blobs, bundles: Bundles | None, force: bool
):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    remote = client.manifest_digest(repo, tag)
    if remote == digest:
        if bundles:
            _attach(client, repo, digest, data, bundles)
        return "unchanged", digest, 0
    if remote is not None and not force:
        raise OutputError(
            f"tag {repo}:{tag} on {client.host} already points at other content ({remote[:19]}…).",
            "Pass --force to move the tag, or publish under another tag.",
        )
    uploaded = 0
    for blob_digest, (size, body) in blobs.items():
        if not client.blob_exists(repo, blob_digest):
            client.upload_blob(repo, blob_digest, size, body)
            uploaded += 1
    if bundles:  # untagged first, signed, and only then tagged: a tag never names an unsigned upload
        client.put_manifest(repo, digest, data)
        _attach(client, repo, digest, data, bundles)
    stored = client.put_manifest(repo, tag, data)
    if stored and stored != digest:
        raise RegistryError(f"registry {client.host} stored the manifest as {stored}, not {digest}.", "Check it.")
    return ("replaced" if remote else "pushed"), digest, uploaded


def _attach(client: RegistryClient, repo: str, digest: str, data: bytes, bundles: Bundles) -> None:
    """Attach each bundle unless a referrer of the same kind by the same key is already there."""
    from exporter.ship.signing import bundle_key_hint, unverified_statement

    present = set()
    for desc in referrers.listed(client, repo, digest):
        old = referrers.fetch_bundle(client, repo, desc, digest)
        if old is not None:
            kind = unverified_statement(old, "referrer").get("predicateType")
            present.add((kind, bundle_key_hint(old)))
    subject = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": len(data)}
    for predicate_type, bundle in bundles.items():
        if (predicate_type, bundles.fingerprint) not in present:
            referrers.attach(client, repo, subject, bundle, predicate_type)


def _match_manifest(layers: list[tuple[str, str, int]], narrowed: dict, where: str) -> None:
    """Check the layers are exactly the narrowed manifest's files, with its sha256 and sizes."""
    expected = mf.listed_files(narrowed)
    check_layout([p for p, _, _ in layers], where)
    if sorted(p for p, _, _ in layers) != sorted(expected):
        raise IntegrityError(f"{where}: its layers and its manifest list different files.", "Refusing it.")
    for path, digest, size in layers:
        rec = expected[path]
        if digest != f"sha256:{rec['sha256']}" or size != rec["size"]:
            raise IntegrityError(f"{where}: layer {path} does not match the manifest's sha256/size.", "Refusing it.")


def _legacy_layers(doc: dict, where: str) -> list[tuple[str, str, int]]:
    layers = []
    for layer in doc.get("layers") or []:
        title = (layer.get("annotations") or {}).get(TITLE)
        if layer.get("mediaType") != LAYER_MEDIA_TYPE or not isinstance(title, str):
            raise IntegrityError(f"{where} has a layer that is not a plain exporter file.", "Refusing it.")
        layers.append((title, layer.get("digest"), layer.get("size")))
    return layers


@dataclass(frozen=True)
class Fetched:
    """A checked artifact, nothing written yet: ``layers`` to download, ``inline`` files already in hand."""

    digest: str
    doc: dict
    layers: list[tuple[str, str, int]]
    inline: dict[str, bytes]
    narrowed: dict | None  # None: a ModelPack artifact without an exporter manifest
    config: dict | None  # the ModelPack config, when it is one

    @property
    def files(self) -> dict[str, str]:
        """path -> sha256 of everything a pull writes (what signatures and attestations cover)."""
        out = {p: d.split(":", 1)[1] for p, d, _ in self.layers}
        out.update({p: hashlib.sha256(b).hexdigest() for p, b in self.inline.items()})
        return out


def pull(
    source: str,
    dest: Path,
    *,
    insecure: bool = False,
    force: bool = False,
    retry: RetryPolicy | None = None,
    policy: Policy | None = None,
) -> PullResult:
    """Fetch a published variant into ``dest``; every digest is checked and nothing is written on failure.

    With ``policy``, its signature and fidelity attestation are verified before any file is downloaded,
    and model_signing re-checks the downloaded bytes before the folder is moved into place.
    """
    ref = Reference.parse(source)
    dest = Path(dest)
    if not (ref.tag or ref.digest):
        raise UsageError("pull needs a tag or digest.", "Write oci://HOST/REPO:TAG or …/REPO@sha256:….")
    if dest.exists() and not force:
        raise OutputError(f"{dest} already exists.", "Pass --force to replace it, or choose another folder.")
    outdir.check_out(dest)  # writable; --force replaces only an empty folder or an artifact of ours
    where = str(ref)
    with client_for(ref, insecure, retry) as client, outdir.claim(dest) as cleaned:
        got = fetch_checked(client, ref)
        trust = referrers.check(client, ref.repository, got.digest, got.files, policy, where) if policy else None
        needs = sum(size for _, _, size in got.layers)
        with staged_dir(dest, replace=force, needs=needs) as tmp:
            for path, blob_digest, size in got.layers:
                target = tmp / path
                target.parent.mkdir(parents=True, exist_ok=True)
                client.get_blob(ref.repository, blob_digest, size, target)
            for path, data in got.inline.items():
                (tmp / path).write_bytes(data)
            if got.narrowed is not None:
                mf.require_intact(tmp, got.narrowed)
            if trust is not None and trust.signature is not None and trust.signature_key is not None:
                verify_folder(tmp, trust.signature, trust.signature_key)
    total = sum(size for _, _, size in got.layers)  # the model's files; manifest.json is not counted
    variant = got.narrowed["variants"][0]["id"] if got.narrowed else None
    lines = trust.describe() if trust else []
    return PullResult(dest, where, got.digest, variant, len(got.layers), total, lines, tuple(cleaned))


def fetch_checked(client: RegistryClient, ref: Reference) -> Fetched:
    """The manifest of ``ref`` with its config and layers checked (no layer downloaded but manifest.json)."""
    where = str(ref)
    data, digest = client.get_manifest(ref.repository, ref.manifest_ref)
    try:
        doc = json.loads(data)
        jsonschema.validate(doc, oras.schemas.manifest)
    except (ValueError, jsonschema.ValidationError) as exc:
        raise IntegrityError(f"{where} does not hold a valid OCI manifest.", "Refusing it.") from exc
    config_desc = doc["config"]
    pack = modelpack.is_modelpack(doc)
    if doc.get("mediaType") != MANIFEST_MEDIA_TYPE or not (pack or config_desc.get("mediaType") == CONFIG_MEDIA_TYPE):
        raise UsageError(
            f"{where} is not a model artifact.", "Pull a ModelPack artifact or one made by `exporter publish`."
        )
    config = _small_blob(client, ref, config_desc, where)
    if not pack:
        narrowed = parse_narrowed_manifest(config, where)
        layers = _legacy_layers(doc, where)
        _match_manifest(layers, narrowed, where)
        return Fetched(digest, doc, layers, {mf.MANIFEST_NAME: config}, narrowed, None)
    layers = modelpack.read_layers(doc, config, where)
    own = [(p, d, s) for p, d, s in layers if p == mf.MANIFEST_NAME]
    rest = [layer for layer in layers if layer[0] != mf.MANIFEST_NAME]
    if not own:
        return Fetched(digest, doc, rest, {}, None, json.loads(config))
    manifest_json = _small_blob(client, ref, {"digest": own[0][1], "size": own[0][2]}, where)
    narrowed = parse_narrowed_manifest(manifest_json, where)
    _match_manifest(rest, narrowed, where)
    cfg = json.loads(config)
    modelpack.check_bound(cfg, narrowed, manifest_json, where)
    return Fetched(digest, doc, rest, {mf.MANIFEST_NAME: manifest_json}, narrowed, cfg)


def _small_blob(client: RegistryClient, ref: Reference, desc: dict, where: str) -> bytes:
    size = desc.get("size")
    if not _DIGEST.match(str(desc.get("digest"))) or type(size) is not int or not 0 <= size <= _MAX_JSON:
        raise IntegrityError(f"{where} has a malformed config descriptor.", "Refusing it.")
    return client.get_blob(ref.repository, desc["digest"], size)
