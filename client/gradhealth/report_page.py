"""`gradhealth report RUN -o RUN.html`: one self-contained page (the figure
embedded, the run's state, the latest fixes, every verdict), no JavaScript,
nothing fetched."""

from __future__ import annotations

import base64
import datetime as dt
import html
from typing import Any

from gradhealth.report_history import RunHistory, state_line


def html_page(history: RunHistory, run: Any | None, image: bytes) -> str:
    """One self-contained page: the figure, the latest findings and their fixes,
    every verdict. No script, nothing loaded from elsewhere."""
    esc = html.escape
    latest = history.verdicts[-1]
    state = state_line(run) or "state: unknown"
    findings = (
        "".join(
            f"<li><b class='{esc(f.severity)}'>{esc(f.cause)} ({esc(f.severity)})</b>"
            + (f" layers: {esc(', '.join(f.layers))}" if f.layers else "")
            + f"<br>what we saw: {esc(f.summary)}"
            + f"<br>what to change: <code>{esc(f.remedy)}</code>"
            + (f"<br>tried on the batch: {esc(f.trial)}" if f.trial else "")
            + "</li>"
            for f in latest.findings
        )
        or "<li>no problem found</li>"
    )
    rows = "".join(
        f"<tr><td>{v.step}</td><td>{esc(v.created.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
        f"<td class='{esc(v.status)}'>{esc(v.status)}</td><td>{esc(v.primary_cause or '-')}</td>"
        f"<td>{esc(', '.join(f'{f.cause} ({f.severity})' for f in v.findings) or '-')}</td>"
        f"<td><code>{esc(v.verdict_id)}</code></td></tr>"
        for v in reversed(history.verdicts)
    )
    picture = base64.b64encode(image).decode()
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>gradhealth report: {esc(history.run_id)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
img{{max-width:100%;border:1px solid #ddd}}
table{{border-collapse:collapse;font-size:.85em}}
td,th{{border:1px solid #ddd;padding:.2em .5em;text-align:left}}
.critical{{color:#d62728}} .warning{{color:#c46a00}} .healthy{{color:#2e7d32}} .info{{color:#666}}
code{{font-size:.9em}}
</style></head><body>
<h1>Run <code>{esc(history.run_id)}</code></h1>
<p>{esc(state)}; {len(history.steps)} checkpoints, steps {history.steps[0]}–{history.steps[-1]},
{esc(history.times[0].strftime("%Y-%m-%d %H:%M"))} to
{esc(history.times[-1].strftime("%Y-%m-%d %H:%M"))} UTC. Generated {generated} by
<code>gradhealth report</code>.</p>
<h2>Latest verdict: <span class="{esc(latest.status)}">{esc(latest.status)}</span>
at step {latest.step}</h2>
<ul>{findings}</ul>
<h2>History</h2>
<img alt="loss, accuracy, per-layer gradient norms, update ratios and findings of run \
{esc(history.run_id)}" src="data:image/png;base64,{picture}">
<h2>Verdicts, newest first</h2>
<table><tr><th>step</th><th>stored (UTC)</th><th>status</th><th>primary cause</th>
<th>findings</th><th>verdict id</th></tr>{rows}</table>
</body></html>
"""
