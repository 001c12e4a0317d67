"""The torch reference outputs are reused across exports of the same pin, probe set and toolchain."""

from __future__ import annotations

import numpy as np

from exporter.fingerprint import derive
from exporter.pipeline import ExportPlan, NoProgress, run_export
from exporter.quality import refcache


class Notes(NoProgress):
    def __init__(self):
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        self.lines.append(message)


def test_a_second_export_reuses_the_reference_and_gets_the_same_verdict(tiny_model_dir, tmp_path):
    first, second = Notes(), Notes()
    a = run_export(ExportPlan(model=str(tiny_model_dir), out=tmp_path / "a"), first)
    b = run_export(ExportPlan(model=str(tiny_model_dir), out=tmp_path / "b"), second)
    assert not any("cached reference" in n for n in first.lines)
    assert any("cached reference" in n for n in second.lines)
    pa, pb = (o.manifest["variants"][0]["parity"] for o in (a, b))
    assert pa["cosine_min"] == pb["cosine_min"] and b.manifest["variants"][0]["status"] == "passed"
    ib, ia = (o.manifest["variants"][0]["parity"]["batch_invariance"] for o in (b, a))
    assert ib["reference_cosine_min"] == ia["reference_cosine_min"] is not None  # the reference's own, cached
    # one entry for the probe set, one for the base graph's post-export check texts, one for the reference's own
    # batch invariance; the second export added none
    assert len(list((refcache.cache_dir() / "reference").glob("*.npy"))) == 3


def test_another_probe_set_or_a_corrupt_entry_recomputes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    k1, k2 = derive("ref", "probe", probe="a", packages={"torch": "1"}), derive("ref", "probe", probe="b")
    assert k1 != k2 and k1 == derive("ref", "probe", packages={"torch": "1"}, probe="a")
    assert refcache.cached(k1, compute)[1] is False and refcache.cached(k1, compute)[1] is True
    assert refcache.cached(k2, compute)[1] is False
    (refcache.cache_dir() / "reference" / f"{k1}.npy").write_bytes(b"not numpy")
    value, hit = refcache.cached(k1, compute)
    assert not hit and value.shape == (2, 3) and len(calls) == 3
