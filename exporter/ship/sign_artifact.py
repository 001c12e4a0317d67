"""``exporter sign``: sign one variant of an artifact folder (its files and its fidelity attestation).

What is signed is exactly what ``pull`` writes for the variant: the shared files, the variant's own files
and its narrowed ``manifest.json``, after checking every file against the manifest (and, unless
``allow_failed``, that parity passed). Two bundles are written into ``ARTIFACT/signatures/``:
``<variant>.model.sigstore.json`` (model_signing's file signature) and ``<variant>.fidelity.sigstore.json``
(the signed fidelity attestation). ``publish`` attaches them, refusing bundles whose files no longer match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter import manifest as mf
from exporter.errors import IntegrityError
from exporter.fsutil import atomic_path, read_user_file
from exporter.ship import attestation, modelpack
from exporter.ship.package import manifest_bytes, require_publishable, select_variants
from exporter.ship.signing import (
    SIGNATURE_PREDICATE,
    bundle_key_hint,
    load_signer,
    sign_files,
    sign_statement,
    unverified_statement,
)

SIGNATURE_DIR = "signatures"
# bundle kind -> (file suffix, predicate type)
KINDS = {
    "model": (".model.sigstore.json", SIGNATURE_PREDICATE),
    "fidelity": (".fidelity.sigstore.json", attestation.PREDICATE_TYPE),
}


@dataclass(frozen=True)
class VariantPayload:
    """One variant as it travels: its narrowed manifest, that manifest's bytes, every file pull writes."""

    narrowed: dict
    manifest_json: bytes
    files: list[dict]  # {"path", "sha256", "size"}, sorted, manifest.json included

    @property
    def digests(self) -> dict[str, str]:
        return {r["path"]: r["sha256"] for r in self.files}


def payload(manifest: dict, variant_id: str) -> VariantPayload:
    narrowed = mf.narrow(manifest, variant_id)
    data = manifest_bytes(narrowed)
    return VariantPayload(narrowed, data, modelpack.files_of(narrowed, data))


@dataclass(frozen=True)
class Bundles:
    """The two signed bundles of one variant, keyed by kind (see ``KINDS``)."""

    by_kind: dict[str, bytes]
    fingerprint: str | None

    def items(self):
        return [(KINDS[k][1], b) for k, b in sorted(self.by_kind.items())]


def make_bundles(p: VariantPayload, signer, fingerprint: str) -> Bundles:
    name = f"{p.narrowed['source'].get('repo') or 'model'}:{p.narrowed['variants'][0]['id']}"
    return Bundles(
        {
            "model": sign_files(p.digests, signer, name),
            "fidelity": sign_statement(attestation.statement(p.narrowed, p.files), signer),
        },
        fingerprint,
    )


def bundle_path(artifact: Path, variant_id: str, kind: str) -> Path:
    return Path(artifact) / SIGNATURE_DIR / f"{variant_id}{KINDS[kind][0]}"


def stored_bundles(artifact: Path, p: VariantPayload) -> Bundles | None:
    """Bundles ``exporter sign`` wrote for this variant, checked to cover exactly its files; None if none."""
    vid = p.narrowed["variants"][0]["id"]
    paths = {kind: bundle_path(artifact, vid, kind) for kind in KINDS}
    if not any(path.exists() for path in paths.values()):
        return None
    hint = f"Re-run `exporter sign {artifact} --variant {vid} --key KEY`, or delete them to publish unsigned."
    by_kind = {}
    for kind, path in paths.items():
        if not path.is_file():
            raise IntegrityError(f"{path} is missing beside the variant's other signature.", hint)
        data = read_user_file(path, what="signature bundle", max_bytes=4 << 20)
        stmt = unverified_statement(data, str(path))
        covered = (
            {r.get("name"): r.get("digest") for r in (stmt.get("predicate") or {}).get("resources") or []}
            if kind == "model"
            else {s.get("name"): (s.get("digest") or {}).get("sha256") for s in stmt.get("subject") or []}
        )
        if stmt.get("predicateType") != KINDS[kind][1] or covered != p.digests:
            raise IntegrityError(f"{path} signs other files than variant {vid!r} now holds.", hint)
        by_kind[kind] = data
    return Bundles(by_kind, bundle_key_hint(by_kind["model"]))


@dataclass(frozen=True)
class SignResult:
    variant: str
    paths: tuple[Path, ...]
    fingerprint: str
    files: int


def sign_artifact(
    artifact: Path, key: Path, *, variant: str | None = None, allow_failed: bool = False
) -> list[SignResult]:
    """Sign each chosen variant (all are checked before any bundle is written)."""
    artifact = Path(artifact)
    signer, fingerprint = load_signer(key)
    manifest = mf.load(artifact)
    ids = select_variants(manifest, variant)
    for vid in ids:
        require_publishable(artifact, manifest, vid, allow_failed=allow_failed)
    results = []
    for vid in ids:
        p = payload(manifest, vid)
        bundles = make_bundles(p, signer, fingerprint)
        written = []
        for kind, data in sorted(bundles.by_kind.items()):
            path = bundle_path(artifact, vid, kind)
            path.parent.mkdir(exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
            written.append(path)
        mf.record_written(artifact, written)  # --force may replace only these bytes
        results.append(SignResult(vid, tuple(written), fingerprint, len(p.files)))
    return results
