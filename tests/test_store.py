"""The verdict store on SQLite and on real PostgreSQL: persistence, paging,
filters, run summaries, idempotent request ids, concurrent writers."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa

from gradhealth.v1 import service_pb2, verdict_pb2
from gradhealth_server.rules.history import CheckpointColumns
from gradhealth_server.store.rows import BadPageToken
from gradhealth_server.store.verdict_store import VerdictQuery, VerdictStore


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'verdicts.db'}"
    return request.getfixturevalue("postgres").database(f"store_{uuid.uuid4().hex[:12]}")


@pytest.fixture(autouse=True)
def _close_stores(monkeypatch):
    """Every store a test opens is closed after it (PostgreSQL connections add up)."""
    opened = []
    original = VerdictStore.__init__

    def tracking(self, *args, **kwargs):
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(VerdictStore, "__init__", tracking)
    yield
    for store in opened:
        store.close()


def test_the_tables_match_the_migrations(url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from gradhealth_server.store.schema import metadata

    store = VerdictStore(url)
    with store.engine.connect() as db:
        differences = compare_metadata(MigrationContext.configure(db), metadata)
    assert differences == []


# The typed columns each test verdict is stored with, as the worker would give them.
COLUMNS: dict[str, CheckpointColumns] = {}


def add(store: VerdictStore, v: verdict_pb2.Verdict, **kw):
    return store.add(v, columns=COLUMNS.get(v.verdict_id), **kw)


def verdict(
    run="run",
    step=1,
    status=verdict_pb2.STATUS_HEALTHY,
    causes=(),
    when=None,
    acc=0.5,
    grad_norm=None,
):
    v = verdict_pb2.Verdict(
        verdict_id=str(uuid.uuid4()),
        run_id=run,
        step=step,
        status=status,
        primary_cause=causes[0] if causes else 0,
        checkpoint_sha256="ab" * 32,
        model_fingerprint="fp",
    )
    v.create_time.FromDatetime(when or dt.datetime.now(dt.UTC))
    for cause in causes:
        v.findings.add(cause=cause, severity=verdict_pb2.SEVERITY_CRITICAL)
    v.measurements.update({"accuracy": acc, "loss": "nan", "weight_digests": {"dense": str(step)}})
    v.training_metrics.accuracy = acc
    COLUMNS[v.verdict_id] = CheckpointColumns(acc, None, grad_norm, {"dense": str(step)})
    return v


def test_verdicts_survive_reopening_the_store(url):
    store = VerdictStore(url)
    made = [add(store, verdict(step=s)) for s in range(3)]
    store.close()
    again = VerdictStore(url)  # migrations already applied: a no-op
    assert again.get(made[1].verdict_id) == made[1]
    assert [v.step for v in again.list_verdicts(VerdictQuery(run_id="run"), 10, "")[0]] == [2, 1, 0]
    with again.engine.connect() as db:
        assert db.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0003"


def test_a_store_of_an_older_schema_is_upgraded_in_place_with_its_verdicts(url):
    """What an operator's upgrade does: the new server migrates the old database."""
    from importlib.resources import files

    from alembic import command
    from alembic.config import Config

    from gradhealth_server.store import rows as store_module

    old = verdict(run="old-run", step=7)
    row = store_module.verdict_row(old, "", COLUMNS[old.verdict_id])
    del row["grad_norm"]  # revision 0001 has no such column
    config = Config()
    config.set_main_option("script_location", str(files("gradhealth_server.store") / "migrations"))
    engine = sa.create_engine(url)
    with engine.begin() as db:
        config.attributes["connection"] = db
        command.upgrade(config, "0001")
        db.execute(
            sa.text("INSERT INTO runs VALUES (:run, :t, :t, :vid, 7, :status, 0, 1, false)"),
            {
                "run": "old-run",
                "t": row["create_time"],
                "vid": old.verdict_id,
                "status": old.status,
            },
        )
        columns = ", ".join(row)
        db.execute(
            sa.text(f"INSERT INTO verdicts ({columns}) VALUES ({', '.join(':' + c for c in row)})"),
            {**row, "weight_digests": '{"dense": "7"}'},
        )
    engine.dispose()
    upgraded = VerdictStore(url)
    assert upgraded.get(old.verdict_id) == old
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    (run,) = upgraded.active_runs(since, 10)
    assert (run.run_id, run.step, run.grad_norm) == ("old-run", 7, None)
    add(upgraded, verdict(run="old-run", step=8))
    assert upgraded.active_runs(since, 10)[0].step == 8


