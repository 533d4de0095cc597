"""Running out of memory, on the real server (issue 15): inside TensorFlow's probe,
and killed outright by the worker's memory cap. Either way the caller gets
RESOURCE_EXHAUSTED naming the memory cap, the server serves on, and the next
normal call is answered.

The model is dot-product self-attention over a variable-length sequence: the
batch sets T and the scores are (rows, T, T), so the batch alone decides how much
the probe allocates, while passing every up-front cap."""

from __future__ import annotations

import re
import signal

import grpc
import pytest

from gradhealth.client import GradientHealthClient, Retry
from gradhealth_server.service.worker_memory import JobMemory, MiB, oom_kills
from tests.service import MemoryWatch, ServerProcess
from tests.test_reliability import _self_attention_checkpoint, _sequence_batch

ONE_TRY = Retry(attempts=1)
# A cap with room for TensorFlow's own address space (about 1.6 GB at import, more
# while tracing: 2000 MiB left a tiny model's first trace short) and a sequence whose
# attention scores pass the up-front estimate but not the allocator.
PROBE_OOM_CAP_MB = 2400
PROBE_OOM_STEPS = 1250


@pytest.mark.slow
def test_an_out_of_memory_inside_the_probe_is_resource_exhausted_naming_memory(tmp_path):
    """2400 MiB of address space without XLA: TensorFlow's CPU allocator fails the
    (32, 1250, 1250) scores of a micro-batch and raises ResourceExhaustedError
    inside the compiled probe. The up-front estimate is under its share; the call
    is RESOURCE_EXHAUSTED naming memory (it was INVALID_ARGUMENT "Graph execution
    error"), the same worker serves on."""
    checkpoint = _self_attention_checkpoint(tmp_path / "attention.keras")
    short = _sequence_batch(tmp_path / "short.npz", 16, 16)
    long = _sequence_batch(tmp_path / "long.npz", 64, PROBE_OOM_STEPS)
    server = ServerProcess(
        tmp_path / "server", "--worker-memory-mb", str(PROBE_OOM_CAP_MB), "--no-xla"
    )
    server.start()
    try:
        with (
            GradientHealthClient(server.target, retry=ONE_TRY, timeout=300) as client,
            MemoryWatch(server) as memory,
        ):
            assert client.diagnose(checkpoint, batch=short, run_id="probe-oom").status
            workers = server.worker_pids()
            with pytest.raises(grpc.RpcError) as caught:
                client.diagnose(checkpoint, batch=long, run_id="probe-oom")
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = caught.value.details()
            assert "the probe ran out of memory" in details, details
            assert "--worker-memory-mb" in details and "OOM when allocating" in details
            assert "\n" not in details
            assert client.diagnose(checkpoint, batch=short, run_id="probe-oom").status
        print(f"peak worker RSS {memory.peak_workers / MiB:,.0f} MiB: {details}")
        assert server.worker_pids() == workers  # a clean error, not a crash
        assert memory.peak_workers < PROBE_OOM_CAP_MB * MiB, memory.peak_workers
        assert server.metric("gradhealth_rejected_total", reason="too_large") == 1
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.slow
def test_a_worker_killed_by_its_memory_cap_is_resource_exhausted_and_replaced(
    tmp_path, monkeypatch
):
    """3000 MiB of address space with XLA: (64, 1200, 1200) scores pass the
    up-front estimate, but XLA's compiler and the probe reach the cap and
    TensorFlow dies on an allocation it does not check (SIGSEGV; SIGABRT when a
    thread cannot be created). The caller got INTERNAL "killed by signal 11";
    now RESOURCE_EXHAUSTED naming --worker-memory-mb with the figures, a fresh
    worker is started and the next call is answered."""
    checkpoint = _self_attention_checkpoint(tmp_path / "attention.keras")
    short = _sequence_batch(tmp_path / "short.npz", 16, 16)
    long = _sequence_batch(tmp_path / "long.npz", 64, 1200)
    # XLA as on a GPU (on a CPU the default is the plain graph): its compiler is what
    # reaches the cap here. The server inherits the variable.
    monkeypatch.setenv("GRADHEALTH_XLA", "on")
    server = ServerProcess(tmp_path / "server", "--worker-memory-mb", "3000").start()
    try:
        with (
            GradientHealthClient(server.target, retry=ONE_TRY, timeout=300) as client,
            MemoryWatch(server) as memory,
        ):
            assert client.diagnose(checkpoint, batch=short, run_id="killed").status
            (worker,) = server.worker_pids()
            with pytest.raises(grpc.RpcError) as caught:
                client.diagnose(checkpoint, batch=long, run_id="killed")
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = caught.value.details()
            assert re.search(
                r"address space reached [\d,]+ MiB of its 3,000 MiB cap \(--worker-memory-mb\) "
                r"and it was killed by signal (11|6|7)",
                details,
            ), details
            assert "A fresh worker was started" in details and "\n" not in details
            assert server.metric("gradhealth_rejected_total", reason="out_of_memory") == 1
            verdict = client.diagnose(checkpoint, batch=short, run_id="killed-after")
            assert verdict.run_id == "killed-after"
        print(f"peak worker RSS {memory.peak_workers / MiB:,.0f} MiB: {details}")
        assert server.worker_pids() not in ([], [worker])
        assert server.metric("gradhealth_worker_restarts_total") == 1
        assert memory.peak_workers < 3000 * MiB, memory.peak_workers
    finally:
        assert server.stop() == 0, server.log()


def test_which_deaths_are_the_memory_cap(tmp_path):
    """A crash near the address-space cap, or a SIGKILL with one more OOM kill in
    the cgroup, is memory; a SIGKILL without one (an operator), a crash far
    under the cap, or an exit code are not."""
    cap = 3000 * MiB
    near = JobMemory(pid=0, cap=cap, oom_kills_at_start=4, peak=2834 * MiB)
    far = JobMemory(pid=0, cap=cap, oom_kills_at_start=4, peak=1500 * MiB)
    uncapped = JobMemory(pid=0, cap=None, oom_kills_at_start=None, peak=2834 * MiB)
    for sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
        assert "2,834 MiB of its 3,000 MiB cap" in near.verdict(-sig, oom_kills_now=4)
        assert far.verdict(-sig, oom_kills_now=4) is None
        assert uncapped.verdict(-sig, oom_kills_now=None) is None
    assert near.verdict(-signal.SIGKILL, oom_kills_now=4) is None  # someone's kill -9
    assert "out-of-memory killer" in far.verdict(-signal.SIGKILL, oom_kills_now=5)
    assert near.verdict(1, oom_kills_now=5) is None
    assert near.verdict(None, oom_kills_now=5) is None

    v2, v1 = tmp_path / "memory.events", tmp_path / "memory.oom_control"
    v2.write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n")
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n")
    assert oom_kills((tmp_path / "absent", v2)) == 2
    assert oom_kills((v1,)) == 7
    assert oom_kills((tmp_path / "absent",)) is None
