"""A client-only install (no server extra): every command still answers in one
line, the server-side ones saying what to install; the client never imports the
server package to do so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The server extra's top-level modules, made unimportable as if not installed.
WITHOUT_SERVER_EXTRA = """
import sys
for name in ("tensorflow", "keras", "h5py", "sqlalchemy", "alembic", "prometheus_client",
             "grpc_health", "grpc_reflection", "psycopg", "sklearn"):
    sys.modules[name] = None
from gradhealth.cli import main
sys.exit(main(sys.argv[1:]))
"""
# No plugin registered at all: a client package installed on its own.
WITHOUT_PLUGINS = """
import sys
import gradhealth.cli
gradhealth.cli.entry_points = lambda group: []
sys.exit(gradhealth.cli.main(sys.argv[1:]))
"""


def run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    checkpoint, batch = tmp_path / "model.keras", tmp_path / "batch.npz"
    checkpoint.write_bytes(b"not really")
    batch.write_bytes(b"not really")
    return str(checkpoint), str(batch)


@pytest.mark.parametrize("program", [WITHOUT_SERVER_EXTRA, WITHOUT_PLUGINS])
def test_server_side_commands_say_what_to_install_in_one_line(program, files, tmp_path):
    checkpoint, batch = files
    for args in (
        ("diagnose", checkpoint, "--batch", batch),
        ("example", str(tmp_path / "demo")),
        ("serve", "--port", "0"),
        ("demo",),
    ):
        done = run(program, *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "install gradhealth[server]" in lines[0], (args, done.stderr)
        assert lines[0].startswith("gradhealth: error: "), lines
    assert not (tmp_path / "demo").exists()


def test_client_commands_need_no_server_package():
    """The query commands and server-mode diagnose work without the server extra
    (here: no server listens, so they fail in one line about the connection)."""
    done = run(WITHOUT_SERVER_EXTRA, "runs", "--server", "127.0.0.1:9")
    assert done.returncode == 2 and "ModuleNotFoundError" not in done.stderr, done.stderr
    assert done.stderr.startswith("gradhealth: error: ")
    done = run(WITHOUT_SERVER_EXTRA, "--help")
    assert done.returncode == 0
    assert all(name in done.stdout for name in ("diagnose", "runs", "serve", "demo", "example"))