def test_active_runs_are_the_recent_ones_newest_first_and_bounded(url):
    store = VerdictStore(url)
    now = dt.datetime.now(dt.UTC)
    for i, age_hours in enumerate((30, 5, 1, 0)):
        v = verdict(
            run=f"run-{i}", step=10, when=now - dt.timedelta(hours=age_hours), grad_norm=0.5 + i
        )
        add(store, v)
    active = store.active_runs(now - dt.timedelta(hours=24), limit=10)
    assert [r.run_id for r in active] == ["run-3", "run-2", "run-1"]  # run-0 went quiet
    assert [r.grad_norm for r in active] == [3.5, 2.5, 1.5]
    assert active[0].reported_accuracy == 0.5 and active[0].batch_loss is None  # "nan"
    assert [r.run_id for r in store.active_runs(now - dt.timedelta(hours=24), limit=2)] == [
        "run-3",
        "run-2",
    ]


def test_paging_is_newest_first_and_stable_under_inserts(url):
    store = VerdictStore(url)
    for step in range(7):
        add(store, verdict(step=step))
    page, token = store.list_verdicts(VerdictQuery(), 3, "")
    assert [v.step for v in page] == [6, 5, 4]
    add(store, verdict(step=99))  # a new verdict while the reader pages
    page, token = store.list_verdicts(VerdictQuery(), 3, token)
    assert [v.step for v in page] == [3, 2, 1]
    page, token = store.list_verdicts(VerdictQuery(), 3, token)
    assert [v.step for v in page] == [0] and token == ""
    with pytest.raises(BadPageToken):
        store.list_verdicts(VerdictQuery(), 3, "not-a-token")


def test_filters_by_run_status_cause_and_time(url):
    store = VerdictStore(url)
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    add(store, verdict("a", 1, when=t0))
    add(
        store,
        verdict(
            "a",
            2,
            verdict_pb2.STATUS_CRITICAL,
            (verdict_pb2.CAUSE_DEAD_RELU,),
            t0 + dt.timedelta(hours=1),
        ),
    )
    add(
        store,
        verdict(
            "b",
            1,
            verdict_pb2.STATUS_WARNING,
            (verdict_pb2.CAUSE_STALLED, verdict_pb2.CAUSE_DEAD_RELU),
            t0 + dt.timedelta(hours=2),
        ),
    )

    def steps(**query):
        return [(v.run_id, v.step) for v in store.list_verdicts(VerdictQuery(**query), 10, "")[0]]

    assert steps(run_id="a") == [("a", 2), ("a", 1)]
    assert steps(status=verdict_pb2.STATUS_CRITICAL) == [("a", 2)]
    assert steps(cause=verdict_pb2.CAUSE_DEAD_RELU) == [("b", 1), ("a", 2)]
    assert steps(cause=verdict_pb2.CAUSE_STALLED) == [("b", 1)]
    start = verdict_pb2.Verdict().create_time
    start.FromDatetime(t0 + dt.timedelta(minutes=30))
    end = verdict_pb2.Verdict().create_time
    end.FromDatetime(t0 + dt.timedelta(minutes=90))
    assert steps(start_time=start, end_time=end) == [("a", 2)]


def test_runs_carry_their_latest_verdict(url):
    store = VerdictStore(url)
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    add(store, verdict("a", 5, when=t0 + dt.timedelta(hours=1)))
    stalled = verdict(
        "a",
        9,
        verdict_pb2.STATUS_CRITICAL,
        (verdict_pb2.CAUSE_STALLED,),
        t0 + dt.timedelta(hours=2),
    )
    add(store, stalled)
    add(store, verdict("a", 1, when=t0))  # late, older: not the latest
    add(store, verdict("b", 1))
    runs, token = store.list_runs(1, "")
    assert [r.run_id for r in runs] == ["a"] and token
    a = runs[0]
    assert (a.verdict_count, a.latest_step, a.stalled) == (3, 9, True)
    assert a.latest_primary_cause == verdict_pb2.CAUSE_STALLED
    assert [r.run_id for r in store.list_runs(1, token)[0]] == ["b"]


def test_history_is_oldest_first_with_the_columns_the_rules_read(url):
    store = VerdictStore(url)
    for step in range(6):
        add(store, verdict(step=step, acc=step / 10))
    history = store.history("run", 3)
    assert [c.step for c in history] == [3, 4, 5]
    assert history[-1].batch_accuracy == 0.5 and history[-1].reported_accuracy == 0.5
    assert history[-1].batch_loss is None  # NaN travels as a string: not a number
    assert history[-1].weight_digests == {"dense": "5"}


