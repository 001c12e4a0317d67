"""Meta-test: every catalogue entry is built and parity-checked by some test.

A test module declares the catalogue ids it builds *and* parity-checks in a module-level tuple
``EXERCISED_VARIANTS`` (next to the parametrised test that uses them). This test imports every
``tests/**/test_*.py`` module, unions those tuples and compares with ``exporter.variants.CATALOGUE``: a new
catalogue entry without a test fails here, and so does a declared id that is not in the catalogue.
"""

from __future__ import annotations

from exporter import variants
from tests import declarations


def exercised() -> dict[str, list[str]]:
    """variant id -> test modules that declare they build and parity-check it."""
    return declarations.exercised("EXERCISED_VARIANTS")


def test_every_catalogue_entry_is_built_and_parity_checked_by_a_test():
    """Every entry this host can run (``VariantSpec.requires``): one it cannot is built and gated only on a host
    that has its units, where its module declares it."""
    covered = exercised()
    host = variants.this_host()
    missing = [s.id for s in variants.CATALOGUE if s.id not in covered and s.missing_on(host) is None]
    assert not missing, (
        f"catalogue entries without a test: {', '.join(missing)}. Build and parity-check them in a test module "
        "and declare EXERCISED_VARIANTS = (...ids...) in it."
    )


def test_declared_ids_are_in_the_catalogue():
    unknown = {i: mods for i, mods in exercised().items() if i not in variants.BY_ID}
    assert not unknown, f"tests declare ids that are not in the catalogue: {unknown}"


def test_catalogue_ids_and_files_are_unique():
    ids = [s.id for s in variants.CATALOGUE]
    # A variant may serve its base's file with other load options (openvino-bf16); no other sharing.
    files = [
        s.file_name
        for s in variants.CATALOGUE
        if not (s.derives_from and variants.BY_ID[s.derives_from].file_name == s.file_name)
    ]
    assert len(ids) == len(set(ids)) and len(files) == len(set(files))
    for spec in variants.CATALOGUE:
        assert spec.id == spec.id.lower(), "the manifest schema wants lower-case ids"
        assert spec.derives_from is None or spec.derives_from in variants.BY_ID
