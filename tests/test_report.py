"""The evaluation report (report.md / report.html) as a reader sees it: images that exist,
sharp plots, legible labels, the best value per column marked, empty columns explained.

Built from hand-made evaluations (no model), so every value is known in advance."""

from __future__ import annotations

import base64
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text

from pluralign.data.records import Belief
from pluralign.eval import report
from pluralign.eval.metrics import MetricResult
from pluralign.eval.predictions import ModelEvaluation, PromptGroup, PromptPrediction
from pluralign.eval.report_table import Best, best_rows

BELIEFS = (Belief(1, "Strongly oppose"), Belief(2, "Somewhat oppose"),
           Belief(4, "Somewhat support, with a description far too long for a tick label"))
TARGETS = ([0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8])
LINES = {name: MetricResult(name, value, 3, value - 0.01, value + 0.01)
         for name, value in (("majority", 0.42), ("uniform", 0.300), ("noise_0.1", 0.305),
                             ("noise_0.05", 0.31))}


def result(name: str, value: float, n: int = 3, per_item: list[float] | None = None
           ) -> MetricResult:
    if n == 0:  # what jsd_where_read gives when no prompt had a distribution
        return MetricResult(name, math.nan, 0, math.nan, math.nan, {}, np.full(3, np.nan))
    return MetricResult(name, value, n, value - 0.05, value + 0.05, {},
                        None if per_item is None else np.asarray(per_item))


def evaluation(label: str, jsd: float, cbc: float | None, *, sampled: bool = True
               ) -> ModelEvaluation:
    """A model with three questions, a fixed JSD (per question: jsd ± 0.05) and CBC."""
    groups = [PromptGroup(f"Question {i}?", "g", None, BELIEFS, t) for i, t in enumerate(TARGETS)]
    predictions = [PromptPrediction(g, [1 / 3] * 3, sampled=[0.5, 0.25, 0.25] if sampled else None)
                   for g in groups]
    metrics = {"jsd": result("jsd", jsd, per_item=[jsd - 0.05, jsd, jsd + 0.05]),
               "jsd_sampled": result("jsd_sampled", jsd + 0.01, n=3 if sampled else 0)}
    if cbc is not None:
        metrics["cbc"] = result("cbc", cbc)
    return ModelEvaluation(label, f"runs/{label}/final", label, predictions, metrics)


def table(markdown: str) -> list[dict[str, str]]:
    """The methods table of report.md as one {header: cell} dict per model."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    header = [c.strip() for c in lines[start].strip("| ").split(" | ")]
    rows = []
    for line in lines[start + 1:]:
        cells = [c.strip() for c in line.strip("| ").split(" | ")]
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


# ------------------------------------------------------------------ files


def test_every_image_the_html_shows_is_a_png_next_to_the_report(tmp_path):
    evaluations = [evaluation("sft", 0.2, 0.9), evaluation("gdpo", 0.1, 0.5)]
    evaluations[0].curves = [{"step": s, "eval_belief/jsd": 0.3 / s} for s in (1, 2, 3)]
    report.write_report(tmp_path, evaluations, LINES)
    page = (tmp_path / "report.html").read_text()
    images = [dict(re.findall(r'([\w-]+)="([^"]*)"', tag)) for tag in re.findall(r"<img ([^>]*)>",
                                                                              page)]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("plots/*.png"))
    assert files == ["plots/beliefs_0.png", "plots/beliefs_1.png", "plots/curves_0.png",
                     "plots/jsd.png"]
    assert sorted(image["data-file"] for image in images) == files
    for image in images:
        source = image["src"]
        if source.startswith("data:image/png;base64,"):  # embedded: the very bytes of the file
            embedded = base64.b64decode(source.removeprefix("data:image/png;base64,"))
            assert embedded == (tmp_path / image["data-file"]).read_bytes()
        else:
            assert (tmp_path / source).is_file()
    markdown = (tmp_path / "report.md").read_text()
    assert sorted(re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown)) == files


def png_size_and_dpi(path: Path) -> tuple[int, int, float]:
    """(width, height, dpi) from the PNG's IHDR and pHYs chunks."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    at = data.index(b"pHYs") + 4
    per_metre, _, unit = struct.unpack(">IIB", data[at:at + 9])
    assert unit == 1  # pixels per metre
    return width, height, per_metre * 0.0254


