"""What a benchmark ran on: the build machines change (AMD and Intel hosts have both been seen),
and a table is only comparable with one taken on the same processor."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """'<model>, <n> CPUs, load average a / b / c' for a benchmark's header."""
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu_model()}, {os.cpu_count()} CPUs, load average {load}"
