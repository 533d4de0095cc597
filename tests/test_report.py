"""`gradhealth report RUN`: the picture is rendered to PNG and its pixels are read
back: the exploding layer's cell is bright and outlined in red, the vanishing
layer's dark and outlined in blue, a zero gradient black, each finding a
marker of its severity's colour at its checkpoint; the HTML page embeds that
PNG, runs no script and escapes what the run id or a finding says."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from matplotlib import image as mpimg

from gradhealth import report
from gradhealth.cli import main
from gradhealth.v1 import service_pb2
from gradhealth.verdicts import Verdict
from tests.fake_service import FakeService, fake_service, verdict

LAYERS = ["conv", "dense", "dead", "out"]
STEPS = [0, 100, 200, 300, 400, 500]


def history_verdicts(run_id: str = "run-1") -> list:
    made = []
    for j, step in enumerate(STEPS):
        layers = {
            "conv": (1e-9 if j >= 3 else 1e-2, 1e-3),
            "dense": (1e3 if j == 0 else 1e-1, 1e-1 if j == 0 else 1e-3),
            "dead": (0.0, 0.0),
            "out": (1e-1, 1e-3),
        }
        findings = []
        if j == 0:
            findings.append(("exploding_gradients", "critical", ["dense"]))
        if j >= 3:
            findings.append(("vanishing_gradients", "warning", ["conv"]))
        findings.append(("dead_relu", "info", ["dead"]))
        status = "critical" if j == 0 else ("warning" if j >= 3 else "healthy")
        made.append(
            verdict(
                run_id,
                step,
                status,
                findings,
                layers,
                loss=2.3 - 0.2 * j,
                accuracy=0.1 + 0.1 * j,
                reported={"loss": 2.2 - 0.2 * j, "accuracy": 0.12 + 0.1 * j},
            )
        )
    return made


def rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]) / 255


def near(pixel: np.ndarray, color: np.ndarray, tol: float = 0.08) -> bool:
    return bool(np.abs(pixel[:3] - color).max() <= tol)


@pytest.fixture(scope="module")
def drawn():
    verdicts = [Verdict.from_proto(v) for v in reversed(history_verdicts())]  # newest first
    history = report.RunHistory.from_verdicts("run-1", verdicts)
    fig = report.draw(history)
    png = report.png_bytes(fig, dpi=100)
    pixels = mpimg.imread(io.BytesIO(png), format="png")
    return history, fig, png, pixels


def pixel_at(fig, pixels, ax, x: float, y: float) -> np.ndarray:
    px, py = ax.transData.transform((x, y))
    height = pixels.shape[0]
    return pixels[round(float(height - py)), round(float(px))]


def test_history_is_in_step_order_with_every_layer(drawn):
    history, *_ = drawn
    assert history.steps == STEPS
    assert history.layers == LAYERS
    assert history.grad_norm.shape == (4, 6)
    assert history.reported_accuracy[0] == pytest.approx(0.12)


def test_the_heatmap_shows_exploding_bright_in_red_vanishing_dark_in_blue_zero_black(drawn):
    _, fig, _, pixels = drawn
    heat = fig.axes[1]
    dense, conv, dead = LAYERS.index("dense"), LAYERS.index("conv"), LAYERS.index("dead")
    exploding = pixel_at(fig, pixels, heat, 0, dense)
    vanishing = pixel_at(fig, pixels, heat, 4, conv)
    assert exploding[:3].mean() > 0.45 and exploding[1] > 0.8  # viridis' yellow end
    assert vanishing[:3].max() < 0.45  # viridis' dark purple end
    assert near(pixel_at(fig, pixels, heat, 2, dead), np.zeros(3), 0.05)  # exactly zero
    # the outlines sit on the cell edges
    assert near(pixel_at(fig, pixels, heat, -0.49, dense), rgb(report.EXPLODING_COLOR), 0.12)
    assert near(pixel_at(fig, pixels, heat, 3.0, conv + 0.5), rgb(report.VANISHING_COLOR), 0.12)
    # the same layer before it vanished: no outline
    assert not near(pixel_at(fig, pixels, heat, 1.0, conv + 0.5), rgb(report.VANISHING_COLOR))


def test_findings_are_markers_of_their_severity_at_their_checkpoint(drawn):
    _, fig, _, pixels = drawn
    ax = fig.axes[3]
    causes = [t.get_text() for t in ax.get_yticklabels()]
    assert causes == ["dead_relu", "exploding_gradients", "vanishing_gradients"]
    row = {c: i for i, c in enumerate(causes)}
    warning, critical, info = (
        rgb(report.SEVERITY_COLORS[s]) for s in ("warning", "critical", "info")
    )
    assert near(pixel_at(fig, pixels, ax, 4, row["vanishing_gradients"]), warning)
    assert near(pixel_at(fig, pixels, ax, 0, row["exploding_gradients"]), critical)
    assert near(pixel_at(fig, pixels, ax, 1, row["dead_relu"]), info)
    no_marker = pixel_at(fig, pixels, ax, 1, row["exploding_gradients"])
    assert no_marker[:3].min() > 0.9  # the background (a light grid line at most)


def test_loss_and_accuracy_lines_are_drawn(drawn):
    _, fig, _, pixels = drawn
    loss_ax = fig.axes[0]
    blue = rgb("#4e79a7")
    # the loss point of checkpoint 2 (2.3 - 0.4)
    assert near(pixel_at(fig, pixels, loss_ax, 2, 1.9), blue, 0.1)


def test_html_is_one_page_with_the_picture_and_no_script(tmp_path):
    verdicts = history_verdicts("<b>run</b> & co")
    verdicts[-1].findings[0].remedy = "x = x / 255.0 <script>alert(1)</script>"
    run = service_pb2.Run(run_id="<b>run</b> & co", state=service_pb2.RUN_STATE_STOPPED)
    run.end_time.GetCurrentTime()
    out = report.write_report(
        "<b>run</b> & co", [Verdict.from_proto(v) for v in verdicts], run, tmp_path / "r.html"
    )
    page = out.read_text()
    assert "<script" not in page.lower()
    assert "&lt;b&gt;run&lt;/b&gt; &amp; co" in page
    assert "state: stopped at" in page
    assert "what to change: <code>x = x / 255.0 &lt;script&gt;" in page
    assert 'src="http' not in page and "href=" not in page  # nothing fetched
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    picture = mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")
    assert picture.shape[0] > 800 and picture.shape[1] > 800
    assert page.count("<tr>") == 1 + len(STEPS)


def test_nothing_to_draw_is_an_error():
    with pytest.raises(report.ReportError, match="has no verdicts"):
        report.RunHistory.from_verdicts("empty", [])


def test_many_layers_draw_update_ratios_as_a_heatmap_too():
    layers = {f"l{i}": (10.0 ** -(i % 6), 1e-3) for i in range(30)}
    made = [Verdict.from_proto(verdict("deep", s, layers=layers)) for s in range(3)]
    fig = report.draw(report.RunHistory.from_verdicts("deep", made))
    assert len(fig.axes[2].images) == 1  # a heatmap, not 30 lines
    assert len(fig.axes[1].get_yticklabels()) == 30


@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_the_cli_writes_the_report_from_a_server(tmp_path, capsys, suffix):
    with fake_service(FakeService(history_verdicts("cli-run-done"))) as server:
        out = tmp_path / f"report{suffix}"
        code = main(["report", "cli-run-done", "-o", str(out), "--server", server.target])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out == f"wrote {out} (6 verdicts of run cli-run-done)\n"
    data = out.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG")
    else:
        assert b"state: finished" in data


def test_a_bad_output_suffix_is_one_line(capsys):
    assert main(["report", "r", "-o", "r.pdf", "--server", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err == "gradhealth: error: --output 'r.pdf': write .html or .png\n"
