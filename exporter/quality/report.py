"""REPORT.md and report.png beside the manifest: what a person reads instead of the JSON.

REPORT.md: source and pin, environment and bench set-up, one table row per variant (size, the fidelity
metrics of the model's kind, ``KindSpec.report``, speed ratios to torch, verdict), the recommendation and
its rule, and the worst case per probe stratum of every variant (``KindSpec.strata``). report.png
(matplotlib, Agg): speed ratio to torch at the rule's batch size against fidelity loss
``1 - primary metric`` (``KindSpec.primary``: cosine_min for embedders, score_spearman for rerankers; log
scale), the Pareto front (no other variant is both faster and closer to torch) and the recommended variant
marked.
"""

from __future__ import annotations

from pathlib import Path

from exporter import kinds
from exporter.fsutil import atomic_path, write_text_atomic
from exporter.quality.recommend import eligible, rule_batch, size_bytes

REPORT_MD = "REPORT.md"
REPORT_PNG = "report.png"
LOSS_FLOOR = 1e-7  # 1 - the primary metric is drawn at least at this value on the log axis


def write_report(artifact: Path, manifest: dict | None = None) -> tuple[Path, Path]:
    """Write REPORT.md and report.png into ``artifact`` (atomically); returns both paths."""
    from exporter import manifest as mf

    manifest = manifest or mf.load(artifact)
    png = artifact / REPORT_PNG
    plot(manifest, png)
    md = artifact / REPORT_MD
    write_text_atomic(md, render_markdown(manifest))
    mf.record_written(artifact, [p for p in (md, png) if p.is_file()])  # --force may replace only these bytes
    return md, png


def points(manifest: dict) -> list[dict]:
    """One point per variant with its kind's primary metric and a bench ratio at the rule's batch size."""
    batch = rule_batch(manifest)
    key = kinds.of_manifest(manifest).primary.key
    out = []
    for v in manifest["variants"]:
        p, b = v.get("parity") or {}, v.get("bench") or {}
        ratio = (b.get("ratio_to_torch") or {}).get(str(batch)) if batch else None
        if p.get(key) is None or ratio is None:
            continue
        loss = max(1.0 - p[key], LOSS_FLOOR)
        out.append({"id": v["id"], "loss": loss, "ratio": ratio, "passed": eligible(v)})
    return out


def pareto_front(pts: list[dict]) -> list[dict]:
    """Points no other point dominates (at least as fast and as faithful, strictly better in one)."""

    def dominated(p: dict) -> bool:
        return any(
            q["ratio"] >= p["ratio"] and q["loss"] <= p["loss"] and (q["ratio"] > p["ratio"] or q["loss"] < p["loss"])
            for q in pts
        )

    return sorted((p for p in pts if not dominated(p)), key=lambda p: p["loss"])


