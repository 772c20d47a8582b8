"""The hardware a process runs on: which device computes, how many cores it may use, and the
CPU's vector extensions (which decide how fast, and whether correct, int8 kernels are)."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

# The x86 extensions that change what ONNX Runtime's and torch's CPU kernels do: AVX2 is the
# floor, AVX-512 widens it, VNNI sums u8×s8 products into int32 without the int16
# saturation of plain AVX2 (core/embedding/int8.py), BF16 and AMX make bf16 autocast pay.
FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def resolve_device(choice: str = "auto") -> str:
    """"auto" → CUDA when present, else CPU; asking for CUDA without one is an error."""
    import torch  # here: listing devices is the only reason this module would load torch

    if choice not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"unknown device {choice!r}; choose auto, cpu or cuda")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return choice


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, as a container's CPU set limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def cpu_flags() -> tuple[str, ...]:
    """Which of FLAGS_THAT_MATTER this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    present = set(line.partition(":")[2].split())
    return tuple(flag for flag in FLAGS_THAT_MATTER if flag in present)


def cpu_kind() -> str:
    """A short name for the CPU's class, as figures are labelled with it: "AVX-512 VNNI",
    "AVX2 VNNI", "AVX2" or the machine's architecture."""
    flags = set(cpu_flags())
    vnni = " VNNI" if flags & {"avx512_vnni", "avx_vnni"} else ""
    if "avx512f" in flags:
        return "AVX-512" + vnni + (" BF16" if "avx512_bf16" in flags else "") + (" AMX" if "amx_tile" in flags else "")
    if "avx2" in flags:
        return "AVX2" + vnni
    return platform.machine() or "unknown"
