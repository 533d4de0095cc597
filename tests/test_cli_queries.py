"""`gradhealth runs`, `verdicts RUN` and `watch [RUN]` against the real server."""

from __future__ import annotations

import json
import subprocess
import sys

from gradhealth.client import GradientHealthClient
from tests.service import TOKEN, cli

ENV = {"GRADHEALTH_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}


def test_runs_and_verdicts_list_what_the_server_stored(server, checkpoints, batch):
    with GradientHealthClient(server.target, token=TOKEN) as client:
        made = [
            client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="cli-listed", step=s)
            for s in (1, 2, 3)
        ]
    done = cli("runs", "--server", server.target, "--json")
    assert done.returncode == 0, done.stderr
    runs = {r["run_id"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert runs["cli-listed"]["verdict_count"] == 3
    assert runs["cli-listed"]["latest_step"] == 3
    done = cli("verdicts", "cli-listed", "--server", server.target, "--json", "--limit", "2")
    assert done.returncode == 0, done.stderr
    listed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [v["verdict_id"] for v in listed] == [made[2].verdict_id, made[1].verdict_id]
    table = cli("runs", "--server", server.target)
    assert "cli-listed" in table.stdout


def test_watch_prints_new_verdicts_as_json_lines(server, checkpoints, batch):
    watcher = subprocess.Popen(
        [sys.executable, "-m", "gradhealth.cli", "watch", "cli-watched",
         "--server", server.target, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )  # fmt: skip
    try:
        server.wait_metric("gradhealth_watchers", 1)
        with GradientHealthClient(server.target, token=TOKEN) as client:
            made = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="cli-watched")
        line = watcher.stdout.readline()
        assert json.loads(line)["verdict_id"] == made.verdict_id
    finally:
        watcher.kill()
        watcher.wait()


def test_query_errors_are_one_line(server):
    done = cli("runs", "--server", server.target, token=None)
    assert done.returncode == 2
    assert done.stderr.startswith("gradhealth: error: UNAUTHENTICATED")
    done = cli("verdicts", "x", "--cause", "bogus", "--server", server.target)
    assert done.returncode == 2 and "no cause named 'bogus'" in done.stderr
