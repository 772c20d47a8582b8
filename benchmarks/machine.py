"""What a benchmark ran on, for its JSON report: the machine and the versions that set the figures."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics

from core.device import cpu_flags, cpu_kind, cpu_model

PACKAGES = ("torch", "onnxruntime", "faiss-cpu", "facenet-pytorch", "numpy", "pillow", "fastapi", "uvicorn")


def machine() -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_model(), "cpu_kind": cpu_kind(), "cpu_flags": list(cpu_flags()), "cores": cores, "python": platform.python_version(),
            "os": platform.platform(), "versions": versions}


def spread(values: list[float]) -> dict:
    """A figure over repeated runs: each run's value, and their median, min and max."""
    return {"runs": values, "median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}
