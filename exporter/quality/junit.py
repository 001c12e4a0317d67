"""JUnit XML for ``exporter verify``: one test case for integrity, one per variant and one per (variant,
probe stratum) named ``<variant>[<stratum>]``, failed when the gate failed that stratum.

CI systems (GitLab, Jenkins, GitHub test reporters) display the file as it is: a failed fidelity gate is a
``<failure>`` (message: the failed checks), a variant that could not be run is an ``<error>``, a variant not
re-run because its files failed integrity is ``<skipped>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from exporter.fsutil import write_text_atomic
from exporter.quality.verify import ERROR, FAILED, PASSED, SKIPPED, CaseResult, VerifyReport


def to_xml(report: VerifyReport) -> str:
    """The report as a JUnit XML document (one ``<testsuite>`` inside ``<testsuites>``)."""
    cases = [*report.cases, *(s for c in report.variants for s in _stratum_cases(c))]
    counts = {s: sum(c.status == s for c in cases) for s in (FAILED, ERROR, SKIPPED)}
    total_time = f"{sum(c.seconds for c in cases):.3f}"
    root = ET.Element(
        "testsuites",
        name="exporter verify",
        tests=str(len(cases)),
        failures=str(counts[FAILED]),
        errors=str(counts[ERROR]),
        skipped=str(counts[SKIPPED]),
        time=total_time,
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"exporter.verify.{report.artifact.name}",
        tests=str(len(cases)),
        failures=str(counts[FAILED]),
        errors=str(counts[ERROR]),
        skipped=str(counts[SKIPPED]),
        time=total_time,
    )
    props = ET.SubElement(suite, "properties")
    for key, value in _properties(report).items():
        ET.SubElement(props, "property", name=key, value=value)
    for case in cases:
        _case(suite, case)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write(path: Path, report: VerifyReport) -> None:
    """Write the JUnit XML atomically."""
    write_text_atomic(path, to_xml(report))


def _properties(report: VerifyReport) -> dict[str, str]:
    props = {"artifact": str(report.artifact)}
    if report.source:
        props["source"] = f"{report.source.get('repo')}@{report.source.get('revision')}"
    if report.probe:
        props["probe_sha256"] = str(report.probe.get("sha256"))
        props["probe_n"] = str(report.probe.get("n"))
    return props


def _stratum_cases(case: CaseResult) -> list[CaseResult]:
    """One case per stratum of a variant's fresh parity: failed with the gate's lines that name it."""
    out = []
    for name, entry in ((case.parity or {}).get("strata") or {}).items():
        lines = [f for f in case.failures if f.startswith(f"stratum {name} ")]
        stats = ", ".join(f"{k} {v:.6g}" for k, v in entry.items() if isinstance(v, float))
        message = f"{entry['n']} texts: {stats} (worst text #{entry['worst_text_index']})"
        out.append(CaseResult(f"{case.name}[{name}]", FAILED if lines else PASSED, message, failures=lines))
    return out


def _case(suite: ET.Element, case: CaseResult) -> None:
    kind = "integrity" if case.name == "integrity" else "stratum" if case.name.endswith("]") else "fidelity"
    el = ET.SubElement(
        suite, "testcase", classname=f"exporter.verify.{kind}", name=case.name, time=f"{case.seconds:.3f}"
    )
    details = "\n".join(case.failures) or case.message
    if case.status == FAILED:
        ET.SubElement(el, "failure", message=case.message, type=kind).text = details
    elif case.status == ERROR:
        ET.SubElement(el, "error", message=case.message, type="error").text = details
    elif case.status == SKIPPED:
        ET.SubElement(el, "skipped", message=case.message)
    if case.parity:
        keys = (
            "cosine_min",
            "cosine_mean",
            "cosine_p01",
            "norm_rel_err_max",
            "neighbour_agreement_at_10",
            "spearman_pairwise",
            "skipped",
        )
        ET.SubElement(el, "system-out").text = "\n".join(f"{k}={case.parity.get(k)}" for k in keys)
