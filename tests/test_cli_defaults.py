"""Defaults that do not surprise: --version, every default in --help, an unknown
run is an error, watch prints only new verdicts, Ctrl-C exits quietly, --db
is checked before anything connects."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gradhealth.cli import _parser, main
from gradhealth_server.service.feed import VerdictFeed
from gradhealth_server.store.db_url import BadDatabaseUrl, normalize
from tests.fake_service import FakeService, fake_service, verdict


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == "gradhealth 0.1.0\n"


def test_every_flag_with_a_default_shows_it_in_help():
    parser, _ = _parser()
    commands = parser._subparsers._group_actions[0].choices
    missing = []
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if not action.option_strings or action.default in (None, False, "==SUPPRESS=="):
                continue
            if action.nargs == 0:
                continue
            if f"default: {action.default}" not in text and "default:" not in (action.help or ""):
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []
    serve = " ".join(commands["serve"].format_help().split())
    for shown in ("(default: 50051)", "(default: sqlite:///gradhealth.db)", "(default: 60.0)"):
        assert shown in serve


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_unknown_run_is_one_line_and_exit_1(capsys):
    with fake_service(FakeService([verdict("known", 1)])) as server:
        for command in (["verdicts", "nope"], ["report", "nope", "-o", "/tmp/never.png"]):
            code, out, err = run_cli(capsys, *command, "--server", server.target)
            assert code == 1
            assert err == (
                f"gradhealth: error: no run 'nope' on {server.target} "
                "(`gradhealth runs` lists them)\n"
            )
            assert out == ""
        # a known run with nothing that matches the filter: exit 0, said on stderr
        code, out, err = run_cli(
            capsys, "verdicts", "known", "--status", "critical", "--server", server.target
        )
        assert code == 0 and out == "" and "has no verdicts that match" in err


def _sigint_as_a_shell_leaves_it() -> None:
    """In the child before exec: Ctrl-C at its default, as a shell starts a command.

    A disposition of SIG_IGN is inherited across exec, and under pytest-xdist the
    worker process was seen with SIGINT and SIGQUIT ignored (the mark glibc's system()
    leaves while it runs) after earlier tests: the watcher then never saw the Ctrl-C
    these tests send."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_watch_since_prints_earlier_verdicts_oldest_first_then_follows(capsys):
    now = dt.datetime.now(dt.UTC)
    old = verdict("w", 1, created=now - dt.timedelta(hours=3))
    recent = [verdict("w", s, created=now - dt.timedelta(minutes=20 - s)) for s in (2, 3)]
    live = verdict("w", 4)
    service = FakeService([old, *recent], watch_backlog=[recent[1], live])
    with fake_service(service) as server:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "gradhealth.cli", "watch", "w", "--since", "1h", "--json",
             "--server", server.target],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_sigint_as_a_shell_leaves_it,
        )  # fmt: skip
        try:
            lines = [json.loads(watcher.stdout.readline())["step"] for _ in range(3)]
        finally:
            watcher.send_signal(signal.SIGINT)
            _, err = watcher.communicate(timeout=30)
    assert lines == [2, 3, 4]  # not the 3-hour-old one; step 3 not twice
    assert watcher.returncode in (0, 130) and "Traceback" not in err


def test_a_bad_since_is_one_line(capsys):
    code, _, err = run_cli(capsys, "watch", "--since", "yesterday", "--server", "127.0.0.1:1")
    assert code == 2 and err.startswith("gradhealth: error: --since 'yesterday'")


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.5])
def test_ctrl_c_anywhere_in_watch_exits_quietly(delay):
    """Early (while Python imports grpc), or while waiting for verdicts."""
    with fake_service() as server:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "gradhealth.cli", "watch", "--server", server.target],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_sigint_as_a_shell_leaves_it,
        )  # fmt: skip
        time.sleep(delay)
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=30)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert watcher.returncode in (0, 130, -signal.SIGINT), (watcher.returncode, err)


def test_the_feed_gives_a_new_watcher_only_verdicts_stored_after_it_came():
    """It used to replay up to 200 verdicts stored while nobody watched."""

    class Store:
        def __init__(self) -> None:
            self.rows: list[tuple[int, object]] = []

        def last_id(self) -> int:
            return self.rows[-1][0] if self.rows else 0

        def since(self, last_id, limit=500, skip=()):
            return [(i, v) for i, v in self.rows if i > last_id and i not in skip][:limit]

    async def scenario() -> list[int]:
        store, feed = Store(), VerdictFeed()
        await feed.poll(store)  # following starts: nothing yet
        for i in range(1, 51):  # a quiet period: stored, nobody watching
            store.rows.append((i, verdict("q", i)))
            await feed.poll(store)
        with feed.watch() as queue:
            await feed.poll(store)
            assert queue.empty()
            store.rows.append((51, verdict("q", 51)))
            await feed.poll(store)
            return [queue.get_nowait().step for _ in range(queue.qsize())]

    assert asyncio.run(scenario()) == [51]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u:pw@db/x", "'mysql' is not supported; use sqlite:///FILE or postgresql+psycopg"),
        (
            "sqlite:////no/such/dir/g.db",
            "cannot open the SQLite store '/no/such/dir/g.db': directory",
        ),
        ("sqlite://", "names no file"),
        ("not a url", "is not a database URL"),
        ("postgresql+psycopg:///db", "names no host"),
    ],
)
def test_bad_database_urls_are_one_line_without_the_password(url, says):
    with pytest.raises(BadDatabaseUrl) as caught:
        normalize(url)
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["postgres://u:p@h/db", "postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"]
)
def test_postgres_urls_mean_psycopg(url):
    assert normalize(url) == "postgresql+psycopg://u:p@h/db"


def test_serve_with_a_bad_db_is_one_line_and_starts_nothing(capsys):
    code, _, err = run_cli(capsys, "serve", "--db", "mysql://root:hunter2@db/x", "--port", "1")
    assert code == 2 and err.count("\n") == 1 and "hunter2" not in err
    assert err.startswith("gradhealth: error: --db 'mysql://root:***@db/x'")
