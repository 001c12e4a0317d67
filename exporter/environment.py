"""The toolchain and CPU a run used, read without importing the heavy packages themselves."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

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


def cpu_info() -> dict:
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


def environment() -> dict:
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


def dies_with_parent():
    """A ``preexec_fn`` for a helper process (verify's parity process, a fleet worker) that must not outlive
    the tool: on Linux the kernel sends it SIGKILL when the thread that started it ends, ``kill -9`` of the
    tool included (``prctl(PR_SET_PDEATHSIG)``). None elsewhere. libc is resolved here, in the parent, so
    the forked child only makes the one call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)

    return arm
