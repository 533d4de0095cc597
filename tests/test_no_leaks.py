"""No process outlives the test session: a failing test or a fixture that fails
half-way still stops what it started, and a leak nobody stopped fails the run.

The check runs a small pytest session of its own (with this suite's conftest),
plain and on two xdist workers as scripts/test runs the suite, and reads /proc
afterwards, as scripts/test's user would find the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests import processes

pytestmark = pytest.mark.postgresql

REPO = Path(__file__).resolve().parents[1]
INNER_PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
INNER = """
import subprocess
from pathlib import Path

import pytest

from tests.postgres import ThrowawayPostgres
from tests.service import ServerProcess


def test_a_failing_test_still_stops_its_server_and_database(tmp_path):
    ServerProcess(tmp_path).start()
    ThrowawayPostgres().start()
    raise AssertionError("fails after starting both")


@pytest.fixture(scope="module")
def two_services(tmp_path_factory):
    server = ServerProcess(Path(tmp_path_factory.mktemp("s"))).start()
    try:
        ThrowawayPostgres().start()
        raise RuntimeError("the second service failed to come up")
    finally:
        server.stop()


def test_setup_fails_half_way(two_services):
    pass


@pytest.fixture
def forgotten():
    subprocess.Popen(["sleep", "597"])  # started behind the registry's back, never stopped


def test_a_leak_is_caught(forgotten):
    pass
"""


def test_no_process_outlives_a_failing_session(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (inner / "test_inner.py").write_text(textwrap.dedent(INNER))
    tag = uuid.uuid4().hex  # inherited by everything the inner session starts
    env = {**os.environ, "PYTHONPATH": str(REPO), "LEAK_CHECK_TAG": tag}
    done = subprocess.run(
        # A basetemp of its own: pytest prunes the oldest numbered temp dirs of the
        # user at start, which must never be the outer session's.
        [*INNER_PYTEST, f"--basetemp={tmp_path / 'basetemp'}", str(inner)],
        cwd=inner,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    summary = output.strip().splitlines()[-1]  # e.g. "1 failed, 1 passed, 1 error in 48s"
    assert all(part in summary for part in ("1 failed", "1 passed", "1 error")), output
    # Only the process started behind the registry's back reached the final check ...
    report = output.split("processes that outlived the test session", 1)[1]
    assert "sleep 597" in report, output
    assert "gradhealth.cli serve" not in report and "postgres" not in report, output
    # ... and nothing of the inner session is alive now.
    assert processes.leaked(tag, variable="LEAK_CHECK_TAG") == []


# Under pytest-xdist (scripts/test runs -n 2) each worker checks its own processes at its
# end and the controller reports what they found: a leak still fails the run, and a
# worker that ends first never touches the other worker's live processes.
XDIST = ["-n", "2", "--dist", "loadfile"]
INNER_LEAKER = """
import os
import subprocess
from pathlib import Path


def test_a_leak_is_caught_by_its_worker():
    leak = subprocess.Popen(["sleep", "598"])  # behind the registry's back, never stopped
    Path(os.environ["LEAK_PID_FILE"]).write_text(str(leak.pid))
"""
INNER_HOLDER = """
import os
import subprocess
import time
from pathlib import Path

from tests import processes


class Held:
    def __init__(self):
        self.process = subprocess.Popen(["sleep", "597"])

    def stop(self):
        self.process.kill()
        self.process.wait()


def gone(pid):
    try:
        return "\\nState:\\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_a_live_process_of_the_other_worker_survives_its_check():
    held = Held()
    processes.started(held)
    try:
        pid_file = Path(os.environ["LEAK_PID_FILE"])
        deadline = time.monotonic() + 240
        # Until the other worker's session has ended: its check killed its leak.
        while not (pid_file.exists() and gone(int(pid_file.read_text()))):
            assert time.monotonic() < deadline, "the other worker never ended"
            time.sleep(0.2)
        assert held.process.poll() is None  # still running: not taken for a leak
    finally:
        held.stop()
"""


def test_no_process_outlives_a_session_on_xdist_workers(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (inner / "test_leaker.py").write_text(textwrap.dedent(INNER_LEAKER))
    (inner / "test_holder.py").write_text(textwrap.dedent(INNER_HOLDER))
    tag = uuid.uuid4().hex
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LEAK_CHECK_TAG": tag,
        "LEAK_PID_FILE": str(tmp_path / "leak.pid"),
    }
    done = subprocess.run(
        # Two workers, a file each (loadfile gives each worker one of the two files).
        [*INNER_PYTEST, *XDIST, f"--basetemp={tmp_path / 'basetemp'}", str(inner)],
        cwd=inner,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "2 passed" in done.stdout.strip().splitlines()[-1], output
    report = output.split("processes that outlived the test session", 1)[1]
    assert "sleep 598" in report and "sleep 597" not in report, output
    assert processes.leaked(tag, variable="LEAK_CHECK_TAG") == []
