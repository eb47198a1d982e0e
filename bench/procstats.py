"""Process figures shared by the benchmarks (run as ``python bench/<script>.py``, so this folder
is on ``sys.path``)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ``ru_maxrss``, not inherited from the parent
    that spawned it), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
