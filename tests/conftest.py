"""Shared fixtures: real Keras models trained on scikit-learn's digits.

Checkpoints are trained once per test session and saved under a session temp
directory; tests that mutate nothing share them.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import uuid
from pathlib import Path

import numpy as np
import pytest

from tests import models, processes

# Inherited by every process the session starts: the leak check at its end finds them.
# Under pytest-xdist each worker is a session of its own, marked "<controller's>-<worker
# id>" (pytest_configure): its check finds its own processes only, never the other
# worker's live ones; the controller's, once the workers are gone, finds all of them.
SESSION = uuid.uuid4().hex
os.environ[processes.SESSION_VARIABLE] = SESSION


def pytest_configure(config: pytest.Config) -> None:
    global SESSION
    if workerinput := getattr(config, "workerinput", None):  # an xdist worker
        SESSION = f"{workerinput['gradhealth_session']}-{workerinput['workerid']}"
        os.environ[processes.SESSION_VARIABLE] = SESSION


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist's controller, before it starts a worker: hand it this session's mark."""
    node.workerinput["gradhealth_session"] = SESSION


# --- system tools and leaked processes (tests/processes.py) ----------------------------


# The development loop's fast tier (`pytest -m "not slow"`): unit, rule, store,
# contract and screening tests. Every other module (real training, servers,
# PostgreSQL, Prometheus) is slow; a new module is slow until listed here.
FAST_MODULES = frozenset(
    {
        "test_architecture",
        "test_bad_input",
        "test_contract",
        "test_deploy",
        "test_fuzz",
        "test_history_rules",
        "test_rules",
        "test_store",
    }
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need PostgreSQL by their fixtures and parameters, so
    `-m "not postgresql"` deselects them like the explicitly marked ones; mark
    everything outside the fast tier slow."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "postgres" in item.fixturenames or "postgresql" in params.values():
            item.add_marker("postgresql")
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module not in FAST_MODULES or item.get_closest_marker("postgresql"):
            item.add_marker("slow")


def pytest_collection_finish(session: pytest.Session) -> None:
    """A missing system package stops the run here, in one line, not 20 minutes in."""
    markers = {mark.name for item in session.items for mark in item.iter_markers()}
    if problem := processes.missing_tools(markers):
        pytest.exit(problem, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(autouse=True)
def _stop_what_the_test_left_running():
    """A test that fails between starting a server and stopping it still stops it."""
    before = len(processes.STARTED)
    yield
    processes.stop_all(processes.STARTED[before:])
    del processes.STARTED[before:]


# Leaks an xdist worker found (and killed) at its end, reported by the controller.
WORKER_LEAKS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist's controller, as a worker finishes: what its leak check found."""
    WORKER_LEAKS.extend(getattr(node, "workeroutput", {}).get("gradhealth_leaks", []))


@pytest.hookimpl(trylast=True)  # under xdist: after the controller has stopped its workers
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Every fixture has stopped what it started by now: anything of this session
    still alive is a leak, killed and failing the run. An xdist worker hands what it
    found to the controller, which also looks for what any worker left behind."""
    processes.stop_all(processes.STARTED)
    leaks = processes.leaked(SESSION, workers=True)
    processes.kill(leaks)
    found = [f"  pid {leak.pid}: {leak.command[:200]}" for leak in leaks]
    if workeroutput := getattr(session.config, "workeroutput", None):  # an xdist worker
        workeroutput["gradhealth_leaks"] = found
        return
    if found := WORKER_LEAKS + found:
        lines = "\n".join(found)
        print(f"\nprocesses that outlived the test session (killed now):\n{lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _scenario_runs_shared_between_workers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist each worker is a process of its own: the scenario runs one
    trains are saved where the others load them (tests.scenarios.train_cached)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from tests import scenarios

        scenarios.SHARED_RUNS = tmp_path_factory.getbasetemp().parent / "scenario-runs"


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return models.digits()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> models.CheckpointFactory:
    return models.CheckpointFactory(Path(tmp_path_factory.mktemp("checkpoints")))


@pytest.fixture(scope="session")
def diagnoser():
    from gradhealth_server.diagnosis import Diagnoser

    return Diagnoser()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The real server, with token auth and a 200 MB checkpoint cap, shared by the
    integration tests that leave it as they found it."""
    from tests.service import TOKEN, ServerProcess

    workdir = Path(tmp_path_factory.mktemp("server"))
    (workdir / "token").write_text(TOKEN + "\n")
    process = ServerProcess(
        workdir, "--token-file", str(workdir / "token"), "--max-checkpoint-mb", "200"
    ).start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="session")
def batch(tmp_path_factory) -> Path:
    """128 rows of digits images, as an .npz the CNN checkpoints take."""
    from tests.service import digits_batch

    return digits_batch(Path(tmp_path_factory.mktemp("batch")) / "batch.npz")


@pytest.fixture(scope="session")
def flat_batch(tmp_path_factory) -> Path:
    """256 rows of flat digits (n, 64), for the MLP checkpoints."""
    from tests.service import digits_batch

    path = Path(tmp_path_factory.mktemp("flat")) / "flat.npz"
    return digits_batch(path, rows=256, flat=True)


@pytest.fixture(scope="session")
def stuck_run(tmp_path_factory) -> list[Path]:
    """Five checkpoints of a digits MLP with a far too small learning rate: its
    accuracy stays where it started."""
    return models.sgd_run_checkpoints(Path(tmp_path_factory.mktemp("stuck")), 1e-6)


@pytest.fixture(scope="session")
def healthy_run(tmp_path_factory) -> list[Path]:
    """Five checkpoints of the same MLP at a good learning rate: it learns."""
    return models.sgd_run_checkpoints(Path(tmp_path_factory.mktemp("healthy")), 0.05)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (Debian's binaries)."""
    from tests.postgres import ThrowawayPostgres

    server = ThrowawayPostgres().start()
    # Tests request it mid-test (getfixturevalue): it is this fixture's to stop, not theirs.
    processes.STARTED.remove(server)
    try:
        yield server
    finally:
        server.stop()
