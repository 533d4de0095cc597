"""A throwaway PostgreSQL server (Debian's binaries) for the tests.

pytest-postgresql would run initdb as the current user, and these machines run
CI as root, which PostgreSQL refuses; so the server runs as the `postgres`
system user when we are root. Data lives in a private temp directory, fsync
off, TCP on loopback, trust auth; it is removed on stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa

from tests import processes
from tests.processes import find_command
from tests.service import free_port


def _binary(name: str) -> str:
    found = find_command(name)
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return found


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gradhealth-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as_owner, *command], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> ThrowawayPostgres:
        processes.started(self)
        try:
            self._run(_binary("initdb"), "-D", str(self.data), "-U", "gradhealth",
                      "--auth=trust", "-E", "UTF8")  # fmt: skip
            self.resume()
        except BaseException:
            self.stop()
            raise
        return self

    def pause(self) -> None:
        """Stop the server, keeping its data: a database outage."""
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-w",
                  "-l", str(self.directory / "log"), "start")  # fmt: skip

    def database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        admin = sa.create_engine(self._url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as db:
            db.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self._url(name)

    def _url(self, name: str) -> str:
        return f"postgresql+psycopg://gradhealth@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():  # not paused
                self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
