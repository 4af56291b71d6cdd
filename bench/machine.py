"""What the figures were measured on: the same bench gives different figures on different CPUs of the
same core count (bench/time_to_accuracy_results.md has the cnns on a Xeon with AVX-512 and on an AMD
EPYC without it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_description() -> str:
    """E.g. "2 CPU cores (AMD EPYC, x86_64)": the core count and the processor's model name."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor() or "model unknown"
    return f"{os.cpu_count()} CPU cores ({model}, {platform.machine()})"
