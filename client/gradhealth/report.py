"""`gradhealth report RUN`: one picture of a run's history, from the store.

What an on-call engineer opens when an alert fires. Four panels on one
timeline (x: the run's checkpoints, labelled with their steps):

1. loss and accuracy on the sample batch (and as the job reported them);
2. the per-layer gradient norm, layers x checkpoints, log colour scale; a
   layer a verdict called vanishing is outlined in blue, exploding in red,
   a non-finite norm is a magenta cross;
3. each layer's update ratio ||dw||/||w|| (the optimizer's own next step), log
   scale, with the usual healthy band 1e-4..1e-2 shaded;
4. every verdict's findings as markers (grey info, orange warning, red
   critical; the primary cause larger, ringed in black).

`.png` writes the figure; `.html` writes one self-contained page (the figure
embedded, the run's state, the latest verdict's findings with their fixes, and
every verdict in a table), no JavaScript, nothing fetched. Needs matplotlib
(`pip install 'gradhealth[report]'`); reads only the public API's Verdicts.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from gradhealth.report_history import ReportError, RunHistory, state_line
from gradhealth.report_page import html_page
from gradhealth.verdicts import Verdict

SEVERITY_COLORS = {"info": "#8c8c8c", "warning": "#f28e2b", "critical": "#d62728"}
VANISHING_COLOR = "#1f77b4"
EXPLODING_COLOR = "#d62728"
NONFINITE_COLOR = "#ff00ff"
STATUS_COLORS = {"healthy": "#59a14f", "warning": "#f28e2b", "critical": "#d62728"}
HEALTHY_UPDATE_RATIO = (1e-4, 1e-2)
MAX_LINE_LAYERS = 10  # more layers: the update ratios are drawn as a heatmap too


def draw(history: RunHistory, run: Any | None = None) -> Figure:
    """The figure: four panels on one checkpoint axis."""
    n_layers = max(1, len(history.layers))
    n = len(history.steps)
    heat_height = min(9.0, max(1.6, 0.28 * n_layers + 0.8))
    many = n_layers > MAX_LINE_LAYERS
    causes = sorted({c for fs in history.findings for c, _, _ in fs})
    finding_height = max(1.2, 0.3 * len(causes) + 0.7)
    heights = [2.4, heat_height, heat_height if many else 2.4, finding_height]
    width = min(18.0, max(10.0, 0.22 * n + 6))
    fig = Figure(figsize=(width, sum(heights) + 1.4), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True, height_ratios=heights)
    x = np.arange(n)

    latest = history.verdicts[-1]
    title = f"gradhealth run {history.run_id}\n{n} checkpoints, steps " + (
        f"{history.steps[0]}-{history.steps[-1]}; latest verdict {latest.status}"
        + (f" ({latest.primary_cause})" if latest.primary_cause else "")
    )
    if state := state_line(run):
        title += f"\n{state}"
    fig.suptitle(title, fontsize=11, x=0.01, ha="left", multialignment="left")

    _draw_metrics(axes[0], x, history)
    _draw_heatmap(
        fig, axes[1], history.grad_norm, history, "gradient norm per layer", "‖g‖", marks=True
    )
    if many:
        _draw_heatmap(fig, axes[2], history.update_ratio, history, "update ratio ‖Δw‖/‖w‖", "ratio")
    else:
        _draw_update_lines(axes[2], x, history)
    _draw_findings(axes[3], x, history, causes)

    step_every = max(1, n // 20)
    axes[-1].set_xticks(x[::step_every], [str(s) for s in history.steps[::step_every]])
    axes[-1].set_xlabel("training step of the checkpoint")
    axes[-1].set_xlim(-0.5, n - 0.5)
    return fig


def _draw_metrics(ax: Any, x: np.ndarray, h: RunHistory) -> None:
    ax.set_title("loss and accuracy on the sample batch", fontsize=9, loc="left")
    finite_loss = np.where(np.isfinite(h.loss), h.loss, np.nan)
    ax.plot(x, finite_loss, "o-", color="#4e79a7", ms=3, label="loss (batch)")
    if np.isfinite(h.reported_loss).any():
        ax.plot(x, h.reported_loss, "--", color="#4e79a7", alpha=0.6, label="loss (reported)")
    for j in np.flatnonzero(~np.isfinite(h.loss) & ~np.isnan(h.loss)):
        ax.axvline(j, color=NONFINITE_COLOR, lw=1.5, alpha=0.7)
    ax.set_ylabel("loss", color="#4e79a7")
    every = np.concatenate([finite_loss, h.reported_loss])
    positive = every[np.isfinite(every)]
    if positive.size and positive.min() > 0 and positive.max() / positive.min() > 50:
        ax.set_yscale("log")
    acc = ax.twinx()
    if np.isfinite(h.accuracy).any() or np.isfinite(h.reported_accuracy).any():
        acc.plot(x, h.accuracy, "s-", color="#59a14f", ms=3, label="accuracy (batch)")
        if np.isfinite(h.reported_accuracy).any():
            acc.plot(
                x,
                h.reported_accuracy,
                "--",
                color="#59a14f",
                alpha=0.6,
                label="accuracy (reported)",
            )
        acc.set_ylim(-0.02, 1.02)
        acc.set_ylabel("accuracy", color="#59a14f")
    # the status of each verdict, a thin strip along the top
    for j, status in enumerate(h.statuses):
        ax.axvspan(j - 0.5, j + 0.5, ymin=0.96, ymax=1.0, color=STATUS_COLORS.get(status, "#bbb"))
    lines = ax.get_legend_handles_labels()
    more = acc.get_legend_handles_labels()
    ax.legend(
        lines[0] + more[0],
        lines[1] + more[1],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.07, 1.0),
        frameon=False,
    )


def _draw_heatmap(
    fig: Figure,
    ax: Any,
    values: np.ndarray,
    h: RunHistory,
    title: str,
    unit: str,
    marks: bool = False,
) -> None:
    ax.set_title(
        title + " (log scale; black: exactly 0, grey: not measured)", fontsize=9, loc="left"
    )
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size == 0:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        low, high = low / 10, high * 10
    # grey: not measured; black: a zero norm, no gradient reaches the layer at all
    cmap = colormaps["viridis"].with_extremes(bad="#e0e0e0", under="black")
    shown = np.where(np.isfinite(values) & (values > 0), values, np.nan)
    shown = np.where(values == 0, low / 10, shown)
    image = ax.imshow(
        np.ma.masked_invalid(shown),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        norm=LogNorm(vmin=low, vmax=high),
    )
    fig.colorbar(
        image, ax=ax, label=unit, pad=0.01, extend="min" if (values == 0).any() else "neither"
    )
    ax.set_yticks(range(len(h.layers)), h.layers, fontsize=7 if len(h.layers) < 30 else 5)
    if not marks:
        return
    row = {name: i for i, name in enumerate(h.layers)}
    for j, findings in enumerate(h.findings):
        for cause, _severity, layers in findings:
            color = {"vanishing_gradients": VANISHING_COLOR, "exploding_gradients": EXPLODING_COLOR}
            if cause not in color:
                continue
            for layer in layers:
                if layer in row:
                    ax.add_patch(
                        Rectangle(
                            (j - 0.5, row[layer] - 0.5),
                            1,
                            1,
                            fill=False,
                            edgecolor=color[cause],
                            lw=2.2,
                        )
                    )
    bad_i, bad_j = np.nonzero(np.isinf(values))
    ax.scatter(bad_j, bad_i, marker="x", color=NONFINITE_COLOR, s=40, lw=2, zorder=3)


def _draw_update_lines(ax: Any, x: np.ndarray, h: RunHistory) -> None:
    ax.set_title("update ratio ‖Δw‖/‖w‖ per layer (log scale)", fontsize=9, loc="left")
    positive = np.where(np.isfinite(h.update_ratio) & (h.update_ratio > 0), h.update_ratio, np.nan)
    if not np.isfinite(positive).any():
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    ax.axhspan(*HEALTHY_UPDATE_RATIO, color="#59a14f", alpha=0.12, lw=0)
    for i, name in enumerate(h.layers):
        ax.plot(x, positive[i], "o-", ms=2.5, lw=1.2, label=name)
    ax.set_yscale("log")
    ax.set_ylabel("ratio")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def _draw_findings(ax: Any, x: np.ndarray, h: RunHistory, causes: list[str]) -> None:
    ax.set_title("findings of each verdict", fontsize=9, loc="left")
    if not causes:
        ax.text(
            0.5,
            0.5,
            "no findings: every verdict healthy",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_yticks([])
        return
    row = {cause: i for i, cause in enumerate(causes)}
    for j, findings in enumerate(h.findings):
        for cause, severity, _layers in findings:
            primary = cause == h.primary[j]
            ax.scatter(
                j,
                row[cause],
                s=70 if primary else 28,
                color=SEVERITY_COLORS.get(severity, "#8c8c8c"),
                edgecolors="black" if primary else "none",
                linewidths=1.2,
                zorder=3,
            )
    ax.set_yticks(range(len(causes)), causes, fontsize=7)
    ax.set_ylim(-0.6, len(causes) - 0.4)
    ax.grid(axis="y", color="#eee")
    handles = [
        ax.scatter([], [], color=color, s=28, label=severity)
        for severity, color in SEVERITY_COLORS.items()
    ]
    handles.append(
        ax.scatter([], [], color="white", edgecolors="black", s=70, label="primary cause")
    )
    ax.legend(
        handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False
    )


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def write_report(
    run_id: str, verdicts: Sequence[Verdict], run: Any | None, output: str | Path
) -> Path:
    """Draw the run and write `output` (.png or .html); returns the path."""
    history = RunHistory.from_verdicts(run_id, verdicts)
    output = Path(output)
    fig = draw(history, run)
    image = png_bytes(fig)
    if output.suffix.lower() == ".png":
        output.write_bytes(image)
    elif output.suffix.lower() == ".html":
        output.write_text(html_page(history, run, image), encoding="utf-8")
    else:
        raise ReportError(f"{str(output)!r}: write .html or .png")
    return output
