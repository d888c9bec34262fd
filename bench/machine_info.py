"""One line naming the machine a bench ran on, for its committed output (bench/results/)."""

from __future__ import annotations

import os
import platform
import time


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(threads: int) -> str:
    """Date, CPU model, ``nproc``, the threads used and the load average at the start (a
    shared machine slows both sides of a side-by-side ratio, not the ratio itself)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu_model()}; "
        f"nproc {os.cpu_count()}; threads {threads}; load average {load}"
    )
