"""The toolchain and CPU a run used, read without importing the heavy packages themselves."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from exporter.manifest_types import CpuInfo, Environment

# Distribution names whose versions go into every manifest.
TOOLCHAIN = (
    "torch",
    "transformers",
    "sentence-transformers",
    "tokenizers",
    "huggingface-hub",
    "optimum",
    "optimum-onnx",
    "optimum-intel",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "optimum-quanto",
    "numpy",
)

# CPU flags that decide which int8 kernels run; the rest of /proc/cpuinfo's list is noise here.
RELEVANT_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def package_versions(names: tuple[str, ...] = TOOLCHAIN) -> dict[str, str | None]:
    """Installed versions of the named distributions (None where one is missing)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info() -> CpuInfo:
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    import os

    return {
        "model": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "flags": [f for f in RELEVANT_FLAGS if f in flags],
    }


def environment() -> Environment:
    """Everything about this machine and toolchain that a manifest records."""
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "packages": package_versions(),
        "cpu": cpu_info(),
    }


def idle_threads_sleep() -> str:
    """Let torch's idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) as ONNX Runtime's do, unless the user
    chose a policy; returns the policy in force, as bench records it (``bench.torch_idle_threads``).

    libgomp reads the policy when torch loads: once loaded, it is too late, and the record says so. The CLI
    calls this at the start of every command and worker, bench again for library callers. Spinning threads on
    busy cores made torch up to 30x slower than on a quiet machine (a 2-layer model: 692 ms a text against
    2.1 ms passive, 2 threads, load average 11), which inflates every ratio to torch; plain ``export`` of the
    default, torch and ONNX Runtime taking turns on 2 busy cores (load 7): 13.3 s of CPU against 14.1 s
    spinning, 4 rounds each, alternated."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    policy = os.environ.get("OMP_WAIT_POLICY")
    return f"OMP_WAIT_POLICY={policy} (set before torch loaded)" if policy else "as torch loaded (spinning allowed)"


PARENT_ENV = "EXPORTER_PARENT_PID"  # set for a helper process that must die with the process that started it


def helper_env(**extra: str) -> dict[str, str]:
    """The environment of a helper process (verify's parity process, a fleet worker): ours, plus who its
    parent is, for ``die_with_parent``."""
    return {**os.environ, **extra, PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """First thing in a helper process started with ``helper_env``: on Linux the kernel sends it SIGKILL when
    its parent ends, ``kill -9`` included (``prctl(PR_SET_PDEATHSIG)``); a parent already gone ends it now.
    Done in the child, not as a ``preexec_fn`` (unsafe in a parent with threads, as ``exporter run`` has)."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:  # the parent died before the call: nobody waits for this process
        os._exit(1)