def plot(manifest: dict, path: Path) -> None:
    """Draw the speed-vs-fidelity chart to ``path`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = points(manifest)
    rec = (manifest.get("recommended") or {}).get("variant")
    batch = rule_batch(manifest)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        if not pts:
            ax.text(0.5, 0.5, "no benchmark yet: run `exporter bench`", ha="center", va="center")
            ax.set_axis_off()
        else:
            for passed, colour, label in ((True, "tab:green", "passes fidelity"), (False, "tab:red", "fails fidelity")):
                sel = [p for p in pts if p["passed"] is passed]
                if sel:
                    ax.scatter([p["loss"] for p in sel], [p["ratio"] for p in sel], c=colour, label=label, zorder=3)
            for p in pts:
                ax.annotate(p["id"], (p["loss"], p["ratio"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
            front = pareto_front(pts)
            ax.step(
                [p["loss"] for p in front],
                [p["ratio"] for p in front],
                where="post",
                ls="--",
                c="grey",
                label="Pareto front",
            )
            for p in pts:
                if p["id"] == rec:
                    ax.scatter(
                        [p["loss"]],
                        [p["ratio"]],
                        s=320,
                        marker="*",
                        c="gold",
                        edgecolors="k",
                        zorder=4,
                        label=f"recommended: {rec}",
                    )
            ax.axhline(1.0, c="k", lw=0.8, label="torch fp32 reference")
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            key = kinds.of_manifest(manifest).primary.key
            ax.set_xlabel(f"fidelity loss: 1 - {key} vs torch (log, floored at {LOSS_FLOOR:g}; lower is better)")
            ax.set_ylabel(f"throughput / torch at batch {batch} (higher is better)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8, loc="best")
        src = manifest["source"]
        ax.set_title(f"{src['repo'] or src['local_path']} @ {(src['revision'] or 'unpinned')[:12]}", fontsize=10)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _f(x, digits: int = 6) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render_markdown(manifest: dict) -> str:
    """The whole REPORT.md text."""
    src, env, bench = manifest["source"], manifest["environment"], manifest.get("bench") or {}
    sizes = bench.get("batch_sizes") or []
    name = src["repo"] or src["local_path"]
    lines = [f"# Export report: {name}", ""]
    if src["pinned"]:
        lines.append(f"- Source: `{src['repo']}` pinned at commit `{src['revision']}`")
    else:
        lines.append(f"- Source: `{name}` (**not pinned**: {src.get('requested_ref') or 'local folder'})")
    lines += [
        f"- Exported {manifest['created_at']} with exporter {manifest['tool_version']}; probe set "
        f"`{manifest['probe']['name']}` ({manifest['probe']['n']} texts, sha256 `{manifest['probe']['sha256'][:12]}`)",
        f"- Publishable: {'yes' if manifest['publishable'] else 'no'}",
        f"- CPU: {env['cpu']['model']} ({', '.join(env['cpu']['flags']) or 'no relevant flags'})",
    ]
    if bench:
        unit = bench.get("unit") or kinds.of_manifest(manifest).unit  # texts, or pairs for a reranker
        lines.append(
            f"- Bench: {bench['created_at']}, {bench['threads']} thread(s), batch sizes {sizes}, "
            f"{bench['rounds']} interleaved rounds on {bench['texts']['n']} texts; torch fp32 reference "
            + ", ".join(f"{_f(t, 1)} {unit}/s @ {b}" for b, t in bench["reference"]["throughput"].items())
        )
        if bench.get("memory"):
            lines.append(
                f"- Batches {bench['batching']}; one runner resident at a time, "
                f"peak resident memory {bench['memory']['peak_rss_mb']:.0f} MiB"
            )
        lat = bench["reference"].get("latency_ms") or {}
        if lat:
            lines.append(f"- Torch latency at batch 1: p50 {_f(lat['p50'], 2)} ms, p95 {_f(lat['p95'], 2)} ms")
    else:
        lines.append("- Bench: not run yet (`exporter bench ARTIFACT`)")
    lines += ["", "## Variants", ""]
    shown = kinds.of_manifest(manifest).report
    head = ["variant", "backend", "precision", "size MB", *(m.label for m in shown)]
    head += [f"x torch @{b}" for b in sizes] + ["p50 ms @1", "p95 ms @1", "runs on", "verdict"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rec = (manifest.get("recommended") or {}).get("variant")
    for v in manifest["variants"]:
        lines.append("| " + " | ".join(_row(v, sizes, rec, shown)) + " |")
    untimed = {**(bench or {}).get("not_applicable", {}), **(bench or {}).get("not_timed", {})}
    if untimed:  # a "-" in the speed columns says nothing; these say why
        lines += [""] + [f"- `{vid}` not timed: {why}." for vid, why in untimed.items()]
    lines += ["", "## Recommendation", ""]
    recd = manifest.get("recommended")
    if not recd:
        lines.append("None yet: run `exporter bench` to measure speed on this CPU.")
    elif recd.get("variant"):
        lines.append(
            f"**{recd['variant']}** (`{recd.get('file_name')}`, backend {recd.get('backend')}): "
            f"{_f(recd['throughput_ratio'], 2)}x torch throughput at batch {recd['batch_size']}."
        )
    else:
        lines.append(f"No variant recommended: {recd.get('reason')}.")
    if recd:
        lines += ["", f"Rule: {recd['rule']}."]
    kspec = kinds.of_manifest(manifest)
    strata = kspec.strata_rows([v.get("parity") for v in manifest["variants"]])
    if strata:
        ids = [v["id"] for v in manifest["variants"]]
        lines += ["", "## Worst case per probe stratum", "", f"Each cell: {kspec.strata_label()} over the stratum.", ""]
        lines += ["| " + " | ".join(["stratum (texts)", *ids]) + " |", "|" + "---|" * (len(ids) + 1)]
        lines += ["| " + " | ".join(row) + " |" for row in strata]
    failures = [(v["id"], line) for v in manifest["variants"] for line in _problems(v)]
    if failures:
        lines += ["", "## Failures", ""] + [f"- `{vid}`: {line}" for vid, line in failures]
    lines += ["", f"![speed vs fidelity]({REPORT_PNG})", ""]
    return "\n".join(lines)


def _row(v: dict, sizes: list[int], rec: str | None, shown: tuple[kinds.Metric, ...]) -> list[str]:
    p, b = v.get("parity") or {}, v.get("bench") or {}
    ratios = b.get("ratio_to_torch") or {}
    lat = b.get("latency_ms") or {}
    runtime = b.get("runtime") or {}
    verdict = {"passed": "passed", "failed": "**FAILED**", "error": "**ERROR**"}[v["status"]]
    name = f"**{v['id']}** (recommended)" if v["id"] == rec else v["id"]
    return [
        name,
        v["backend"],
        v["precision"],
        f"{size_bytes(v) / 1e6:.1f}",
        *(m.format(p.get(m.key)) for m in shown),
        *[_f(ratios.get(str(s)), 2) for s in sizes],
        _f(lat.get("p50"), 2),
        _f(lat.get("p95"), 2),
        str(runtime.get("provider") or runtime.get("device") or runtime.get("engine") or "-"),
        verdict,
    ]


def _problems(v: dict) -> list[str]:
    return list((v.get("parity") or {}).get("failures") or []) + ([v["error"]] if v.get("error") else [])
