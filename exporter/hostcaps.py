"""What this CPU can do, as data: the /proc/cpuinfo flags that decide which variants make sense here.

The catalogue (``exporter.variants``) names flags from ``CpuFlag``; ``Host`` is the typed set read once
per process. Tests build a ``Host`` by hand (``Host.of("avx2")``) to ask about other machines.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path


class CpuFlag(StrEnum):
    """Flags as /proc/cpuinfo spells them (x86 ``flags``, ARM ``Features``)."""

    AVX2 = "avx2"
    AVX512F = "avx512f"
    AVX512_VNNI = "avx512_vnni"
    AVX_VNNI = "avx_vnni"
    AVX512_BF16 = "avx512_bf16"
    AMX_BF16 = "amx_bf16"
    AMX_INT8 = "amx_int8"
    ASIMD = "asimd"  # ARM64 NEON


# Units with int8 dot products (no 16-bit saturation): static int8 outruns fp32 on these, not on AVX2 alone.
INT8_UNITS = (CpuFlag.AVX512_VNNI, CpuFlag.AVX_VNNI, CpuFlag.AMX_INT8)

# Units that compute in bf16 natively: OpenVINO runs a bf16 precision hint on these, f32 elsewhere.
BF16_UNITS = (CpuFlag.AVX512_BF16, CpuFlag.AMX_BF16)


@dataclass(frozen=True)
class Host:
    arch: str
    flags: frozenset[CpuFlag]

    @classmethod
    def of(cls, *flags: str, arch: str = "x86_64") -> Host:
        return cls(arch=arch, flags=frozenset(CpuFlag(f) for f in flags))

    def has_any(self, flags: tuple[CpuFlag, ...]) -> bool:
        return bool(self.flags.intersection(flags))

    def describe(self) -> str:
        return f"{self.arch} [{' '.join(sorted(self.flags)) or 'no listed flags'}]"


def parse_flags(cpuinfo_text: str) -> frozenset[CpuFlag]:
    """The ``CpuFlag`` members in the first ``flags`` / ``Features`` line of a /proc/cpuinfo text."""
    known = {f.value: f for f in CpuFlag}
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(known[w] for w in value.split() if w in known)
    return frozenset()


@cache
def this_host() -> Host:
    """This machine (read once per process); no flags where /proc/cpuinfo is absent."""
    path = Path("/proc/cpuinfo")
    text = path.read_text(errors="replace") if path.exists() else ""
    return Host(arch=platform.machine(), flags=parse_flags(text))
