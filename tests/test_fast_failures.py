"""Fast, clear failures: no server, no such host, no port, a port already taken.

Each failure is one line naming the address, in seconds, not after the call's
deadline of retries (`diagnose --server 127.0.0.1:1` used to wait 596 s).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from gradhealth.client import GradientHealthClient
from gradhealth.connect import ServerUnreachable, check_target
from tests.fake_service import FakeService, fake_service, verdict

# Python and grpc start-up on a busy 2-core machine, plus the failure itself.
FAST_S = 8.0


def gradhealth(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gradhealth.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """diagnose checks that its files exist before it calls: any bytes will do."""
    root = tmp_path_factory.mktemp("files")
    (root / "m.keras").write_bytes(b"not read")
    (root / "b.npz").write_bytes(b"not read")
    return root / "m.keras", root / "b.npz"


@pytest.mark.parametrize(
    "command",
    [
        ["runs"],
        ["runs", "close", "r"],
        ["verdicts", "r"],
        ["watch"],
        ["report", "r"],
        ["diagnose", "{checkpoint}", "--batch", "{batch}"],
    ],
    ids=lambda c: c[0] if c[0] != "runs" or len(c) == 1 else "runs-close",
)
def test_every_command_fails_fast_in_one_line_when_no_server_answers(command, files):
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    args = [a.format(checkpoint=files[0], batch=files[1]) for a in command]
    done, seconds = gradhealth(*args, "--server", target)
    assert done.returncode == 2, done
    assert done.stderr == (
        f"gradhealth: error: no gradhealth server answers at {target}: connection refused "
        "(is `gradhealth serve` running on that port?)\n"
    )
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert seconds < FAST_S, seconds


def test_the_default_server_names_itself_without_ipv6_internals(monkeypatch):
    port = free_port()
    done, _ = gradhealth("runs", "--server", f"localhost:{port}")
    assert done.stderr.startswith(
        f"gradhealth: error: no gradhealth server answers at localhost:{port}"
    )
    assert "ipv6" not in done.stderr and "%5B" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_name_that_does_not_resolve_fails_in_seconds():
    done, seconds = gradhealth("runs", "--server", "no-such-host.invalid:50051")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "gradhealth: error: no gradhealth server answers at no-such-host.invalid:50051: "
    )
    assert done.stderr.count("\n") == 1
    assert seconds < FAST_S + 5, seconds  # a resolver timeout, at worst the connect timeout


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("127.0.0.1", "has no port: give HOST:PORT, e.g. 127.0.0.1:50051"),
        ("gradhealth.example", "has no port: give HOST:PORT, e.g. gradhealth.example:50051"),
        ("localhost:", "has no port"),
        ("::1", "write an IPv6 address as [ADDR]:PORT"),
        ("host:99999", "port 99999 is not 1-65535"),
    ],
)
def test_host_without_port_is_refused_at_once(target, says, files):
    done, seconds = gradhealth("verdicts", "r", "--server", target)
    assert done.returncode == 2
    assert done.stderr.startswith(f"gradhealth: error: server address {target!r}")
    assert says in done.stderr and done.stderr.count("\n") == 1
    assert seconds < FAST_S
    with pytest.raises(ValueError, match=r"no port|IPv6|not 1-65535"):
        check_target(target)


@pytest.mark.parametrize(
    "target", ["localhost:50051", "[::1]:50051", "unix:/tmp/gh.sock", "dns:///svc.ns:50051"]
)
def test_good_targets_pass(target):
    assert check_target(target) == target


def test_the_library_client_raises_server_unreachable_which_is_an_unavailable_rpc_error():
    client = GradientHealthClient(f"127.0.0.1:{free_port()}", timeout=600)
    started = time.monotonic()
    with client, pytest.raises(ServerUnreachable) as caught:
        client.list_runs()
    assert time.monotonic() - started < 3
    assert isinstance(caught.value, OSError) and isinstance(caught.value, grpc.RpcError)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_silence_fails_after_the_connect_timeout():
    """A port that accepts nothing and never answers (a listening socket that is
    never accept()ed does complete TCP, but no HTTP/2 comes back)."""
    with socket.socket() as quiet:
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(0)
        target = f"127.0.0.1:{quiet.getsockname()[1]}"
        client = GradientHealthClient(target, connect_timeout=1.5)
        started = time.monotonic()
        with client, pytest.raises(ServerUnreachable, match=f"at {target}: "):
            client.list_runs()
        assert 1.0 < time.monotonic() - started < 5


def test_wait_for_ready_waits_for_a_server_that_comes_up():
    """Only where the user asked to wait: the call waits, within its deadline."""
    port = free_port()
    service = FakeService([verdict("late", 1)])
    with contextlib.ExitStack() as stack:

        def later() -> None:
            time.sleep(1.0)
            stack.enter_context(fake_service(service, port=port))

        threading.Thread(target=later, daemon=True).start()
        with GradientHealthClient(f"127.0.0.1:{port}", wait_for_ready=True, timeout=20) as client:
            runs = client.list_runs()
        assert [r.run_id for r in runs] == ["late"]


def test_a_second_server_on_a_bound_port_is_refused(tmp_path):
    """gRPC sets SO_REUSEPORT by default: a second `gradhealth serve` on the port
    of a running one used to start and split its calls. The first socket here
    has SO_REUSEPORT set, as a gRPC server's has."""
    with socket.socket() as first:
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind(("127.0.0.1", 0))
        first.listen(8)
        port = first.getsockname()[1]
        done, seconds = gradhealth(
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db",
            f"sqlite:///{tmp_path / 'second.db'}",
            timeout=120,
        )
    assert done.returncode == 2, done
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        "gradhealth: error: the server could not start: cannot listen on "
        f"127.0.0.1:{port}: the port is in use (another gradhealth serve?) or not allowed; "
        "--reuse-port shares it on purpose"
    )
    assert "Traceback" not in done.stderr
    assert seconds < 60
