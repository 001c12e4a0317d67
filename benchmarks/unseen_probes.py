"""Text nobody tuned to: a probe file built from this machine's own files, and the verdict on it.

The built-in probe and calibration sets (``exporter/data``) are what the export gates and the int8 search are
tuned and judged on. This script writes a probe file from text none of them drew from, then runs
``exporter verify ART --probe FILE --json`` on each artifact's recommended variant (or ``--variants``) and
writes cosine_min, nn@10 and each stratum's worst text to ``benchmarks/results/unseen_probes-<UTC>.txt``.
Nothing is tuned on these texts: they are read, never fed back (a failing row is a finding, not a target).

Sources (deterministic for a given machine; the file's sha256 is printed so two runs can be compared):

- month and day names from glibc's locale files (``/usr/share/i18n/locales``, ``LC_TIME`` ``mon`` / ``day``,
  ``<Uxxxx>`` escapes decoded), one locale per Unicode script (the first locale file in name order whose
  names are in that script), the twelve months as one text and the seven days as another
  (stratum ``prose_multilingual``; a script the vocabulary lacks is what ``uncovered_script`` holds, but
  which ones those are depends on the model's tokenizer, so they are not labelled so here);
- lines of the licence texts in ``/usr/share/common-licenses`` (stratum ``prose_en``);
- the first paragraph of docstrings of Python standard-library functions (``prose_en``);
- source lines of those functions (``code_logs``);
- 1-3 word queries cut from the licence lines and docstrings (``short_query``).

    PYTHONPATH=. .venv/bin/python benchmarks/unseen_probes.py --write FILE
    PYTHONPATH=. .venv/bin/python benchmarks/unseen_probes.py ART [ART ...] [--hf-home DIR ...]

An artifact given as ``ART=HF_HOME`` is verified with that ``HF_HOME`` (its reference model's Hub cache).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import re
import subprocess
import time
import unicodedata
from pathlib import Path

from _common import BIN, load_average, machine, stopwatch, write_results

LOCALES = Path("/usr/share/i18n/locales")
LICENSES = Path("/usr/share/common-licenses")
STDLIB_MODULES = (
    "json",
    "textwrap",
    "shutil",
    "pathlib",
    "collections",
    "itertools",
    "functools",
    "difflib",
    "csv",
    "urllib.parse",
    "email.utils",
    "calendar",
    "statistics",
    "fractions",
    "tarfile",
)
PER_SOURCE = {"license": 90, "docstring": 70, "code": 40, "query": 70}


def _stable(items: list[str], n: int, salt: str) -> list[str]:
    """``n`` of ``items`` picked by the sha256 of salt + text (order- and run-independent), then sorted."""
    keyed = sorted(dict.fromkeys(items), key=lambda t: hashlib.sha256((salt + t).encode()).digest())
    return keyed[:n]


def _decode(field: str) -> str:
    return re.sub(r"<U([0-9A-Fa-f]{4,8})>", lambda m: chr(int(m.group(1), 16)), field)


def _lc_time_list(text: str, key: str) -> list[str] | None:
    """The ``key`` list (``mon`` / ``day``) of a locale file's LC_TIME section, decoded; None if absent/copied."""
    section = re.search(r"^LC_TIME\s*$(.*?)^END LC_TIME", text, re.M | re.S)
    if not section:
        return None
    body = section.group(1).replace("/\n", "")  # continuation lines
    m = re.search(rf"^\s*{key}\s+(.*)$", body, re.M)
    if not m:
        return None
    names = [_decode(s) for s in re.findall(r'"([^"]*)"', m.group(1))]
    return names if names and all(names) else None


def _script(text: str) -> str | None:
    """The Unicode script word (``TIBETAN``, ``ETHIOPIC``, ...) of the text's first letter outside ASCII."""
    for ch in text:
        if ord(ch) > 127 and unicodedata.category(ch).startswith("L"):
            return unicodedata.name(ch, "?").split()[0]
    return None


def locale_names() -> list[str]:
    """Month and day names, one locale per script (non-Latin scripts, and Latin ones with letters past ASCII)."""
    by_script: dict[str, list[str]] = {}
    if not LOCALES.is_dir():
        return []
    for path in sorted(LOCALES.iterdir()):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except (OSError, IsADirectoryError):
            continue
        mon, day = _lc_time_list(text, "mon"), _lc_time_list(text, "day")
        if not mon or not day:
            continue
        script = _script(" ".join(mon + day))
        if script and script not in by_script:
            by_script[script] = [", ".join(mon), ", ".join(day)]
    return [t for texts in by_script.values() for t in texts]


def license_lines() -> list[str]:
    lines = []
    for path in sorted(LICENSES.iterdir()) if LICENSES.is_dir() else []:
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = " ".join(line.split())
                if 40 <= len(line) <= 300 and re.search(r"[a-z]{3}", line):
                    lines.append(line)
    return _stable(lines, PER_SOURCE["license"], "license")


def _functions():
    import importlib

    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        for attr, obj in sorted(vars(module).items()):
            if not attr.startswith("_") and inspect.isfunction(obj) and obj.__module__ == module.__name__:
                yield obj


