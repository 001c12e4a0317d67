"""How a long step reports itself: the ``Progress`` protocol the CLI implements (a spinner and a tick line per
step) and ``NoProgress``, which says nothing (the library's default, and the parity worker's)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Progress(Protocol):
    def step(self, label: str) -> contextlib.AbstractContextManager: ...

    def note(self, message: str) -> None: ...  # something done on the user's behalf, worth a line


class NoProgress:
    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        yield

    def note(self, message: str) -> None:
        pass
