"""Observability end to end: a real Prometheus scrapes the real server while a
stalled run and a healthy run go through it; the alert rules and every panel of
the Grafana dashboard are checked against what Prometheus then holds."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from gradhealth.client import GradientHealthClient
from gradhealth.v1 import service_pb2
from tests.prometheus import RULES, ThrowawayPrometheus
from tests.service import ServerProcess, raw_diagnose

pytestmark = pytest.mark.prometheus

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy/grafana/dashboards/gradhealth.json"
RUNBOOK = Path(__file__).resolve().parents[1] / "docs/runbook.md"
STUCK, HEALTHY, FINISHED = "obs-stuck", "obs-healthy", "obs-finished"


@pytest.fixture(scope="module")
def observed(tmp_path_factory, stuck_run, healthy_run, flat_batch):
    """Server and Prometheus up first (so rates see the calls), then both runs."""
    server = ServerProcess(Path(tmp_path_factory.mktemp("observed-server"))).start()
    prometheus = ThrowawayPrometheus(
        Path(tmp_path_factory.mktemp("prometheus")), [f"127.0.0.1:{server.metrics_port}"]
    ).start()
    try:
        prometheus.wait_for('up{job="gradhealth"} == 1')
        with GradientHealthClient(server.target) as client:
            for i, (stuck, healthy) in enumerate(zip(stuck_run, healthy_run)):
                client.diagnose(stuck, batch=flat_batch, run_id=STUCK, step=100 * (i + 1))
                client.diagnose(healthy, batch=flat_batch, run_id=HEALTHY, step=100 * (i + 1))
                # The same stall, in a run whose job then ends normally ...
                client.diagnose(stuck, batch=flat_batch, run_id=FINISHED, step=100 * (i + 1))
            client.close_run(FINISHED, "finished", reason="fit ended")
            # ... and an ad-hoc diagnosis of a stalled checkpoint: stored, never exported.
            client.diagnose(stuck_run[-1], batch=flat_batch)
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):  # one rejection, by reason
            raw_diagnose(server, [service_pb2.DiagnoseRequest(checkpoint_chunk=b"x")], token="")
        # Two scrapes after the last call: every counter has moved inside the windows.
        time.sleep(3)
        yield server, prometheus
    finally:
        prometheus.stop()
        assert server.stop() == 0, server.log()


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_the_stalled_run_alert_fires_for_the_stalled_run_only(observed):
    _, prometheus = observed
    rule = alert_rules()["GradhealthRunStalled"]
    firing = prometheus.wait_for(rule["expr"])
    assert [series["metric"]["run_id"] for series in firing] == [STUCK]
    assert firing[0]["metric"]["primary_cause"] == "learning_rate_too_low"
    # Prometheus itself evaluates the rule: pending (then firing after `for`).
    alerts = prometheus.wait_for('ALERTS{alertname="GradhealthRunStalled"}')
    assert {a["metric"]["run_id"] for a in alerts} == {STUCK}
    assert alerts[0]["metric"]["severity"] == "critical"
    # The healthy run is exported too, and alerts on nothing.
    assert prometheus.query(f'gradhealth_run_status{{run_id="{HEALTHY}"}} == 0')
    assert not prometheus.query(f'ALERTS{{run_id="{HEALTHY}"}}')


def test_a_finished_run_is_exported_but_never_alerts_and_ad_hoc_runs_are_not_exported(observed):
    _, prometheus = observed
    prometheus.wait_for('ALERTS{alertname="GradhealthRunStalled"}')  # rules have evaluated
    # The finished run is as stalled as the stuck one, and says it is finished ...
    assert prometheus.query(f'gradhealth_run_stalled{{run_id="{FINISHED}"}} == 1')
    (end,) = prometheus.query(f'gradhealth_run_end_timestamp_seconds{{run_id="{FINISHED}"}}')
    assert end["metric"]["state"] == "finished"
    assert abs(float(end["value"][1]) - time.time()) < 600
    # ... so no alert expression selects it, and Prometheus raised none for it.
    for name, rule in alert_rules().items():
        series = prometheus.query(rule["expr"])
        assert FINISHED not in {s["metric"].get("run_id") for s in series}, name
    assert not prometheus.query(f'ALERTS{{run_id="{FINISHED}"}}')
    # The ad-hoc run has no per-run series at all.
    assert not prometheus.query('{__name__=~"gradhealth_run_.+", run_id=~"adhoc-.+"}')


def test_every_rule_evaluates_cleanly_against_the_real_metrics(observed):
    _, prometheus = observed
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == set(alert_rules())
    assert all(rule["health"] == "ok" for rule in rules), [
        (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"
    ]


def test_every_alert_has_severity_summary_description_and_a_runbook_section():
    anchors = {
        re.sub(r"[^a-z0-9-]", "", heading.lower().replace(" ", "-"))
        for heading in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    }
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        page, anchor = annotations["runbook_url"].split("#")
        # absolute, so a pager or a chat message can open it; one base for all
        assert page == "http://localhost:9095/runbook" and anchor in anchors, name
        if "run_id" in rule["expr"]:  # run alerts name the run
            assert "$labels.run_id" in annotations["summary"], name


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_returns_series(observed):
    _, prometheus = observed
    assert len(panel_queries()) >= 20
    for title, expr in panel_queries():
        concrete = expr.replace("$run_id", STUCK).replace("$__rate_interval", "5m")
        assert prometheus.query(concrete), f"panel {title!r}: no series for {concrete}"


def test_the_dashboard_shows_what_happened(observed):
    _, prometheus = observed

    def value(expr: str) -> float:
        (series,) = prometheus.query(expr)
        return float(series["value"][1])

    # The fleet panels count running runs: the stuck and the healthy one, not the finished.
    running = {expr for title, expr in panel_queries() if title.endswith("running runs")}
    running |= {expr for title, expr in panel_queries() if "Running runs" in title}
    for series, status, expected in (("status", 2, 1), ("status", 0, 1), ("stalled", 1, 1)):
        expr = (
            f"count(max by (run_id) (gradhealth_run_{series}) == {status} "
            "unless on (run_id) gradhealth_run_end_timestamp_seconds) or vector(0)"
        )
        assert expr in running, expr
        assert value(expr) == expected, expr
    assert value("count(max by (run_id) (gradhealth_run_stalled) == 1)") == 2  # with FINISHED
    assert value(f'max(gradhealth_run_step{{run_id="{STUCK}"}})') == 500
    assert value(f'max(gradhealth_run_accuracy{{run_id="{HEALTHY}",source="batch"}})') > 0.5
    assert value(f'max(gradhealth_run_gradient_norm{{run_id="{STUCK}"}})') > 0
    assert value('sum(gradhealth_diagnoses_total{status="critical"})') >= 1
    assert value('sum(gradhealth_rejected_total{reason="invalid_upload"})') == 1
    assert value("min(gradhealth_store_up)") == 1


def test_the_dashboard_is_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert "gradhealth_run_status" in variables["run_id"]["definition"]
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    # The run view uses its variable; the fleet and service views never pin a run.
    for title, expr in panel_queries():
        assert "run_id=" not in expr or 'run_id="$run_id"' in expr, title


def test_per_run_series_are_bounded_and_expire(tmp_path):
    """The collector reads the store: a quiet run drops out, at most max_runs are shown."""
    import datetime as dt

    from prometheus_client import CollectorRegistry, generate_latest

    from gradhealth_server.metrics.runs import RunMetrics, RunMetricsConfig
    from gradhealth_server.store.verdict_store import VerdictStore
    from tests.test_store import add, verdict

    store = VerdictStore(f"sqlite:///{tmp_path / 'v.db'}")
    now = dt.datetime.now(dt.UTC)
    for i, hours in enumerate((48, 3, 2, 1)):
        add(store, verdict(run=f"run-{i}", step=i, when=now - dt.timedelta(hours=hours)))
    registry = CollectorRegistry()
    registry.register(RunMetrics(store, RunMetricsConfig(active_seconds=24 * 3600, max_runs=2)))
    text = generate_latest(registry).decode()
    shown = re.findall(r'^gradhealth_run_status\{.*run_id="([^"]+)"', text, re.MULTILINE)
    assert sorted(shown) == ["run-2", "run-3"]  # run-0 went quiet, run-1 is past max_runs
    assert "gradhealth_active_runs 2.0" in text and "gradhealth_store_up 1.0" in text
    store.engine.dispose()
    (tmp_path / "v.db").unlink()
    (tmp_path / "v.db").mkdir()  # the store's file is gone: SQLite cannot open it
    text = generate_latest(registry).decode()
    assert "gradhealth_store_up 0.0" in text and "gradhealth_run_status{" not in text
    store.close()
