"""What the figures were measured on: the same bench gives different figures on different CPUs of the
same core count, and one model name can be more than one: bench/time_to_accuracy_results.md has the
presets on a Xeon with AVX-512, on an "AMD EPYC" without it (family 25) and on one with it (family 26)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_description() -> str:
    """E.g. "2 CPU cores (AMD EPYC, family 26 model 2, AVX-512, x86_64)": the core count, the processor's
    model name, its family and model numbers, and whether it has AVX-512 (about twice as fast on the
    convolutional presets)."""
    cpuinfo = Path("/proc/cpuinfo")
    first: dict[str, str] = {}  # the first processor's fields
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    parts = [first.get("model name") or platform.processor() or "model unknown"]
    if "cpu family" in first:
        parts.append(f"family {first['cpu family']} model {first.get('model', 'unknown')}")
    if "flags" in first:
        parts.append("AVX-512" if "avx512f" in first["flags"].split() else "no AVX-512")
    return f"{os.cpu_count()} CPU cores ({', '.join([*parts, platform.machine()])})"
