"""No process outlives the test session, and a missing system tool is said at the start.

Every process the tests start (servers and their workers, PostgreSQL, Prometheus)
inherits SESSION_VARIABLE in its environment, which conftest sets to a fresh value
per session; daemons that leave the process tree (PostgreSQL's postmaster) keep it
too. So the session's end finds any that escaped their finalizer by reading
/proc/*/environ, kills them, and fails the run naming them. Under pytest-xdist each
worker's session is marked "<controller's mark>-<worker id>" and checks its own; the
controller, after its workers have exited, checks all of them.

The system tools come from Debian packages that `scripts/test` installs; a test
run without them stops before the first test with one line saying what to do.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SESSION_VARIABLE = "GRADHEALTH_TEST_SESSION"
# Children of the pytest process that live exactly as long as it does.
HELPERS = (b"multiprocessing.resource_tracker", b"multiprocessing.forkserver")


@dataclass(frozen=True)
class SystemTool:
    marker: str  # the pytest marker its tests carry: `-m "not <marker>"` deselects them
    package: str  # the Debian package that has it
    commands: tuple[str, ...]

    def installed(self) -> bool:
        return all(find_command(command) for command in self.commands)


TOOLS = (
    SystemTool("postgresql", "postgresql", ("initdb", "pg_ctl")),
    SystemTool("prometheus", "prometheus", ("prometheus", "promtool")),
    SystemTool("openssl", "openssl", ("openssl",)),
    SystemTool("alertmanager", "prometheus-alertmanager", ("prometheus-alertmanager", "amtool")),
)


def find_command(command: str) -> str | None:
    """On PATH, or where Debian's postgresql puts its server binaries."""
    return shutil.which(command) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{command}"), reverse=True)), None
    )


def missing_tools(markers_in_use: Iterable[str]) -> str | None:
    """One line naming the tools the selected tests need and this machine lacks."""
    wanted = set(markers_in_use)
    missing = [t for t in TOOLS if t.marker in wanted and not t.installed()]
    if not missing:
        return None
    packages = " ".join(t.package for t in missing)
    deselect = " and ".join(f"not {t.marker}" for t in missing)
    return (
        f"missing system packages for the selected tests: {packages}. Run `bash scripts/test` "
        f"(installs them), or `apt-get install {packages}`, or deselect with -m '{deselect}'"
    )


@dataclass(frozen=True)
class Leak:
    pid: int
    command: str


def leaked(
    session: str,
    exclude: Iterable[int] = (),
    variable: str = SESSION_VARIABLE,
    workers: bool = False,
) -> list[Leak]:
    """Live processes carrying this session's marker (not pytest's own helpers);
    with workers=True also those of its xdist workers' sessions ("<session>-gw0")."""
    needle = f"{variable}={session}".encode()
    skip = {os.getpid(), *exclude}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            values = (entry / "environ").read_bytes().split(b"\0")
            if needle not in values and not (
                workers and any(value.startswith(needle + b"-") for value in values)
            ):
                continue
            command = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or not ours to read
        if not command or any(helper in command for helper in HELPERS):
            continue  # a zombie, or multiprocessing's helper of this process
        found.append(Leak(int(entry.name), command.replace(b"\0", b" ").decode(errors="replace")))
    return found


def kill(leaks: Iterable[Leak]) -> None:
    for leak in leaks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(leak.pid, signal.SIGKILL)


class Stoppable(Protocol):
    def stop(self) -> object: ...


# Everything started so far, in order; conftest stops what a test started and left.
STARTED: list[Stoppable] = []


def started(thing: Stoppable) -> None:
    STARTED.append(thing)


def stop_all(things: Iterable[Stoppable]) -> None:
    """Stop each (stop() is idempotent on all of them); one failure stops no other."""
    for thing in things:
        try:
            thing.stop()
        except Exception as exc:  # the leak check at the session's end has the last word
            print(f"could not stop {thing!r}: {exc}")