def test_plots_are_saved_at_150_dpi(tmp_path):
    evaluations = [evaluation("sft", 0.2, 0.9), evaluation("gdpo", 0.1, 0.5)]
    report.write_report(tmp_path, evaluations, LINES)
    for path in (tmp_path / "plots").glob("*.png"):
        assert round(png_size_and_dpi(path)[2]) >= 150, path.name
    inches = report.jsd_figure(evaluations, LINES).get_size_inches()
    width, height, _ = png_size_and_dpi(tmp_path / "plots" / "jsd.png")
    assert (width, height) == (round(inches[0] * 150), round(inches[1] * 150))


# ------------------------------------------------------------------ methods table


def test_the_best_value_of_each_metric_column_is_bold_by_its_direction(tmp_path):
    evaluations = [evaluation("sft", 0.2, 0.9), evaluation("gdpo", 0.1, 0.5),
                   evaluation("dpo", 0.3, None)]
    report.write_report(tmp_path, evaluations, LINES)
    sft, gdpo, dpo = table((tmp_path / "report.md").read_text())
    # JSD: lower is better, so gdpo's 0.100; CBC: higher is better, so sft's 0.900.
    assert gdpo["JSD ↓"] == "**0.100 [0.050, 0.150] (n=3)**"
    assert not sft["JSD ↓"].startswith("**") and not dpo["JSD ↓"].startswith("**")
    assert sft["CBC ↑"] == "**0.900 [0.850, 0.950] (n=3)**"
    assert gdpo["CBC ↑"] == "0.500 [0.450, 0.550] (n=3)" and dpo["CBC ↑"] == "–"
    assert gdpo["JSD sampled ↓"].startswith("**0.110")
    page = (tmp_path / "report.html").read_text()
    assert "<td><strong>0.100<br><span class='ci'>[0.050, 0.150] (n=3)</span></strong></td>" in page
    assert page.count("<strong>") == 3
    assert "Bold: the best value of each metric column" in page


def test_one_model_or_an_all_way_tie_marks_nothing(tmp_path):
    report.write_report(tmp_path, [evaluation("sft", 0.2, 0.9)], LINES)
    markdown = (tmp_path / "report.md").read_text()
    assert "**" not in markdown and "Bold:" not in markdown
    ties = [result("cbc", 0.5), result("cbc", 0.5)]
    assert best_rows(ties, lower_is_better=False) == set()
    assert best_rows([result("x", 0.5), result("x", 0.1)], lower_is_better=None) == set()
    # Equal to 3 decimals (as shown) is a tie; an empty cell is never best.
    assert best_rows([result("jsd", 0.1001), result("jsd", 0.1004), result("jsd", 0.2),
                      None, result("jsd", 0.0, n=0)], lower_is_better=True) == {0, 1}
    header, row = report._methods_table([evaluation("a", 0.1, 0.4), evaluation("b", 0.2, 0.8)])[:2]
    assert isinstance(row[header.index("JSD ↓")], Best)
    assert not isinstance(row[header.index("CBC ↑")], Best)


def test_a_column_empty_for_every_model_is_left_out_and_named_in_a_note(tmp_path):
    evaluations = [evaluation("sft", 0.2, 0.9, sampled=False),
                   evaluation("gdpo", 0.1, None, sampled=False)]
    report.write_report(tmp_path, evaluations, LINES)
    markdown = (tmp_path / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| model |"))
    # CBC has a value for one model and stays; JSD sampled and the margins have none.
    assert header == "| model | method | JSD ↓ | CBC ↑ | judge failures |"
    note = ("Left out as empty for every model — JSD sampled: no belief samples (belief_samples "
            "= 0, or no sample held a belief marker); BPC, RS, marker starts: no generations "
            "(n_samples = 0); margin majority, margin lowest minority, margin others: no reward "
            "margins (no ref_model given).")
    assert note in markdown.splitlines()
    page = (tmp_path / "report.html").read_text()
    assert "<th>JSD sampled ↓</th>" not in page and f"<p>{note}</p>" in page
    assert "'JSD sampled'" not in markdown  # the intro does not explain a column not shown


def test_generation_columns_empty_for_want_of_generations_share_one_reason(tmp_path):
    evaluations = [evaluation("sft", 0.2, None), evaluation("gdpo", 0.1, None)]
    for e in evaluations:
        e.metrics.update(bpc=result("bpc", 0.0, n=0), rs=result("rs", 0.0, n=0))
    report.write_report(tmp_path, evaluations, LINES)
    markdown = (tmp_path / "report.md").read_text()
    assert "— CBC, BPC, RS, marker starts: no generations (n_samples = 0); margin" in markdown
    assert "JSD sampled ↓" in markdown  # it has values here


# ------------------------------------------------------------------ plots


def test_the_question_axis_has_integer_ticks(captured, tmp_path):
    report.plot_jsd_per_question([evaluation("sft", 0.2, 0.9)], LINES, tmp_path / "jsd.png")
    ax = captured[0].axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == [1.0, 2.0, 3.0]  # the three questions, counted from 1
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]


