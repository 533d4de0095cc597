"""The default memory cap of a worker, derived from the machine it runs on.

A fresh install must not let one upload take the whole machine: with no
`--worker-memory-mb`, each worker gets an equal share of what the container
(cgroup v2 or v1 limit) or, outside one, the machine has, less headroom for the
server process and the page cache. GPU workers get a share of their GPU's memory
instead (`gpu_share_mb`): CUDA maps far more address space than it uses, so an
address-space cap cannot bound them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

MiB = 1024 * 1024
# Kept back from the workers: the server process, its gRPC buffers, the kernel.
HEADROOM_BYTES = 1024 * MiB
HEADROOM_FRACTION = 0.10
# A worker needs this much just to import TensorFlow; a smaller share is no cap.
MIN_WORKER_BYTES = 2048 * MiB
CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
UNLIMITED_CGROUP = 1 << 60
GPU_HEADROOM_FRACTION = 0.10  # the CUDA context and cuDNN workspaces


def machine_memory_bytes() -> int:
    """Memory this process may use: the cgroup limit when there is one, else RAM."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED_CGROUP:
            total = min(total, int(text))
    return total


def default_worker_memory_bytes(workers: int, machine: int | None = None) -> int:
    """Each worker's share of the machine, less headroom; at least MIN_WORKER_BYTES."""
    machine = machine_memory_bytes() if machine is None else machine
    headroom = max(HEADROOM_BYTES, int(machine * HEADROOM_FRACTION))
    return max(MIN_WORKER_BYTES, (machine - headroom) // max(workers, 1))


def gpu_share_mb(workers_on_gpu: int = 1) -> int | None:
    """This process's share of GPU 0's memory in MiB, less headroom, or None when
    the GPU's size cannot be read (then TensorFlow grows its use on demand)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        total = int(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return int(total * (1 - GPU_HEADROOM_FRACTION)) // max(workers_on_gpu, 1)
