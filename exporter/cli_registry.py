"""The ``package``, ``publish`` and ``pull`` commands (CLI layer: parse options, call the library, print).

Register them on the app with ``app.command()(package)`` etc. Errors are not caught here: the main app's
shared handler turns each ``ExporterError`` into its one-line message, hint and exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_INSECURE = "Allow plain HTTP to a registry that is not on this machine (loopback always uses HTTP)."


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
        bool, typer.Option("--allow-failed", help="Package a variant whose parity check did not pass.")
    ] = False,
) -> None:
    """Write a deterministic package of one variant: its files, the shared files, the narrowed manifest."""
    from exporter.package import build_package

    result = build_package(artifact, variant, out, allow_failed=allow_failed)
    typer.echo(f"packaged {result.variant}: {result.path} ({result.files} files, {result.size} bytes)")
    typer.echo(f"sha256:{result.sha256}")


def publish(
    artifact: Annotated[Path, typer.Argument(help="The artifact folder (holds manifest.json).")],
    target: Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO[:TAG]; the default tag is <sha12>-<variant>.")],
    variant: Annotated[
        str | None, typer.Option(help="Variant id, or 'all' (default: the recommended or only variant).")
    ] = None,
    allow_failed: Annotated[
        bool,
        typer.Option("--allow-failed", help="Publish a variant whose parity failed (annotated as such)."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Move a tag that points at other content.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help=_INSECURE)] = False,
) -> None:
    """Push each variant as an OCI artifact (one layer per file); the same content again is a no-op."""
    from exporter.registry import publish as do_publish

    for r in do_publish(artifact, target, variant=variant, allow_failed=allow_failed, force=force, insecure=insecure):
        note = " (parity failed: published with --allow-failed)" if r.allow_failed else ""
        blobs = f", {r.uploaded} blobs uploaded" if r.status != "unchanged" else ""
        typer.echo(f"{r.status} {r.variant}: {r.reference}@{r.digest}{blobs}{note}")


def pull(
    source: Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:...")],
    dest: Annotated[Path, typer.Argument(help="Folder to create with the variant's files and manifest.json.")],
    force: Annotated[bool, typer.Option("--force", help="Replace DEST if it exists.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help=_INSECURE)] = False,
) -> None:
    """Fetch a published variant, checking every digest and sha256; nothing is written on any mismatch."""
    from exporter.registry import pull as do_pull

    r = do_pull(source, dest, force=force, insecure=insecure)
    for line in r.cleaned:
        typer.echo(f"! {line}", err=True)
    typer.echo(f"pulled {r.variant}: {r.files} files ({r.size} bytes) into {r.dest} from {r.reference}@{r.digest}")
