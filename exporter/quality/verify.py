"""Verify an artifact: its files match the manifest, and every variant still passes its gate.

Two checks, results as data (``VerifyReport``); ``raise_for`` turns them into the exit code:

- integrity: every file the manifest lists is re-hashed; a changed, missing or unlisted model file is an
  ``IntegrityError`` (exit 4) naming the files. A variant whose own files fail is not re-run.
- fidelity: parity is re-run for each variant against the torch reference at the manifest's pinned source
  (resolved from the Hub cache, its files checked against the manifest's hashes), in a fresh Python process
  (``python -m exporter.cli.parity_worker``: a JSON request on stdin, one JSON object on stdout), by the
  gate the export used (``exporter.quality.gate``: same batches, same metrics), and judged against the
  policy in force (``exporter.quality.policy``: the kind's defaults, changed only by what the caller
  brings), never the thresholds the manifest records: those are shown beside, and a recorded threshold
  looser than the policy's fails the variant. A failure is a ``FidelityError`` (exit 3). The manifest's model
  kind (``exporter.kinds``) picks the loading class, the probe inputs (texts or pairs) and the metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from exporter import errors, plan_check
from exporter.environment import helper_env
from exporter.errors import ExporterError, FidelityError, IntegrityError
from exporter.quality.verdicts import ERROR, FAILED, PASSED, SKIPPED, CaseResult, summary  # noqa: F401 - the report's types


@dataclass
class VerifyReport:
    artifact: Path
    integrity: CaseResult
    variants: list[CaseResult]
    probe: dict | None = None  # name, sha256, n of the texts parity was re-run on
    source: dict | None = None  # repo, revision, path of the reference
    policy: dict | None = None  # digest and sources of the policy the variants were judged by
    files: dict | None = None  # variant id -> {path: sha256} of its and the shared files, as integrity checked

    @property
    def cases(self) -> list[CaseResult]:
        return [self.integrity, *self.variants]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cases)

    def to_dict(self) -> dict:
        return {
            "artifact": str(self.artifact),
            "ok": self.ok,
            "source": self.source,
            "probe": self.probe,
            "policy": self.policy,
            "files": self.files,
            "integrity": asdict(self.integrity),
            "variants": [asdict(c) for c in self.variants],
        }


def verify(
    artifact: Path,
    variant_ids: list[str] | None = None,
    probe: Path | None = None,
    consumers: list[str] | None = None,
    *,
    integrity_only: bool = False,
    host=None,
    policy=None,
    recorded: bool | None = None,
) -> VerifyReport:
    """Check ``artifact``'s files and re-run every chosen variant's parity in a fresh process.

    ``consumers`` (names from ``exporter.quality.consumers``) also loads each variant through those libraries; each
    is a row in the variant's fresh ``parity["consumers"]``, and one that disagrees fails the variant.
    ``integrity_only`` checks the files alone (no torch needed: what a serving host runs after a copy).
    A variant ``host`` (default: this CPU) cannot run (``VariantSpec.requires``, e.g. bf16 units) is skipped
    as not applicable: run anyway it would silently compute in f32 and prove nothing about the variant.
    ``policy`` (``exporter.quality.policy.Policy``; default: the kind's defaults) gives the thresholds.
    ``recorded``: judge through the runtime against the vectors the export recorded (None: where torch is missing).

    Raises UsageError for a bad manifest / unknown variant id, SourceError when the pinned source cannot be
    resolved, IntegrityError when the resolved source files differ from the manifest's. Variant outcomes
    (and the artifact's own file check) are returned, not raised: see ``raise_for``.
    """
    from exporter import manifest as mf
    from exporter.quality.policy import DEFAULT

    policy = policy or DEFAULT
    manifest = mf.load(artifact)
    if probe is not None:  # a bad probe file is bad input (exit 2), found before anything heavy runs
        from exporter.quality import probes

        probes.load_text_set(probe, "probe")
    elif not integrity_only:
        probe = export_probe(manifest)
    chosen = [mf.get_variant(manifest, v) for v in variant_ids] if variant_ids else list(manifest["variants"])
    kind = manifest["model"]["kind"]
    thresholds = {v["id"]: policy.thresholds_for(kind, v["precision"], v["id"]).to_dict() for v in chosen}
    start = time.perf_counter()
    check = _check_files(artifact, manifest, [v["id"] for v in chosen] if variant_ids else None)
    integrity = CaseResult(
        "integrity",
        PASSED if check.ok else FAILED,
        "all listed files match the manifest" if check.ok else check.describe(),
        failures=[f"{label}: {p}" for label, ps in _labelled(check) for p in ps],
        seconds=time.perf_counter() - start,
    )
    files = {v["id"]: {p: r["sha256"] for p, r in mf.listed_files(manifest, [v["id"]]).items()} for v in chosen}
    if integrity_only:
        return VerifyReport(artifact, integrity, [], files=files)
    damaged = set(check.mismatched) | set(check.missing)
    to_run, cases = _triage(chosen, damaged, host)
    source = {"repo": manifest["source"]["repo"], "revision": manifest["source"]["revision"]}
    probe_info = _gate_variants(
        artifact, manifest, to_run, cases, damaged, integrity, source, probe, consumers, thresholds, recorded
    )
    for v in to_run:
        _judge_record(cases[v["id"]], v, policy, kind)
    policy_info = {"digest": policy.digest, "judged_by": policy.describe()}
    return VerifyReport(artifact, integrity, [cases[v["id"]] for v in chosen], probe_info, source, policy_info, files)


def _triage(chosen: list[dict], damaged: set[str], host) -> tuple[list[dict], dict[str, CaseResult]]:
    """The variants to re-run, and a case for each that is not: its files fail integrity, it was not built,
    or this CPU cannot run it."""
    to_run, cases = [], {}
    for v in chosen:
        bad = sorted(f["path"] for f in v["files"] if f["path"] in damaged)
        if bad:
            cases[v["id"]] = CaseResult(v["id"], SKIPPED, f"not re-run: its files fail integrity ({', '.join(bad)})")
        elif v["status"] == ERROR or not v["files"]:
            cases[v["id"]] = CaseResult(v["id"], ERROR, f"not built at export: {v.get('error') or 'no files'}")
        elif why := plan_check.not_applicable(v["id"], host):
            cases[v["id"]] = CaseResult(v["id"], SKIPPED, f"not applicable here: {why}")
        else:
            to_run.append(v)
    return to_run, cases


def _gate_variants(
    artifact, manifest, to_run, cases, damaged, integrity, source, probe, consumers, thresholds, recorded=None
):
    """Re-run the gate for ``to_run`` into ``cases``: against the torch reference at the pin in a fresh
    process, or, on a host without torch (or with ``recorded``), against the reference vectors the export
    recorded. Returns the probe description (None when nothing ran)."""
    from exporter.quality import recorded_reference
    from exporter.runners import reference

    shared_bad = sorted(f["path"] for f in manifest["shared_files"] if f["path"] in damaged)
    if not to_run:
        return None
    if shared_bad:  # config/tokenizer damaged: no variant can be trusted
        for v in to_run:
            cases[v["id"]] = CaseResult(v["id"], SKIPPED, f"not re-run: shared files fail ({', '.join(shared_bad)})")
        return None
    if recorded_reference.torch_missing() if recorded is None else recorded:  # the vectors the export recorded
        probe_info, fresh = recorded_reference.verify_cases(artifact, manifest, to_run, consumers, thresholds)
        source["reference"] = "recorded"
        cases.update(fresh)
        return probe_info
    try:
        src = reference.recorded_source(manifest)
    except ExporterError as exc:
        if integrity.ok:
            raise  # e.g. the pinned source is not in the Hub cache: its own exit code
        for v in to_run:  # the integrity failure (exit 4) is the verdict; say why parity did not run
            cases[v["id"]] = CaseResult(v["id"], ERROR, f"reference unavailable: {exc}")
        return None
    source["path"] = str(src.path)
    probe_info, fresh = run_parity_subprocess(artifact, src.path, to_run, probe, manifest, consumers, thresholds)
    cases.update(fresh)
    return probe_info


def _judge_record(case: CaseResult, variant: dict, policy, kind: str) -> None:
    """Fail ``case`` when the thresholds its manifest records are looser than the policy's: an artifact that
    claims a laxer gate than the one it is held to was built, or edited, to pass less."""
    recorded = (variant.get("parity") or {}).get("threshold")  # shown beside, never judged by
    case.looser = policy.looser_than(recorded, kind, variant["precision"], variant["id"])
    if case.looser:
        case.failures.append("the manifest records thresholds looser than the policy: " + "; ".join(case.looser) + ".")
        if case.status == PASSED:
            case.status = FAILED


def export_probe(manifest: dict) -> Path | None:
    """The user probe file the export measured on, if it is still there unchanged (None: the built-in set).

    Without ``--probe``, verify re-runs parity on the texts the export used, so its figures compare with
    the recorded ones; a user file that moved or changed falls back to the built-in set (noted in the
    verdicts).
    """
    from exporter.errors import ProbeError
    from exporter.quality import probes

    src = manifest["probe"].get("source") or ""
    if not src or src.startswith("builtin:") or not Path(src).is_file():
        return None
    try:
        texts = probes.with_prompts(probes.load_text_set(Path(src), "probe"), manifest["model"].get("prompts"))
        same = texts.sha256 == manifest["probe"]["sha256"]
    except ProbeError:
        return None
    return Path(src) if same else None


def raise_for(report: VerifyReport) -> None:
    """IntegrityError (4) if files failed, else FidelityError (3) if a variant failed or could not run."""
    if not report.integrity.ok:
        raise IntegrityError(
            f"{report.artifact} does not match its manifest ({report.integrity.message}).",
            "Re-export or re-pull the artifact; do not edit files inside it.",
        )
    bad = [c for c in report.variants if not c.ok]
    if bad:
        detail = "; ".join(f"{c.name}: {_first_failure(c)}" for c in bad)
        raise FidelityError(
            f"variant(s) failed verification: {detail}.",
            "See the verdicts (--json / --junit); re-export the variant or pick a passing one.",
        )


def _first_failure(case: CaseResult) -> str:
    """A failed variant's first failure, and how many more its verdict lists (the error stays one short line)."""
    if not case.failures:
        return case.message
    more = len(case.failures) - 1
    return case.failures[0].rstrip(".") + (f" (and {more} more in its verdict)" if more else "")


def _labelled(check) -> list[tuple[str, list[str]]]:
    return [("link", check.links), ("changed", check.mismatched), ("missing", check.missing), ("unlisted", check.extra)]


def _check_files(artifact: Path, manifest: dict, ids: list[str] | None):
    """The manifest's check; with a variant subset, unlisted files anywhere in the artifact still count."""
    from exporter import manifest as mf

    check = mf.check_files(artifact, manifest, ids)
    if ids is not None:
        listed = mf.listed_files(manifest)
        for p in sorted(artifact.rglob("*")):
            rel = p.relative_to(artifact).as_posix()
            if p.is_file() and not p.is_symlink() and rel not in listed and not mf.is_meta(rel):
                check.extra.append(rel)
    return check


# ------------------------------------------------------------------------------- the fresh process
def run_parity_subprocess(
    artifact: Path,
    source_dir: Path,
    variants: list[dict],
    probe: Path | None,
    manifest: dict,
    consumers: list[str] | None = None,
    thresholds: dict[str, dict] | None = None,
) -> tuple[dict | None, dict[str, CaseResult]]:
    """Re-run parity for ``variants`` in a fresh ``python -m exporter.cli.parity_worker``, judged by
    ``thresholds`` (variant id -> the policy's thresholds; a missing id: its class default)."""
    request = {
        "artifact": str(artifact.resolve()),
        "source_dir": str(source_dir),
        "probe": str(probe.resolve()) if probe else None,
        "prompts": manifest["model"].get("prompts"),
        "max_seq_length": manifest["model"].get("max_seq_length"),
        "truncate_dim": manifest["model"].get("truncate_dim"),
        "kind": manifest["model"]["kind"],
        "generated": None if probe else manifest["probe"].get("generated"),  # re-made from the artifact's files
        "trust_remote_code": bool(manifest["source"].get("trust_remote_code")),
        "consumers": list(consumers or []),
        "variants": [
            {
                "id": v["id"],
                "precision": v["precision"],
                "load": v["load"],
                "threshold": (thresholds or {}).get(v["id"]),
            }
            for v in variants
        ],
    }
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.cli.parity_worker"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=helper_env(TOKENIZERS_PARALLELISM="false"),  # a kill -9 of verify takes its parity process with it
    )
    elapsed = time.perf_counter() - start
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit code {proc.returncode}"
        msg = f"the parity process failed: {tail}"
        return None, {v["id"]: CaseResult(v["id"], ERROR, msg, seconds=elapsed) for v in variants}
    if answer.get("fatal"):
        fatal = answer["fatal"]
        raise errors.error_class(fatal["type"])(fatal["message"], fatal["hint"])
    out = {}
    for v in variants:
        res = answer["results"].get(v["id"], {"error": "no result"})
        secs = res.get("seconds", 0.0)
        if "error" in res or "failed" in res:
            status, msg = (ERROR, res["error"]) if "error" in res else (FAILED, res["failed"])
            out[v["id"]] = CaseResult(v["id"], status, msg, failures=[msg], recorded=v.get("parity"), seconds=secs)
            continue
        parity = res["parity"]
        status = PASSED if parity["passed"] else FAILED
        failures = list(parity.get("failures", []))
        out[v["id"]] = CaseResult(
            v["id"],
            status,
            summary(parity, manifest, answer.get("probe")),
            failures=failures,
            parity=parity,
            recorded=v.get("parity"),
            seconds=secs,
        )
    return answer.get("probe"), out


def parity_answer(request: dict) -> dict:
    """Body of the fresh process (``exporter.cli.parity_worker``): load the reference and each variant and
    judge each with the gate the export used (``exporter.quality.gate``), by the policy's thresholds."""
    import torch

    from exporter import kinds
    from exporter.quality import gate, probes
    from exporter.runners.reference import load_reference
    from exporter.runners.variant import load_variant

    kind = request.get("kind") or kinds.ModelKind.SENTENCE_TRANSFORMER.value
    kspec = kinds.get(kind)
    from exporter.quality import tokenizer_probes

    artifact = Path(request["artifact"])
    probe_set = probes.load_text_set(Path(request["probe"]) if request["probe"] else None, "probe")
    if probe_set.source.startswith("builtin:") and request.get("generated") is None:
        probe_set = probes.with_prompts(probe_set, request.get("prompts"))  # an export from before the strata
    else:  # the tokenizer-derived probes re-made from the artifact's own (integrity-checked) tokenizer files
        probe_set = tokenizer_probes.for_model(
            probe_set,
            artifact,
            prompts=request.get("prompts"),
            record=request.get("generated"),
            trust_remote_code=bool(request.get("trust_remote_code")),
        )
    probe = kspec.probe(probe_set.texts, probe_set.labels())
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    reference = load_reference(
        kind,
        Path(request["source_dir"]),
        max_seq_length=request.get("max_seq_length"),
        truncate_dim=request.get("truncate_dim"),
    )
    the_gate = gate.Gate(
        kind=kind,
        probe=probe,
        probe_sha256=probe_set.sha256,
        reference=gate.reference_outputs(kind, reference, probe.inputs),
        thresholds=gate.requested_thresholds(kind),
        consumers=tuple(request.get("consumers") or ()),
        threads=threads,
        reference_model=reference,
    )
    results: dict[str, dict] = {}
    for item in request["variants"]:
        start = time.perf_counter()
        try:
            model = load_variant(artifact, item, kind, threads=threads)
            results[item["id"]] = {"parity": the_gate.check(artifact, item, model)}
        except FidelityError as exc:  # broken output (shape, NaN): a failed gate, not a crash
            results[item["id"]] = {"failed": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one variant's crash is its own verdict
            results[item["id"]] = {"error": f"{type(exc).__name__}: {exc}"}
        results[item["id"]]["seconds"] = time.perf_counter() - start
    probe_info = {"name": probe_set.name, "sha256": probe_set.sha256, "n": len(probe_set.texts)}
    return {"probe": probe_info, "results": results}
