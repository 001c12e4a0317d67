"""Typed errors. The library raises these; only the CLI prints them and picks exit codes.

Every error carries a one-line ``message`` (what was wrong) and a ``hint`` (what to do).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every command (documented in ``exporter --help`` and the README)."""

    OK = 0
    FAILURE = 1  # anything else: one clear line, no traceback unless --verbose
    USAGE = 2  # bad input or usage
    FIDELITY = 3  # a variant failed its fidelity gate
    INTEGRITY = 4  # a hash / digest did not match
    INTERRUPTED = 130


class ExporterError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class UsageError(ExporterError):
    """Bad input: a malformed argument, a refused source, an unreadable file."""

    exit_code = ExitCode.USAGE


class SourceError(UsageError):
    """The model source cannot be resolved or is refused (unpinned, remote code, pickle, missing)."""


class ProbeError(UsageError):
    """A probe / calibration text file is empty, binary or malformed."""


class OutputError(UsageError):
    """The output location cannot be written."""


class FidelityError(ExporterError):
    """One or more variants failed their gate."""

    exit_code = ExitCode.FIDELITY


class IntegrityError(ExporterError):
    """A file or blob does not match the hash recorded for it."""

    exit_code = ExitCode.INTEGRITY


class ExportFailed(ExporterError):
    """A backend failed while building a variant."""


class RegistryError(ExporterError):
    """The OCI registry refused, failed or could not be reached."""


class DiskFullError(ExporterError):
    """The disk ran out of space while writing; nothing partial was left (exit 1)."""


class HubError(ExporterError):
    """The Hub could not be reached or failed (network, server error); exit 1."""


class BenchError(ExporterError):
    """A runner could not be benchmarked as asked (e.g. a session did not run on the requested provider)."""


def error_class(name: str) -> type[ExporterError]:
    """The ExporterError subclass called ``name`` (for errors carried across a process boundary as JSON);
    ExporterError itself when no class has that name."""
    pending, seen = [ExporterError], {}
    while pending:
        cls = pending.pop()
        seen[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return seen.get(name, ExporterError)
