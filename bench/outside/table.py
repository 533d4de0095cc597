"""`python -m bench.outside.runs table`: results.json and results.md from the saved runs'
metas and their CLI verdicts (verdict.json, written by `... runs diagnose`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.outside.cache import run_dir, runs_dir
from bench.outside.registry import all_runs

ALARMING = ("warning", "critical")
HARM = 0.02  # a fault is verified when its holdout metric is this far below its twin's


def verified(r: dict[str, Any]) -> bool | None:
    """The fault measurably hurt: holdout metric at least HARM below the healthy twin
    (nan counts as worse). None when either metric is unknown."""
    v, t = r.get("value"), r.get("twin_value")
    if v is None or t is None:
        return None
    if v != v:
        return True
    return bool(v < t - HARM)


def _count(rows: list[dict[str, Any]], key: str) -> int:
    return sum(1 for r in rows if r[key])


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "status" in r]
    errors = [dict(name=r["name"], error=r.get("error")) for r in rows if "status" not in r]
    healthy = [r for r in ok if r["label"] == "healthy"]
    faulty = [r for r in ok if r["label"] != "healthy"]
    for r in faulty:
        r["verified"] = verified(r)
        causes = [f["cause"] for f in r["findings"] if f["severity"] in ALARMING]
        r["top1"] = r["primary"] == r["label"]
        r["top1_lenient"] = r["primary"] in [r["label"], *r["accept"]]
        r["in_findings"] = r["label"] in causes
    fv = [r for r in faulty if r["verified"]]
    alarms = [r for r in healthy if r["status"] != "healthy"]
    return dict(
        runs=len(rows),
        diagnosed=len(ok),
        errors=errors,
        healthy=len(healthy),
        false_alarms=len(alarms),
        false_alarm_names=[r["name"] for r in alarms],
        faulty=len(faulty),
        top1=_count(faulty, "top1"),
        top1_lenient=_count(faulty, "top1_lenient"),
        in_findings=_count(faulty, "in_findings"),
        missed_entirely=sum(1 for r in faulty if r["status"] == "healthy"),
        faulty_verified=len(fv),
        top1_verified=_count(fv, "top1"),
        top1_lenient_verified=_count(fv, "top1_lenient"),
        in_findings_verified=_count(fv, "in_findings"),
        not_verified=[r["name"] for r in faulty if not r["verified"]],
        misses=[
            dict(
                name=r["name"],
                label=r["label"],
                primary=r["primary"],
                verified=r["verified"],
                lenient=r["top1_lenient"],
                in_findings=r["in_findings"],
            )
            for r in faulty
            if not r["top1"]
        ],
    )


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100.0 * a / b:.0f}%)" if b else f"{a}/0"


def summary_md(s: dict[str, Any]) -> str:
    fv = s["faulty_verified"]
    return "\n".join(
        [
            f"- runs: {s['runs']}, diagnosed: {s['diagnosed']}, "
            f"errors: {len(s['errors'])} {s['errors'] or ''}",
            f"- healthy runs: {s['healthy']}; false alarms (any warning/critical): "
            f"{_pct(s['false_alarms'], s['healthy'])}: {', '.join(s['false_alarm_names'])}",
            f"- faulty runs: {s['faulty']}; top-1 strict: {_pct(s['top1'], s['faulty'])}; "
            f"top-1 lenient (accepted alternates): {_pct(s['top1_lenient'], s['faulty'])}; "
            "intended cause among warning/critical findings: "
            f"{_pct(s['in_findings'], s['faulty'])}; called healthy: {s['missed_entirely']}",
            f"- faulty runs whose harm was verified (holdout metric >= {HARM} below the twin): "
            f"{fv}; on those, top-1 strict {_pct(s['top1_verified'], fv)}, "
            f"lenient {_pct(s['top1_lenient_verified'], fv)}, "
            f"in findings {_pct(s['in_findings_verified'], fv)}",
            f"- faults not verified as harmful: {', '.join(s['not_verified'])}",
        ]
    )


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def row_of(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A run's row: its meta, its twin's metric and its CLI verdict (or an error)."""
    meta = read_json(run_dir(name) / "meta.json")
    if meta is None:
        return dict(name=name, label=spec["label"], error="not trained")
    keep = ("label", "accept", "twin", "note", "metric", "value", "train_loss")
    row: dict[str, Any] = dict(name=name, **{k: meta[k] for k in keep})
    row["pred_classes"] = meta.get("pred_classes")
    twin = read_json(run_dir(meta["twin"]) / "meta.json") if meta["twin"] else None
    if twin is not None:
        row["twin_value"] = twin["value"]
        row["twin_train_loss"] = twin["train_loss"]
    rec = read_json(run_dir(name) / "verdict.json")
    if rec is None or "verdict" not in rec:
        row["error"] = "not diagnosed" if rec is None else rec.get("error")
        return row
    v = rec["verdict"]
    row["status"] = v["status"]
    row["primary"] = v.get("primary_cause") or None
    fs = v.get("findings", [])
    fields = ("confidence", "summary", "explained_by")
    row["findings"] = [
        dict(cause=f["cause"], severity=f["severity"], **{k: f.get(k) for k in fields}) for f in fs
    ]
    prim = next((f for f in fs if f["severity"] in ALARMING), None)
    row["primary_severity"] = prim["severity"] if prim else None
    row["primary_confidence"] = prim.get("confidence") if prim else None
    return row


def _fmt(x: float | None) -> str:
    return "nan" if x is None or (isinstance(x, float) and x != x) else f"{x:.3f}"


def line_of(r: dict[str, Any]) -> str:
    if "error" in r and "status" not in r:
        return f"| {r['name']} | {r['label']} | | ERROR | | | {r['error']} |"
    m = f"{r['metric']} {_fmt(r['value'])}"
    if r.get("twin"):
        harm = "verified" if verified(r) else "NOT verified"
        m += f" / {_fmt(r.get('twin_value'))} ({r['twin']}; harm {harm})"
    fs = "<br>".join(
        f"**{f['cause']}** ({f['severity']}, {f['confidence']}): "
        + (f["summary"] or "").replace("|", "/")
        for f in r["findings"]
        if f["severity"] in ALARMING
    )
    conf = r["primary_confidence"]
    cells = [
        r["name"],
        r["label"],
        m,
        r["primary"] or "healthy",
        r["primary_severity"] or "",
        _fmt(conf) if conf is not None else "",
        fs,
    ]
    return "| " + " | ".join(cells) + " |"


def table(out: str | Path | None = None) -> dict[str, Any]:
    """Write results.json and results.md into `out` (default: the runs directory)."""
    runs = all_runs()
    rows = [row_of(name, spec) for name, spec in runs.items() if spec["evaluated"]]
    summary = summarize(rows)
    where = Path(out) if out else runs_dir()
    where.mkdir(parents=True, exist_ok=True)
    (where / "results.json").write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
    header = [
        "| run | intended | holdout metric (run / twin) | primary found | sev | conf "
        "| warning/critical findings |",
        "|---|---|---|---|---|---|---|",
    ]
    lines = [*header, *(line_of(r) for r in rows)]
    md = "# gradhealth outside runs\n\n" + summary_md(summary) + "\n\n" + "\n".join(lines) + "\n"
    (where / "results.md").write_text(md)
    print(f"wrote {len(rows)} rows to {where}")
    return summary
