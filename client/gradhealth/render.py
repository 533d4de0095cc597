"""Readable terminal output of a verdict: cause, evidence and remedy first."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {"healthy": "bold green", "warning": "bold yellow", "critical": "bold red"}
SEVERITY_STATUS = {"info": "healthy", "warning": "warning", "critical": "critical"}


def render_verdict(verdict: dict[str, Any], console: Console | None = None) -> None:
    """Status and primary cause, then each finding: what we saw, what to change."""
    console = console or Console()
    status = verdict.get("status", "?")
    cause = verdict.get("primary_cause") or "none"
    console.print(
        f"[{STATUS_STYLE.get(status, 'bold')}]{status.upper()}[/]  primary cause: [bold]{cause}[/]"
    )
    for f in verdict.get("findings", []):
        style = STATUS_STYLE.get(SEVERITY_STATUS.get(f["severity"], ""), "bold")
        layers = ", ".join(f.get("layers", [])) or "-"
        explained = f.get("explained_by") or []
        console.print()
        console.print(
            f"[{style}]● {f['cause']}[/] [{style}]{f['severity']}[/]  layers: {layers}"
            + (f"  [dim](explained by {', '.join(explained)})[/]" if explained else "")
        )
        console.print(f"  [bold]what we saw:[/] {f.get('summary', '')}", highlight=False)
        console.print(f"  [bold]what to change:[/] {f.get('remedy', '')}", highlight=False)
        if f.get("trial"):
            console.print(f"  [bold]tried on the batch:[/] {f['trial']}", highlight=False)
        evidence = _evidence(f.get("evidence", {}))
        if evidence:
            console.print(f"  [dim]evidence: {evidence}[/]", highlight=False)
    m = verdict.get("measurements") or {}
    if m:
        console.print()
        console.print(_summary(m), highlight=False)
        if m.get("layers"):
            console.print(_layer_table(m))


def _evidence(evidence: dict[str, Any]) -> str:
    parts = []
    for key, value in evidence.items():
        if isinstance(value, (list, dict)):
            continue
        parts.append(f"{key}={_fmt(value)}")
    return ", ".join(parts)


def _summary(m: dict[str, Any]) -> str:
    opt = m.get("optimizer") or {}
    items = [
        f"loss {_fmt(m.get('loss'))}",
        f"accuracy {_fmt(m.get('accuracy'))}",
        f"grad norm {_fmt(m.get('grad_norm'))}",
        f"update ratio {_fmt(opt.get('update_ratio'))}",
        f"noise scale {_fmt(m.get('noise_scale'))}",
        f"rows {m.get('rows')}",
        f"xla {m.get('xla')}",
        f"probe {_fmt(m.get('probe_seconds'))} s",
    ]
    return "  ".join(items)


def _layer_table(m: dict[str, Any]) -> Table:
    acts = {a["layer"]: a for a in m.get("activations") or []}
    table = Table(title="Layers, input to output")
    for col in ("layer", "class", "grad norm", "weight norm", "update ratio", "dead", "saturated"):
        table.add_column(col, justify="right" if col not in ("layer", "class") else "left")
    for layer in m["layers"]:
        act = acts.get(layer["name"], {})
        table.add_row(
            layer["name"],
            layer["class_name"],
            _fmt(layer["grad_norm"]),
            _fmt(layer["weight_norm"]),
            _fmt(layer.get("update_ratio")),
            _fmt(act.get("dead_fraction")),
            _fmt(act.get("saturated_fraction")),
        )
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_runs(runs: list[dict[str, Any]], console: Console | None = None) -> None:
    """One line per run: its latest status and cause, stalled or not."""
    table = Table(title="runs")
    # A run id and a cause are never cut short (they are what one copies); on a
    # narrow terminal they fold onto a second line instead.
    table.add_column("run", overflow="fold", min_width=12)
    table.add_column("status", no_wrap=True)
    table.add_column("primary cause", overflow="fold", min_width=10)
    for column in ("step", "n", "stalled", "state", "last (UTC)"):  # n: verdicts stored
        table.add_column(column, no_wrap=True)
    for run in runs:
        status = run["latest_status"]
        state = run.get("state") or "active"
        if run.get("ad_hoc"):
            state += " (ad hoc)"
        table.add_row(
            run["run_id"],
            f"[{STATUS_STYLE.get(status, 'bold')}]{status}[/]",
            run["latest_primary_cause"] or "-",
            str(run["latest_step"]),
            str(run["verdict_count"]),
            "[bold red]yes[/]" if run["stalled"] else "no",
            state,
            run["last_diagnosis_time"][5:16].replace("T", " "),  # MM-DD HH:MM, UTC
        )
    (console or Console()).print(table)


def render_verdict_line(verdict: dict[str, Any], console: Console | None = None) -> None:
    """A verdict in one line, for lists and the watch stream."""
    status = verdict.get("status", "?")
    causes = ", ".join(f"{f['cause']}({f['severity']})" for f in verdict.get("findings", []))
    (console or Console()).print(
        f"{verdict.get('create_time', '')}  {verdict['run_id']}  step {verdict['step']}  "
        f"[{STATUS_STYLE.get(status, 'bold')}]{status}[/]  "
        f"{verdict.get('primary_cause') or '-'}  [dim]{causes}[/]",
        highlight=False,
    )
