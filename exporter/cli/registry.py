"""The ``package``, ``publish``, ``pull``, ``sign``, ``inspect`` and ``promote`` commands (CLI layer only).

``cli/app.py`` registers them. Errors are not caught here: the app's one boundary (``cli.app.main``) turns
each ``ExporterError`` into its one-line message, hint and exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exporter.cli.output import JsonOpt, print_result_json

_INSECURE = "Allow plain HTTP to a registry that is not on this machine (loopback always uses HTTP)."
_VERIFY_KEY = "Trusted public key (PEM, EC); repeat for several. Requires a signature and a passing attestation."
_POLICY = (
    "Policy file (YAML/JSON) naming the trusted keys, what is required and the thresholds an attestation may "
    "not loosen (exit 3); with --verify-key, the keys come from the flag (see README)."
)

VerifyKeys = Annotated[list[Path] | None, typer.Option("--verify-key", help=_VERIFY_KEY)]
PolicyFile = Annotated[Path | None, typer.Option("--policy", help=_POLICY)]
GatePolicy = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        help="Policy file (YAML/JSON) whose thresholds the gate run before signing judges by (default: the kind's).",
    ),
]
Verified = Annotated[
    Path | None,
    typer.Option(
        "--verified",
        help="A report of `exporter verify --json` under the same policy, covering the same files: attest its "
        "verdicts instead of re-running the gate.",
    ),
]


def _gate_policy(policy: Path | None):
    from exporter.quality.policy import Policy

    return Policy.load(policy)


def _report_waits() -> None:
    """Registry waits (a timeout, a retry) become a line on stderr as they happen."""
    from exporter.ship import oci_transport

    oci_transport.set_progress(lambda line: typer.echo(f"… {line}", err=True))


def _policy(verify_key: list[Path] | None, policy: Path | None, *, required: bool = False):
    from exporter.errors import UsageError
    from exporter.ship.signing import key_policy, load_policy

    if policy:
        return load_policy(policy, verify_key)
    if verify_key:
        return key_policy(verify_key)
    if required:
        raise UsageError("this command verifies before it acts.", "Pass --verify-key PUB or --policy FILE.")
    return None


def package(
    artifact: Annotated[Path, typer.Argument(help="The artifact folder (holds manifest.json).")],
    variant: Annotated[
        str | None, typer.Option(help="Variant id to package (default: the recommended or only variant).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Package file (.tar, or .tar.gz/.tgz); default <artifact>-<variant>.tar beside it."),
    ] = None,
    allow_failed: Annotated[
        bool, typer.Option("--allow-failed", help="Package a variant that failed its gate.")
    ] = False,
    layout: Annotated[
        str | None,
        typer.Option(
            help="Write the folder a server loads instead of a tar (run through its consumer first): st, tei, "
            "fastembed, transformers.js, ovms, triton."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a deterministic package of one variant: its files, the shared files, the narrowed manifest
    (with --layout: the folder --out that the named server or library loads)."""
    from exporter.api import package as run_package

    result = run_package(artifact, variant=variant, out=out, layout=layout, allow_failed=allow_failed, force=force)
    if as_json:
        print_result_json(result)
        return
    if result.layout is not None:
        typer.echo(f"{result.layout} layout of {result.variant}: {result.path} ({result.files} files)")
        for row in result.gate:
            figure = f"cosine_min {row['cosine_min']:.6f}" if row.get("cosine_min") is not None else row["message"]
            typer.echo(f"gate: {row['status']} {row['consumer']} ({row['runs']}) on the probe set: {figure}")
        typer.echo(f"start: {result.start}")
        return
    size = result.path.stat().st_size
    typer.echo(f"packaged {result.variant}: {result.path} ({result.files} files, {size} bytes)")
    typer.echo(f"sha256:{result.sha256}")