def test_a_request_id_stores_one_verdict(url):
    store = VerdictStore(url)
    first = add(store, verdict(), request_id="req-1")
    second = add(store, verdict(), request_id="req-1")  # a retry that raced past the lookup
    assert second == first
    assert store.find_request("run", "req-1") == first
    assert len(store.list_verdicts(VerdictQuery(), 10, "")[0]) == 1


def test_concurrent_writers_lose_no_verdict(url):
    store = VerdictStore(url)
    writers, each = 8, 25

    def write(w: int) -> None:
        for i in range(each):
            add(store, verdict(run=f"run-{w % 3}", step=i))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.engine.connect() as db:
        assert db.scalar(sa.text("SELECT count(*) FROM verdicts")) == writers * each
    runs = store.list_runs(10, "")[0]
    assert sum(r.verdict_count for r in runs) == writers * each
    assert store.since(0, limit=1000)[-1][0] == store.last_id()


def test_only_alarming_findings_mark_a_run_stalled_or_match_a_cause(url):
    store = VerdictStore(url)
    plateau = verdict("p", 1, causes=(verdict_pb2.CAUSE_STALLED,))
    plateau.findings[0].severity = verdict_pb2.SEVERITY_INFO
    add(store, plateau)
    (run,) = store.list_runs(10, "")[0]
    assert not run.stalled
    assert store.list_verdicts(VerdictQuery(cause=verdict_pb2.CAUSE_STALLED), 10, "")[0] == []


def test_the_latest_checkpoint_is_the_highest_step(url):
    store = VerdictStore(url)
    now = dt.datetime.now(dt.UTC)
    add(store, verdict("r", 9, when=now))
    add(store, verdict("r", 3, when=now + dt.timedelta(seconds=5)))  # a late retry of step 3
    (run,) = store.list_runs(10, "")[0]
    assert run.latest_step == 9


def test_bad_tokens_and_times_are_bad_arguments(url):
    store = VerdictStore(url)
    with pytest.raises(BadPageToken):
        store.list_verdicts(VerdictQuery(), 10, "9" * 30)
    far = verdict_pb2.Verdict().create_time
    far.seconds = 2**62
    with pytest.raises(BadPageToken):
        store.list_verdicts(VerdictQuery(start_time=far), 10, "")


def test_a_run_closes_reopens_on_a_later_checkpoint_and_ad_hoc_runs_are_not_exported(url):
    store = VerdictStore(url)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    add(store, verdict("done", 10))
    add(store, verdict("halted", 10, verdict_pb2.STATUS_CRITICAL, (verdict_pb2.CAUSE_NON_FINITE,)))
    add(store, verdict("adhoc-1", 0), ad_hoc=True)
    assert store.close_run("nobody", service_pb2.RUN_STATE_FINISHED) is None
    with pytest.raises(ValueError, match="finished or stopped"):
        store.close_run("done", service_pb2.RUN_STATE_ACTIVE)

    finished = store.close_run("done", service_pb2.RUN_STATE_FINISHED, reason="fit ended")
    assert (finished.state, finished.end_reason) == (service_pb2.RUN_STATE_FINISHED, "fit ended")
    again = store.close_run("done", service_pb2.RUN_STATE_FINISHED)  # a retried call
    assert again.end_time == finished.end_time
    stopped = store.close_run(
        "halted", service_pb2.RUN_STATE_STOPPED, verdict_pb2.CAUSE_NON_FINITE, "stop_on"
    )
    assert (stopped.state, stopped.stop_cause) == (
        service_pb2.RUN_STATE_STOPPED,
        verdict_pb2.CAUSE_NON_FINITE,
    )
    exported = {r.run_id: r for r in store.active_runs(since, 10)}
    assert set(exported) == {"done", "halted"}  # never the ad-hoc run
    assert exported["done"].state == service_pb2.RUN_STATE_FINISHED
    assert exported["done"].end_time is not None
    runs = {r.run_id: r for r in store.list_runs(10, "")[0]}
    assert runs["adhoc-1"].ad_hoc and runs["adhoc-1"].state == service_pb2.RUN_STATE_ACTIVE

    # A late retry of an earlier checkpoint leaves the run closed ...
    add(store, verdict("done", 9))
    assert store.get_run("done").state == service_pb2.RUN_STATE_FINISHED
    # ... a checkpoint past the last one (training resumed) reopens it.
    add(store, verdict("done", 11))
    reopened = store.get_run("done")
    assert reopened.state == service_pb2.RUN_STATE_ACTIVE
    assert not reopened.HasField("end_time") and reopened.end_reason == ""
    assert store.get_run("done").verdict_count == 3
