"""Run the README's commands as a new user would, on the real default model, and record what they print.

A fresh working folder, ``HF_HOME`` and exporter cache (nothing cached), a real OCI registry on loopback (Debian's
``docker-registry``, as the tests run it), then each command of the README in order: seed the default, the
plain export, ``--variants best``, reading the verdict with ``verify``, packaging a layout, publish, pull,
``verify --integrity`` and loading the pulled variant with the torch-free runtime. Every command's line
(``$ ...``), its output and its exit code go to ``benchmarks/results/readme-<UTC time>.txt`` with the machine
line; the README's command lines and output blocks are copied from that file, and ``tests/test_readme.py``
fails on a README line that is not in the newest one.

    PYTHONPATH=. .venv/bin/python benchmarks/readme_run.py [--port 5055]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BIN, REPO_ROOT, machine, stopwatch

DEFAULT = "sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
ART = "artifacts/sentence-transformers--all-MiniLM-L6-v2/1110a243fdf4"
RESULTS = REPO_ROOT / "benchmarks" / "results"


class Journey:
    """Runs command lines in one working folder, echoing ``$ line``, the output and a non-zero exit code."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env, self.lines = workdir, env, []

    def run(self, line: str, ok: tuple[int, ...] = (0,)) -> str:
        argv = shlex.split(line)
        if argv[0] in ("exporter", "python"):
            argv[0] = str(BIN / argv[0])
        with stopwatch() as t:
            proc = subprocess.run(
                argv, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        out = proc.stdout.rstrip("\n")  # stdout and stderr in the order a terminal shows them
        self.lines += [f"$ {line}", *([out] if out else [])]
        if proc.returncode:
            self.lines += ["$ echo $?", str(proc.returncode)]
        self.lines.append(f"# ({t.seconds:.1f} s wall)")
        print(f"$ {line}  -> exit {proc.returncode} in {t.seconds:.1f} s", file=sys.stderr)
        if proc.returncode not in ok:
            sys.exit(f"README command failed ({proc.returncode}): {line}\n{out[-3000:]}")
        return proc.stdout


def journey(j: Journey, registry: str) -> None:
    j.run("exporter seed-default")
    j.run("exporter export")
    j.run(f"exporter export {DEFAULT} --variants best")
    manifest = json.loads((j.workdir / ART / "manifest.json").read_text("utf-8"))
    best = manifest["recommended"]["variant"]
    j.run(f"exporter verify {ART} --variants onnx,{best},openvino-qint8 --junit verify.xml", ok=(3,))
    j.run(f"exporter package {ART} --variant {best} --layout st --out served")
    repo = f"oci://{registry}/models/minilm"
    j.run(f"exporter publish {ART} {repo} --variants {best}")
    j.run(f"exporter pull {repo}:1110a243fdf4-{best} model")
    j.run("exporter verify model --integrity")
    j.run("exporter verify model")
    j.run("""python -c 'from exporter import runtime; print(runtime.load("model").encode(["hi"]).shape)'""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=5055, help="loopback port of the registry (default 5055)")
    args = parser.parse_args()
    from tests.registry_server import RegistryServer

    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="readme-run-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        env = {**os.environ, "HF_HOME": str(Path(tmp) / "hf"), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
        env["EXPORTER_CACHE_DIR"] = str(Path(tmp) / "cache")  # no reference outputs from earlier runs
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        server = RegistryServer(Path(tmp) / "registry", port=args.port).start()
        try:
            j = Journey(work, env)
            with stopwatch() as total:
                journey(j, server.host)
        finally:
            server.stop()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True, text=True)
    head = f"{when}; exporter at commit {commit.stdout.strip() or 'unknown'}; all commands {total.seconds:.0f} s"
    text = "\n".join([machine(), head, *j.lines])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"readme-{started}.txt"
    out.write_text(text + "\n", "utf-8")
    print(text)
    print(f"\nwritten: {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