def test_reference_line_labels_are_legible_and_do_not_overlap(captured, tmp_path):
    report.plot_jsd_per_question([evaluation("sft", 0.2, 0.9)], LINES, tmp_path / "jsd.png")
    fig = captured[0]
    labels = {t.get_text(): t for t in fig.axes[0].texts}
    assert set(labels) == {"majority 0.420", "uniform 0.300", "noise_0.1 0.305",
                           "noise_0.05 0.310"}
    assert all(t.get_fontsize() >= 8 for t in labels.values())
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    # The text alone: an annotation's own extent includes its connector line.
    boxes = [Text.get_window_extent(t, renderer) for t in labels.values()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    # In the right margin, outside the plotted area.
    assert all(box.x0 > fig.axes[0].get_window_extent(renderer).x1 for box in boxes)


def test_spread_labels_keeps_a_gap_and_stays_near_the_values():
    assert report.spread_labels([0.3, 0.31, 0.305], 0.02, 1.0) == pytest.approx([0.3, 0.34, 0.32])
    assert report.spread_labels([0.1, 0.5], 0.02, 1.0) == [0.1, 0.5]  # far apart: unmoved
    assert report.spread_labels([0.99, 0.98], 0.1, 1.0) == pytest.approx([1.0, 0.9])  # not above


def test_belief_bars_name_the_beliefs_and_label_their_axes(captured, tmp_path):
    report.plot_beliefs(evaluation("gdpo", 0.1, 0.5), tmp_path / "b.png", questions=2)
    fig = captured[0]
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:2] == ["1: Strongly oppose", "2: Somewhat oppose"]
    assert labels[2] == "4: Somewhat support,\nwith a description…"
    assert all(len(line) <= report.LABEL_CHARS for label in labels for line in label.split("\n"))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("probability", "belief")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "target p*", "model (read)", "model (sampled)"]
    heights = [round(bar.get_width(), 3) for bar in ax.patches]
    assert heights == [0.2, 0.3, 0.5, 0.333, 0.333, 0.333, 0.5, 0.25, 0.25]


def test_curve_legends_show_human_names(captured, tmp_path):
    records = [{"step": s, "eval_belief/jsd": 0.3 / s, "heldout_belief/jsd": 0.35 / s,
                "probe_belief/jsd": 0.4 / s, "eval_rewards/margins_majority": 0.1 * s}
               for s in (1, 2)]
    e = evaluation("gdpo", 0.1, 0.5)
    e.curves = records
    report.plot_curves(e, tmp_path / "c.png")
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in captured[0].axes]
    assert legends == [["belief JSD (validation)", "belief JSD (held-out eval file)",
                        "JSD (probe belief)"], ["majority"]]
    assert [ax.get_ylabel() for ax in captured[0].axes] == ["JSD to p*", "reward margin"]
    assert report.curve_name("rewards/margins_others") == "others"
    assert report.curve_name("train/grad_norm") == "grad norm (train)"
    assert report.curve_name("eval_belief/kl_to_ref") == "KL to ref (eval belief)"


def test_only_metric_cells_put_their_interval_on_a_line_of_its_own():
    page = report.render_html([("table", [["metric", "response"],
                                          ["0.100 [0.050, 0.150] (n=3)", "I'd say [1] (n=3)"]])])
    assert "<td>0.100<br><span class='ci'>[0.050, 0.150] (n=3)</span></td>" in page
    assert "<td>I&#x27;d say [1] (n=3)</td>" in page
