"""REPORT.md and report.png: written beside the manifest, readable without the JSON, plot is a real PNG."""

from __future__ import annotations

import pytest

from exporter import manifest as mf
from tests.cli_runner import invoke
from tests.quality.test_verify import VARIANTS, _artifact_template, artifact  # noqa: F401 - fixtures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def benched_artifact(artifact):  # noqa: F811 - the fixture imported above
    from exporter.quality import bench

    bench.record(artifact, bench.bench(artifact, batch_sizes=[1, 32], threads=1, max_texts=8, rounds=1))
    return artifact


def test_report_written_after_bench(benched_artifact):
    from exporter.quality.report import write_report

    md, png = write_report(benched_artifact)
    assert md == benched_artifact / "REPORT.md" and png == benched_artifact / "report.png"
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5000
    text = md.read_text(encoding="utf-8")
    manifest = mf.load(benched_artifact)
    assert manifest["source"]["revision"] in text and manifest["source"]["repo"] in text
    for vid in VARIANTS:
        assert f"| {vid} |" in text or f"**{vid}** (recommended)" in text
    assert "x torch @32" in text and "cos min" in text and "nn@10" in text and "verdict" in text
    assert f"**{manifest['recommended']['variant']}**" in text
    assert manifest["recommended"]["rule"] in text
    assert "![speed vs fidelity](report.png)" in text
    mf.require_intact(benched_artifact, manifest)  # report files are not model files


def test_a_variant_left_out_of_the_bench_says_why(benched_artifact):
    """A variant the bench did not time shows "-" in the speed columns, and a line below the table says why
    (``bench.not_timed`` from ``--variants best``, ``bench.not_applicable`` for one this CPU cannot run)."""
    from exporter.quality.report import render_markdown

    manifest = mf.load(benched_artifact)
    manifest["bench"]["not_timed"] = {"onnx-o1": "its bf16 twin x passed the gate and is the faster of the two"}
    text = render_markdown(manifest)
    assert "- `onnx-o1` not timed: its bf16 twin x passed the gate and is the faster of the two." in text
    manifest["bench"]["not_timed"] = {}
    assert "not timed" not in render_markdown(manifest)


def test_report_before_bench(artifact):  # noqa: F811
    from exporter.quality.report import write_report

    md, png = write_report(artifact)
    assert png.read_bytes().startswith(PNG_MAGIC)
    text = md.read_text(encoding="utf-8")
    assert "not run yet" in text and "None yet" in text


def test_failed_variant_listed_with_its_failures(artifact):  # noqa: F811
    from exporter.quality.report import render_markdown

    manifest = mf.load(artifact)
    v = mf.get_variant(manifest, "onnx-o1")
    v["status"] = "failed"
    v["parity"]["passed"] = False
    v["parity"]["failures"] = ["cosine_min 0.970000 is below the threshold 0.9999."]
    text = render_markdown(manifest)
    assert "**FAILED**" in text and "## Failures" in text and "below the threshold 0.9999" in text


def test_pareto_front():
    from exporter.quality.report import pareto_front

    pts = [
        {"id": "exact-slow", "loss": 1e-7, "ratio": 1.3},
        {"id": "dominated", "loss": 1e-5, "ratio": 1.2},
        {"id": "lossy-fast", "loss": 1e-2, "ratio": 2.0},
        {"id": "middle", "loss": 1e-4, "ratio": 1.5},
    ]
    assert [p["id"] for p in pareto_front(pts)] == ["exact-slow", "middle", "lossy-fast"]


def test_cli_report(benched_artifact):
    (benched_artifact / "REPORT.md").unlink(missing_ok=True)
    result = invoke("report", str(benched_artifact))
    assert result.code == 0, result.err
    assert (benched_artifact / "REPORT.md").is_file() and "REPORT.md" in result.out
