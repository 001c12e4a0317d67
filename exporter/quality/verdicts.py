"""One verification case and its statuses: what ``verify`` reports per integrity check and per variant, and
what the torch-free check against recorded reference vectors reports too."""

from __future__ import annotations

from dataclasses import dataclass, field

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass
class CaseResult:
    """One verification case: ``integrity`` or a variant id."""

    name: str
    status: str  # passed | failed | error | skipped
    message: str = ""
    failures: list[str] = field(default_factory=list)  # one line per failed check
    parity: dict | None = None  # the fresh parity (manifest ``parity`` format), judged under the policy
    recorded: dict | None = None  # the parity recorded at export time
    looser: list[str] = field(default_factory=list)  # recorded thresholds looser than the policy's
    seconds: float = 0.0

    @property
    def ok(self) -> bool:  # skipped: not judged here (files failed integrity, or this CPU cannot run it)
        return self.status in (PASSED, SKIPPED)
