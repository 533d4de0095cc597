"""Readable terminal output of a verdict: cause, evidence and remedy first."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {"healthy": "bold green", "warning": "bold yellow", "critical": "bold red"}


def render_verdict(verdict: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    status = verdict.get("status", "?")
    cause = verdict.get("primary_cause") or "none"
    console.print(
        f"[{STATUS_STYLE.get(status, 'bold')}]{status.upper()}[/]  primary cause: [bold]{cause}[/]"
    )
    findings = verdict.get("findings", [])
    if findings:
        table = Table(title="Findings", show_lines=True, expand=True)
        for col in ("cause", "severity", "layers", "what we saw", "what to change"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(
                f["cause"],
                f["severity"],
                ", ".join(f.get("layers", [])) or "-",
                f.get("summary", "") + "\n" + _evidence(f.get("evidence", {})),
                f.get("remedy", ""),
            )
        console.print(table)
    m = verdict.get("measurements") or {}
    if m:
        console.print(_summary(m))
        layers = m.get("layers") or []
        if layers:
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
