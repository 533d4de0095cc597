"""Alerts end to end: the rules' runbook URLs are absolute and share one base;
the Alertmanager config passes amtool; a real Alertmanager on loopback
delivers an alert to the example receiver (deploy/alert-receiver/receiver.py),
which logs it in one line and serves the runbook the URL points at."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests import processes

ROOT = Path(__file__).resolve().parents[1]
RECEIVER = ROOT / "deploy" / "alert-receiver" / "receiver.py"
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(RECEIVER.parent))

import gen_k8s_rules  # noqa: E402
import receiver  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A process of the test, stopped however the test ends (tests/processes.py)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(args, stdout=self._file, stderr=subprocess.STDOUT, text=True)
        processes.started(self)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._file.close()

    def output(self) -> str:
        return self.log.read_text()


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except urllib.error.URLError:  # refused before the body was read: the socket closed
        return -1


@pytest.fixture
def running_receiver(tmp_path):
    port = free_port()
    process = Process(
        [sys.executable, str(RECEIVER), "--port", str(port), "--runbook", str(RUNBOOK)],
        tmp_path / "receiver.log",
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    yield port, process
    process.stop()


def webhook(*alerts: dict) -> dict:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "gradhealth-log",
        "alerts": list(alerts),
    }


STALLED = {
    "status": "firing",
    "labels": {
        "alertname": "GradhealthRunStalled",
        "severity": "critical",
        "run_id": "resnet-42",
        "primary_cause": "learning_rate_too_low",
    },
    "annotations": {
        "summary": "Training run resnet-42 has stalled",
        "runbook_url": "http://localhost:9095/runbook#gradhealthrunstalled",
    },
    "startsAt": "2026-12-01T03:00:00Z",
}


def test_each_alert_is_one_log_line():
    (line,) = receiver.alert_lines(webhook(STALLED))
    assert line == (
        "FIRING GradhealthRunStalled severity=critical run=resnet-42 "
        "cause=learning_rate_too_low: Training run resnet-42 has stalled "
        "runbook=http://localhost:9095/runbook#gradhealthrunstalled"
    )
    down = {"status": "resolved", "labels": {"alertname": "GradhealthDown", "instance": "a:9464"}}
    (line,) = receiver.alert_lines(webhook(down))
    assert line.startswith("RESOLVED GradhealthDown severity= instance=a:9464: ")
    (as_json,) = receiver.alert_lines(webhook(STALLED), as_json=True)
    assert json.loads(as_json)["run_id"] == "resnet-42"


def test_the_receiver_logs_what_it_is_sent_and_serves_the_runbook(running_receiver):
    port, process = running_receiver
    base = f"http://127.0.0.1:{port}"
    assert post(f"{base}/alerts", json.dumps(webhook(STALLED)).encode()) == 200
    assert post(f"{base}/alerts", b"{not json") == 400
    assert post(f"{base}/alerts", b"x" * (receiver.MAX_BODY + 1)) in (400, -1)
    page = urllib.request.urlopen(f"{base}/runbook", timeout=5).read().decode()
    anchors = set(re.findall(r'id="([^"]+)"', page))
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["annotations"]["runbook_url"].split("#")[1] in anchors, rule["alert"]
    deadline = time.monotonic() + 10
    while "FIRING GradhealthRunStalled" not in process.output():
        assert time.monotonic() < deadline, process.output()
        time.sleep(0.1)


def test_runbook_urls_are_absolute_with_one_configurable_base(tmp_path):
    rules = yaml.safe_load(RULES.read_text())
    anchors = gen_k8s_rules.runbook_anchors(RUNBOOK.read_text())
    assert gen_k8s_rules.runbook_base(rules, anchors) == "http://localhost:9095/runbook"
    moved = gen_k8s_rules.with_runbook_base(
        RULES.read_text(), "https://git.example.com/ml/gradhealth/-/blob/main/docs/runbook.md"
    )
    assert gen_k8s_rules.runbook_base(yaml.safe_load(moved), anchors) == (
        "https://git.example.com/ml/gradhealth/-/blob/main/docs/runbook.md"
    )
    assert moved.count("runbook_url: https://git.example.com/") == len(
        [r for g in rules["groups"] for r in g["rules"]]
    )
    relative = RULES.read_text().replace(
        "http://localhost:9095/runbook#gradhealthdown", "docs/x#gradhealthdown"
    )
    with pytest.raises(
        ValueError, match="GradhealthDown: runbook_url 'docs/x#gradhealthdown' is not absolute"
    ):
        gen_k8s_rules.render(relative)
    with pytest.raises(ValueError, match="absolute http"):
        gen_k8s_rules.with_runbook_base(RULES.read_text(), "docs/runbook.md")


@pytest.mark.alertmanager
def test_amtool_accepts_the_config():
    done = subprocess.run(
        ["amtool", "check-config", str(AM_CONFIG)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.alertmanager
def test_a_real_alertmanager_delivers_to_the_receiver_and_inhibits_silent_runs(
    running_receiver, tmp_path
):
    """The stack's own config, with the receiver on loopback and no group wait."""
    port, process = running_receiver
    config = yaml.safe_load(AM_CONFIG.read_text())
    config["route"].update(group_wait="0s", group_interval="1s")
    config["receivers"][0]["webhook_configs"][0]["url"] = f"http://127.0.0.1:{port}/alerts"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    am_port = free_port()
    am = Process(
        [
            processes.find_command("prometheus-alertmanager") or "prometheus-alertmanager",
            f"--config.file={path}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
    )
    try:
        api = f"http://127.0.0.1:{am_port}/api/v2"
        wait_http(f"{api}/status")
        silent = {
            "labels": {"alertname": "GradhealthRunSilent", "severity": "warning", "run_id": "gone"},
            "annotations": {"summary": "Training run gone has sent no checkpoint"},
        }
        down = {
            "labels": {"alertname": "GradhealthDown", "severity": "critical", "instance": "a:9464"},
            "annotations": {"summary": "gradhealth a:9464 is down"},
        }
        # the service goes down first; while it is down a run turns silent
        assert post(f"{api}/alerts", json.dumps([down]).encode()) == 200
        deadline = time.monotonic() + 30
        while "FIRING GradhealthDown" not in process.output():
            assert time.monotonic() < deadline, process.output() + am.output()
            time.sleep(0.2)
        stalled = {k: v for k, v in STALLED.items() if k in ("labels", "annotations")}
        assert post(f"{api}/alerts", json.dumps([stalled, silent]).encode()) == 200
        while not all(
            f"FIRING {name}" in process.output()
            for name in ("GradhealthRunStalled", "GradhealthDown")
        ):
            assert time.monotonic() < deadline, process.output() + am.output()
            time.sleep(0.2)
        time.sleep(2)  # a silent-run notification would have arrived by now
        log = process.output()
        lines = log.splitlines()
        assert sum(line.startswith("FIRING ") for line in lines) == 2, log  # one line each
        assert "severity=critical run=resnet-42 cause=learning_rate_too_low" in log
        assert "runbook=http://localhost:9095/runbook#gradhealthrunstalled" in log
        assert "GradhealthRunSilent" not in log  # inhibited while the service is down
    finally:
        am.stop()
