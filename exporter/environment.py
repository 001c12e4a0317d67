"""The toolchain and CPU a run used, read without importing the heavy packages themselves."""

from __future__ import annotations

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