def publish(
    artifact: Annotated[Path, typer.Argument(help="The artifact folder (holds manifest.json).")],
    target: Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO[:TAG]; the default tag is <sha12>-<variant>.")],
    variants: Annotated[
        str | None,
        typer.Option(help="Comma-separated variant ids, or 'all' (default: the recommended or only variant)."),
    ] = None,
    allow_failed: Annotated[
        bool,
        typer.Option("--allow-failed", help="Publish a variant that failed its gate (annotated as such)."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Move a tag that points at other content.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help=_INSECURE)] = False,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign-key", help="EC private key (PEM, mode 600): sign the files and the fidelity attestation."),
    ] = None,
    artifact_format: Annotated[
        str, typer.Option("--format", help="modelpack (CNCF ModelPack, default) or exporter (the v1 dialect).")
    ] = "modelpack",
    policy: GatePolicy = None,
    verified: Verified = None,
    allow_unpublishable: Annotated[
        bool,
        typer.Option(
            "--allow-unpublishable",
            help="Push an artifact whose source is not pinned to a Hub commit (recorded as publishable: false).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push each variant as an OCI artifact (one layer per file); the same content again is a no-op."""
    from exporter.ship.registry import publish as do_publish

    _report_waits()

    results = do_publish(
        artifact,
        target,
        variant=variants,
        allow_failed=allow_failed,
        force=force,
        insecure=insecure,
        sign_key=sign_key,
        artifact_format=artifact_format,
        policy=_gate_policy(policy) if sign_key else None,
        verified=verified,
        allow_unpublishable=allow_unpublishable,
    )
    if as_json:
        print_result_json(results)
        return
    for r in results:
        note = " (gate failed: published with --allow-failed)" if r.allow_failed else ""
        blobs = f", {r.uploaded} blobs uploaded" if r.status != "unchanged" else ""
        signed = f", signed by key {r.signed[:16]}" if r.signed else ""
        typer.echo(f"{r.status} {r.variant}: {r.reference}@{r.digest}{blobs}{signed}{note}")


def pull(
    source: Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:...")],
    dest: Annotated[Path, typer.Argument(help="Folder to create with the variant's files and manifest.json.")],
    force: Annotated[bool, typer.Option("--force", help="Replace DEST if it exists.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help=_INSECURE)] = False,
    verify_key: VerifyKeys = None,
    policy: PolicyFile = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch a published variant, checking every digest and sha256; nothing is written on any mismatch.

    With --verify-key or --policy, the signature and the fidelity attestation are verified first (exit 4
    if either is missing, altered or signed by another key) and the downloaded bytes again after.
    """
    from exporter.ship.registry import pull as do_pull

    _report_waits()

    trusted = _policy(verify_key, policy)
    r = do_pull(source, dest, force=force, insecure=insecure, policy=trusted)
    for line in r.cleaned:
        typer.echo(f"! {line}", err=True)
    if as_json:
        print_result_json(r)
        return
    what = r.variant or "modelpack artifact"
    typer.echo(f"pulled {what}: {r.files} files ({r.size} bytes) into {r.dest} from {r.reference}@{r.digest}")
    for line in r.trust:
        typer.echo(f"  {line}")


def sign(
    artifact: Annotated[Path, typer.Argument(help="The artifact folder (holds manifest.json).")],
    key: Annotated[Path, typer.Option("--key", help="EC private key (PEM, readable by you only).")],
    variants: Annotated[
        str | None,
        typer.Option(help="Comma-separated variant ids, or 'all' (default: the recommended or only variant)."),
    ] = None,
    allow_failed: Annotated[bool, typer.Option("--allow-failed", help="Sign a variant that failed its gate.")] = False,
    policy: GatePolicy = None,
    verified: Verified = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a variant's files and its fidelity attestation (model-signing bundles in ARTIFACT/signatures/).

    The attestation states the verdict of the gate run now under the policy in force (exit 3 if it fails,
    unless --allow-failed), or of a matching --verified report; with its policy digest and thresholds."""
    from exporter.ship.sign_artifact import sign_artifact

    rules = _gate_policy(policy)
    results = sign_artifact(artifact, key, variant=variants, allow_failed=allow_failed, policy=rules, verified=verified)
    if as_json:
        print_result_json(results)
        return
    for r in results:
        names = ", ".join(str(p.relative_to(artifact)) for p in r.paths)
        typer.echo(f"signed {r.variant}: {r.files} files, key {r.fingerprint[:16]}: {names}")


def inspect(
    source: Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO:TAG or …/REPO@sha256:...")],
    verify_key: VerifyKeys = None,
    policy: PolicyFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help=_INSECURE)] = False,
) -> None:
    """Show a published artifact, its files and its signature/attestation, without downloading weights."""
    from exporter.ship.oci_ops import inspect as do_inspect

    _report_waits()

    r = do_inspect(source, policy=_policy(verify_key, policy), insecure=insecure)
    if as_json:
        import json

        typer.echo(json.dumps(r.to_dict(), indent=2))
        return
    typer.echo(f"{r.reference}@{r.digest} ({r.encoding}, variant {r.variant or '-'})")
    if r.config:
        d, c = r.config.get("descriptor", {}), r.config.get("config", {})
        typer.echo(
            f"  model: {d.get('name')} @ {d.get('revision')}; format {c.get('format')}, "
            f"precision {c.get('precision')}, quantization {c.get('quantization', '-')}"
        )
    for path, media_type, size in r.files:
        typer.echo(f"  {size:>10}  {path}  ({media_type})")
    for ref in r.referrers:
        kind = "attestation" if ref.get("summary") else "signature"
        typer.echo(
            f"  {kind} {ref['digest'][:19]}… key {str(ref['key'])[:16]}: {ref.get('summary') or ref['predicateType']}"
        )
    for line in r.trust or ["(not verified: pass --verify-key or --policy)"] * bool(r.referrers):
        typer.echo(f"  {line}")


def promote(
    source: Annotated[str, typer.Argument(help="oci://HOST/REPO:TAG (or @sha256:...) to promote.")],
    target: Annotated[str, typer.Argument(help="oci://HOST/REPO:TAG to point at the same digest.")],
    verify_key: VerifyKeys = None,
    policy: PolicyFile = None,
    insecure: Annotated[bool, typer.Option("--insecure", help=_INSECURE)] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-tag by digest inside one registry after verifying the signature and the fidelity attestation."""
    from exporter.ship.oci_ops import promote as do_promote

    _report_waits()

    r = do_promote(source, target, policy=_policy(verify_key, policy, required=True), insecure=insecure)
    if as_json:
        print_result_json(r)
        return
    moved = f" (was {r.previous[:19]}…)" if r.previous else ""
    mounted = f", {r.mounted} blobs mounted" if r.mounted else ", no blob copied"
    typer.echo(f"promoted {r.source} -> {r.target}@{r.digest}{moved}{mounted}")
    for line in r.trust:
        typer.echo(f"  {line}")
