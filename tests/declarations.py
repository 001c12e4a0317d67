"""What test modules declare they exercise (``EXERCISED_VARIANTS``, ``EXERCISED_SHAPES``): the meta-tests that
fail when a catalogue entry or a support-table row has no test read these declarations here."""

from __future__ import annotations

import importlib
import pkgutil

import tests


def exercised(attribute: str) -> dict[str, list[str]]:
    """id -> the test modules whose ``attribute`` (a collection of ids) names it."""
    found: dict[str, list[str]] = {}
    for info in pkgutil.walk_packages(tests.__path__, prefix="tests."):
        if not info.name.rpartition(".")[2].startswith("test_"):
            continue
        module = importlib.import_module(info.name)
        for declared_id in getattr(module, attribute, ()):
            found.setdefault(declared_id, []).append(info.name.removeprefix("tests."))
    return found