def docstrings_and_code() -> tuple[list[str], list[str]]:
    docs, code = [], []
    for fn in _functions():
        doc = inspect.getdoc(fn)
        if doc:
            para = " ".join(doc.split("\n\n")[0].split())
            if len(para) >= 20:
                docs.append(para)
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        in_doc = {line.strip() for line in (fn.__doc__ or "").splitlines()}
        for line in source.splitlines()[1:]:
            stripped = line.strip()
            if 25 <= len(stripped) <= 160 and stripped not in in_doc and not stripped.startswith(("#", '"', "'")):
                code.append(stripped)
    return _stable(docs, PER_SOURCE["docstring"], "doc"), _stable(code, PER_SOURCE["code"], "code")


def queries(texts: list[str]) -> list[str]:
    """1-3 consecutive words cut from the texts (punctuation trimmed), the position and length set by a hash."""
    out = []
    for text in texts:
        words = [w.strip(".,;:!?()\"'`") for w in text.split()]
        words = [w for w in words if w]
        if not words:
            continue
        h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
        n = 1 + h % 3
        start = (h // 3) % max(1, len(words) - n + 1)
        out.append(" ".join(words[start : start + n]))
    return _stable(out, PER_SOURCE["query"], "query")


def build() -> list[dict]:
    lic = license_lines()
    docs, code = docstrings_and_code()
    rows = [{"text": t, "stratum": "prose_multilingual", "source": "locale month/day names"} for t in locale_names()]
    rows += [{"text": t, "stratum": "prose_en", "source": "licence line"} for t in lic]
    rows += [{"text": t, "stratum": "prose_en", "source": "stdlib docstring"} for t in docs]
    rows += [{"text": t, "stratum": "code_logs", "source": "stdlib source line"} for t in code]
    rows += [{"text": t, "stratum": "short_query", "source": "1-3 word query"} for t in queries(lic + docs)]
    seen, unique = set(), []
    for row in rows:
        if row["text"] not in seen:
            seen.add(row["text"])
            unique.append(row)
    return unique


def write(path: Path) -> tuple[list[dict], str]:
    rows = build()
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(data)
    return rows, hashlib.sha256(data).hexdigest()


def verify(art: Path, hf_home: str | None, probe: Path, variants: str | None) -> tuple[list[str], dict | None]:
    manifest = json.loads((art / "manifest.json").read_text())
    rec = variants or (manifest.get("recommended") or {}).get("variant")
    if not rec:
        return [f"== {art}: no recommended variant and no --variants"], None
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if hf_home:
        env["HF_HOME"] = hf_home
    load = load_average()
    cmd = [str(BIN / "exporter"), "verify", str(art), "--probe", str(probe), "--variants", rec, "--json"]
    with stopwatch() as t:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [
        f"== {manifest.get('source', {}).get('model_id', art)} ({art.name}): variant(s) {rec}",
        f"exit {proc.returncode}; {t.seconds:.1f} s at load {load} -> {load_average()}",
    ]
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return lines + ["no JSON: " + proc.stderr[-1500:]], None
    return lines, report


def describe(report: dict, rows: list[dict]) -> list[str]:
    lines = []
    for case in [report.get("integrity") or {}, *(report.get("variants") or [])]:
        parity = case.get("parity") or {}
        metrics = parity.get("metrics") or parity
        lines.append(
            f"{case.get('name')}: {case.get('status')}; cosine_min {metrics.get('cosine_min')}; "
            f"nn@10 {metrics.get('neighbour_agreement_at_10')}; {case.get('message')}"
        )
        for stratum, entry in (metrics.get("strata") or {}).items():
            i = entry.get("worst_text_index")
            text = rows[i]["text"] if i is not None and i < len(rows) else "?"
            source = rows[i]["source"] if i is not None and i < len(rows) else "?"
            lines.append(
                f"  {stratum:<20} n={entry.get('n'):<4} cosine_min {entry.get('cosine_min')}"
                f"  nn@10 {entry.get('neighbour_agreement_at_10')}  worst: [{source}] {text[:90]!r}"
            )
        for failure in case.get("failures") or []:
            lines.append(f"  failure: {failure}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="*", help="artifact folders, each optionally ART=HF_HOME")
    parser.add_argument("--write", type=Path, help="only write the probe file here")
    parser.add_argument("--variants", default=None, help="variants to verify (default: each one's recommended)")
    args = parser.parse_args()
    if args.write:
        if args.write.suffix != ".jsonl":  # verify reads a .txt probe file as one raw text per line: JSON and all
            parser.error(f"--write {args.write}: the probe file is JSON lines with strata; name it *.jsonl")
        rows, sha = write(args.write)
        print(f"{len(rows)} texts, sha256 {sha}: {args.write}")
        return
    header = [machine(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())]
    print("\n".join(header), flush=True)
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"unseen-probes-{os.getpid()}.jsonl"
    rows, sha = write(probe)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    scripts = sorted({_script(r["text"]) or "LATIN/ASCII" for r in rows if r["source"].startswith("locale")})
    out = header + [
        f"probe file: {len(rows)} texts, sha256 {sha}; by source {counts}",
        f"locale scripts ({len(scripts)}): {' '.join(scripts)}",
        "nothing was tuned on these texts",
    ]
    print("\n".join(out[2:]), flush=True)
    for spec in args.artifacts:
        art, _, hf_home = spec.partition("=")
        lines, report = verify(Path(art), hf_home or None, probe, args.variants)
        if report is not None:
            lines += describe(report, rows)
        print("\n".join(lines), flush=True)
        out += [""] + lines
    probe.unlink(missing_ok=True)
    write_results("unseen_probes", out)


if __name__ == "__main__":
    main()
