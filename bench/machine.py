"""What the figures were measured on: the same bench gives different figures on different CPUs of the
same core count (an AMD EPYC without AVX-512 trains the cnns 1.5-1.9x slower than a Xeon with it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_description() -> str:
    """E.g. "2 CPU cores (AMD EPYC, x86_64)": the core count and the processor's model name."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"{os.cpu_count()} CPU cores ({model}, {platform.machine()})"
