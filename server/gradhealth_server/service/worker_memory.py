"""Was a worker that died killed by its memory cap?

A worker's memory is capped two ways: `--worker-memory-mb` is an address-space
limit (RLIMIT_AS) on a CPU worker, and a container's memory limit is enforced by
the kernel's out-of-memory killer. Neither tells the server why the child died:
under RLIMIT_AS an allocation TensorFlow does not check (a thread stack in XLA's
compiler, a buffer in Eigen) ends the process with SIGSEGV or SIGABRT, and the
OOM killer sends SIGKILL. So the server watches while a job runs:

- the child's peak address space (VmPeak, kept by the kernel), sampled from
  /proc: a SIGSEGV, SIGBUS or SIGABRT at or near the cap (within NEAR_CAP of it:
  the request that failed is not counted, a thread stack or a tensor) is the cap;
- the cgroup's count of OOM kills: one more during the job, and the child was
  SIGKILLed, is the container's limit.

Anything else (a SIGKILL from an operator, a crash well under the cap) stays a
plain death. TensorFlow reserves much address space: a worker capped at 3000 MiB
peaks near 2,800 MiB on a small model, so a crash of ours there reads as memory
too; the message gives both figures.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
# How far under its cap a worker's sampled peak may be when the allocation that
# killed it failed: that request is not counted (XLA's thread stacks are 8 MiB,
# the probe's tensors up to a few hundred MiB), and the last sample may be up to
# one poll old.
NEAR_CAP_FRACTION = 0.10
NEAR_CAP_MIN_BYTES = 256 * MiB
# Deaths an allocation failure causes: an unchecked null (SIGSEGV, SIGBUS), a
# failed check or std::bad_alloc (SIGABRT), the OOM killer (SIGKILL).
MEMORY_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL})
OOM_EVENTS = (
    Path("/sys/fs/cgroup/memory.events"),  # cgroup v2: "oom_kill N"
    Path("/sys/fs/cgroup/memory/memory.oom_control"),  # cgroup v1: "oom_kill N"
)


def oom_kills(paths: tuple[Path, ...] = OOM_EVENTS) -> int | None:
    """How many processes the kernel's OOM killer has killed in this cgroup, or
    None when the cgroup does not say."""
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def peak_address_space(pid: int) -> int | None:
    """The process's peak virtual memory so far (VmPeak), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class JobMemory:
    """What the server saw of one job's memory while it ran."""

    pid: int
    cap: int | None  # the address-space cap the child applied (None: none, or a GPU)
    oom_kills_at_start: int | None
    peak: int = 0

    @classmethod
    def start(cls, pid: int, cap: int | None) -> JobMemory:
        watch = cls(pid, cap, oom_kills())
        watch.sample()
        return watch

    def sample(self) -> None:
        if (peak := peak_address_space(self.pid)) is not None:
            self.peak = max(self.peak, peak)

    def verdict(self, code: int | None, oom_kills_now: int | None = None) -> str | None:
        """Why the child that ended with `code` died, if it was memory: one phrase
        for the caller; None when nothing says it was."""
        if code is None or code >= 0 or -code not in MEMORY_SIGNALS:
            return None
        now = oom_kills() if oom_kills_now is None else oom_kills_now
        start = self.oom_kills_at_start
        if -code == signal.SIGKILL and now is not None and start is not None and now > start:
            return (
                "it was killed by the kernel's out-of-memory killer (the container's memory "
                "limit; --worker-memory-mb sets each worker's share)"
            )
        if -code == signal.SIGKILL:  # RLIMIT_AS never sends it: an operator, or a bug
            return None
        near = max(NEAR_CAP_MIN_BYTES, self.cap * NEAR_CAP_FRACTION) if self.cap else 0
        if self.cap and self.peak >= self.cap - near:
            return (
                f"it ran out of memory: its address space reached {self.peak / MiB:,.0f} MiB of "
                f"its {self.cap / MiB:,.0f} MiB cap (--worker-memory-mb) and it was killed by "
                f"signal {-code}"
            )
        return None
