"""Peak resident memory of this process, for benches that run each side in a child.

VmHWM, not `ru_maxrss`: Linux carries `ru_maxrss` over `exec` from the parent, so a
child of a bench that had just trained a ResNet50 reported the parent's peak.
"""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")
