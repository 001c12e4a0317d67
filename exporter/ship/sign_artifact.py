"""``exporter sign``: sign one variant of an artifact folder (its files and its fidelity attestation).

What is signed is exactly what ``pull`` writes for the variant: the shared files, the variant's own files and
its narrowed ``manifest.json``, after checking every file against the manifest (and, unless ``allow_failed``,
that parity passed). The fidelity attestation states a verdict this run reached, never the one the manifest
records: ``gate`` re-runs verify's gate under the policy in force (``exporter.quality.policy``), or reads a
verify report (``exporter verify --json``) given with ``verified`` when it covers exactly these files under
the same policy digest; the attestation records the fresh parity, the policy's digest and the thresholds it
judged by. Two bundles are written into ``ARTIFACT/signatures/``: ``<variant>.model.sigstore.json``
(model_signing's file signature) and ``<variant>.fidelity.sigstore.json`` (the signed fidelity attestation).
``publish`` attaches them, refusing bundles whose files no longer match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from exporter import manifest as mf
from exporter.errors import FidelityError, IntegrityError, UsageError
from exporter.fsutil import atomic_path
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
from exporter.user_files import read_user_file

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


@dataclass(frozen=True)
class Gate:
    """The verdict a signature may attest for one variant: parity measured now, under ``policy``."""

    parity: dict  # the fresh parity entry (judged by the policy's thresholds)
    passed: bool
    policy: dict  # {"digest", "thresholds"}: ``Policy.record``


MAX_REPORT_BYTES = 64 << 20


def gate(
    artifact: Path, manifest: dict, ids: list[str], policy=None, verified: Path | None = None, *, allow_failed=False
) -> dict[str, Gate]:
    """Each variant's verdict under ``policy`` (default: the kind's defaults): a fresh verify run, or the
    report ``verified`` (``exporter verify --json``) when its policy digest is this policy's and it verified
    exactly the files each variant now holds.

    Raises:
        UsageError: the report is unreadable, or was judged under another policy, or misses a variant.
        IntegrityError: the files fail the manifest, or the report verified other files.
        FidelityError: a variant did not pass (not run, skipped, failed), unless ``allow_failed``.
    """
    from exporter.quality import verify
    from exporter.quality.policy import DEFAULT

    policy = policy or DEFAULT
    if verified is None:
        report = verify.verify(artifact, ids, policy=policy)
        if not report.integrity.ok:
            verify.raise_for(report)
        doc, where = json.loads(json.dumps(report.to_dict(), default=str)), "this run's verify"
    else:
        doc, where = _read_report(verified), f"verify report {verified}"
        if (doc.get("policy") or {}).get("digest") != policy.digest:
            raise UsageError(
                f"{where} was judged under policy {(doc.get('policy') or {}).get('digest')}, not the policy in "
                f"force ({policy.digest}).",
                "Re-run `exporter verify --json` with the same --policy, or sign without --verified.",
            )
        if (doc.get("integrity") or {}).get("status") != verify.PASSED:
            raise IntegrityError(f"{where} did not pass its integrity check.", "Re-verify the artifact.")
    cases = {c.get("name"): c for c in doc.get("variants") or [] if isinstance(c, dict)}
    out, failed = {}, []
    for vid in ids:
        case = cases.get(vid)
        if case is None:
            raise UsageError(f"{where} has no verdict for variant {vid!r}.", "Verify that variant, then sign it.")
        if (doc.get("files") or {}).get(vid) != _files_of(payload(manifest, vid)):
            raise IntegrityError(f"{where} verified other files than variant {vid!r} now holds.", "Re-verify it.")
        passed = case.get("status") == verify.PASSED
        if not passed:
            failed.append(
                f"{vid}: {'; '.join(case.get('failures') or []) or case.get('message') or case.get('status')}"
            )
        v = mf.get_variant(manifest, vid)
        parity = case.get("parity") or {"passed": False, "failures": case.get("failures") or [case.get("message")]}
        parity = {**parity, "passed": passed, "failures": list(case.get("failures") or parity.get("failures") or [])}
        out[vid] = Gate(parity, passed, policy.record(manifest["model"]["kind"], v["precision"], vid))
    if failed and not allow_failed:
        raise FidelityError(
            f"not attesting: the gate under the policy in force did not pass ({' | '.join(failed)}).",
            "Fix or drop the variant, or pass --allow-failed to attest it as failed.",
        )
    return out


def _files_of(p: VariantPayload) -> dict[str, str]:
    """What a verify report records for a variant: its and the shared files' sha256 (not the narrowed manifest)."""
    return {path: sha for path, sha in p.digests.items() if path != mf.MANIFEST_NAME}


def _read_report(path: Path) -> dict:
    try:
        doc = json.loads(read_user_file(path, what="verify report", max_bytes=MAX_REPORT_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UsageError(f"verify report {path} is not JSON.", "Pass the output of `exporter verify --json`.") from None
    if not isinstance(doc, dict):
        raise UsageError(f"verify report {path} is not a JSON object.", "Pass the output of `exporter verify --json`.")
    return doc


def make_bundles(p: VariantPayload, signer, fingerprint: str, verdict: Gate) -> Bundles:
    name = f"{p.narrowed['source'].get('repo') or 'model'}:{p.narrowed['variants'][0]['id']}"
    return Bundles(
        {
            "model": sign_files(p.digests, signer, name),
            "fidelity": sign_statement(attestation.statement(p.narrowed, p.files, verdict), signer),
        },
        fingerprint,
    )


def bundle_path(artifact: Path, variant_id: str, kind: str) -> Path:
    return Path(artifact) / mf.SIGNATURE_DIR / f"{variant_id}{KINDS[kind][0]}"


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
    artifact: Path,
    key: Path,
    *,
    variant: str | None = None,
    allow_failed: bool = False,
    policy=None,
    verified: Path | None = None,
) -> list[SignResult]:
    """Sign each chosen variant (all are checked, and gated under ``policy``, before any bundle is written)."""
    artifact = Path(artifact)
    signer, fingerprint = load_signer(key)
    manifest = mf.load(artifact)
    ids = select_variants(manifest, variant)
    for vid in ids:
        require_publishable(artifact, manifest, vid, allow_failed=allow_failed)
    verdicts = gate(artifact, manifest, ids, policy, verified, allow_failed=allow_failed)
    results = []
    for vid in ids:
        p = payload(manifest, vid)
        bundles = make_bundles(p, signer, fingerprint, verdicts[vid])
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
