"""--compile-cache: an architecture XLA compiled once is loaded, not compiled again,
by the next server (a restart, another replica) that mounts the same directory."""

from __future__ import annotations

import os
import stat

import pytest

from gradhealth.client import GradientHealthClient
from gradhealth_server.engine.device import CompileCacheError, use_compile_cache
from tests.service import ServerProcess, cli


def test_the_cache_directory_is_created_private_and_handed_to_xla(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    path = use_compile_cache(tmp_path / "xla")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    flags = os.environ["TF_XLA_FLAGS"].split()
    assert flags == ["--tf_xla_auto_jit=0", f"--tf_xla_persistent_cache_directory={path}"]
    use_compile_cache(tmp_path / "xla")  # twice: the flag is not repeated
    assert os.environ["TF_XLA_FLAGS"].split() == flags


def test_a_directory_others_may_write_to_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(CompileCacheError, match="writable by others"):
        use_compile_cache(shared)
    done = cli("serve", "--compile-cache", str(shared), "--port", "0", token=None, timeout=120)
    assert done.returncode != 0
    (line,) = [x for x in done.stderr.splitlines() if "--compile-cache" in x]
    assert "writable by others" in line and "chmod 700" in line


def test_a_second_server_loads_what_the_first_compiled(tmp_path, checkpoints, batch, monkeypatch):
    monkeypatch.setenv("GRADHEALTH_XLA", "on")  # the cache holds what XLA compiles
    cache = tmp_path / "compile-cache"
    checkpoint = checkpoints.path("cnn")
    verdicts, entries = [], []
    for name in ("first", "second"):  # a restart, or a replica sharing the volume
        server = ServerProcess(tmp_path / name, "--compile-cache", str(cache)).start()
        try:
            with GradientHealthClient(server.target) as client:
                verdicts.append(client.diagnose(checkpoint, batch=batch, run_id=f"cache-{name}"))
        finally:
            assert server.stop() == 0, server.log()
        entries.append(sorted(p.name for p in cache.iterdir()))
    assert entries[0], "the first server compiled with XLA and cached nothing"
    assert all(name.endswith(".pb") for name in entries[0])
    # The second server compiled nothing new: every executable it needed was there.
    assert entries[1] == entries[0]
    assert verdicts[0].status == verdicts[1].status
    assert [f.cause for f in verdicts[0].findings] == [f.cause for f in verdicts[1].findings]
