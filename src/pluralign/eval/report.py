"""The evaluation report: ``report.md`` (plots as PNG files) and ``report.html`` (plots embedded).

Contents: the methods side by side (every metric with its interval, the best
value per column in bold; the table itself is :mod:`pluralign.eval.report_table`),
the reference lines, JSD per question, reward margins, and per model its
target vs predicted belief distributions for sample questions, training curves
of its run (JSD over training, reward margins of majority / lowest-minority /
other pairs as in the GDPO paper's Figures 2 and 3) and a few sample generations.
The report is built as a list of blocks rendered twice
(:mod:`pluralign.eval.report_render`), so the two files always say the same
thing. Every plot is built by a ``*_figure`` function (inspectable without a
file) and saved at :data:`DPI`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pluralign.eval.report_groups import group_blocks
from pluralign.eval.report_render import DPI, FONT, Block, render_html, render_markdown
from pluralign.eval.report_render import pyplot as _pyplot
from pluralign.eval.report_render import save_figure as _save
from pluralign.eval.report_table import (
    COLUMNS,
    MARGIN_PARTS,
    Column,
    has_value,
    left_out_note,
    methods_table,
    metric_columns,
)
from pluralign.eval.report_table import fmt as _fmt

if TYPE_CHECKING:
    from pluralign.eval.by_group import GroupBreakdown
    from pluralign.eval.metrics import MetricResult
    from pluralign.eval.predictions import ModelEvaluation, PromptPrediction

__all__ = ["COLUMNS", "CURVE_NAMES", "CURVE_PANELS", "DPI", "Column", "beliefs_figure",
           "build_blocks", "curve_name", "curve_panels", "curves_figure", "jsd_figure",
           "metric_columns", "plot_beliefs", "plot_curves", "plot_jsd_per_question",
           "plot_margins", "render_html", "render_markdown", "spread_labels", "write_report"]

#: Colours of the belief bars: the target stays grey in every panel, the model's readings coloured.
BAR_COLOURS = {"target p*": "0.55", "model (read)": "C0", "model (sampled)": "C1"}
#: Width (in) of a panel: two side by side fill the page's 1200 px at :data:`DPI`, so the
#: plots are shown unscaled and FONT stays FONT.
PANEL_WIDTH = 4.0
#: Characters of a line of a belief panel's title (the question): about the panel's width.
TITLE_CHARS = 32
#: Characters of a line of a belief's tick label (two lines at most, then cut with "…").
LABEL_CHARS = 22

#: Runs logged before the three-way split have only this union of the two minority parts.
LEGACY_MINORITY = ("minority", "minority (all non-majority)")


def _margin_names(prefix: str) -> dict[str, str]:
    return {f"{prefix}{key}": label for key, label in (*MARGIN_PARTS, LEGACY_MINORITY)}


#: Human names of metrics.jsonl keys, as the training curves' legends show them; a key not
#: here is shown as :func:`curve_name` reads it. ``eval_belief`` is the trainer's eval set
#: (the validation split where there is one), ``heldout_belief`` the eval file beside it.
CURVE_NAMES: dict[str, str] = {
    "eval_belief/jsd": "belief JSD (validation)",
    "heldout_belief/jsd": "belief JSD (held-out eval file)",
    "eval_belief/mass": "belief-token mass (validation)",
    "heldout_belief/mass": "belief-token mass (held-out eval file)",
    "loss": "training loss",
    "eval_loss": "validation loss",
    **_margin_names("eval_rewards/margins_"),
    **_margin_names("rewards/margins_"),
}

#: Words that stay upper-case when a key is made readable.
_ACRONYMS = {"jsd": "JSD", "kl": "KL", "cbc": "CBC", "bpc": "BPC", "rs": "RS", "kto": "KTO"}


class CurvePanel(NamedTuple):
    """A panel of training curves: the keys it draws, in order, then any other logged key
    that starts with ``prefix`` and ends with ``suffix`` (a new group or eval set)."""

    title: str
    ylabel: str
    keys: tuple[str, ...]
    prefix: str
    suffix: str


#: metrics.jsonl curves, one panel each (see :func:`curve_panels` for the legacy minority key).
CURVE_PANELS = (
    CurvePanel("JSD to p* over training", "JSD to p*",
               ("eval_belief/jsd", "heldout_belief/jsd"), "", "_belief/jsd"),
    CurvePanel("reward margins, eval pairs", "reward margin",
               tuple(_margin_names("eval_rewards/margins_")), "eval_rewards/margins_", ""),
    CurvePanel("reward margins, training batches", "reward margin",
               tuple(_margin_names("rewards/margins_")), "rewards/margins_", ""),
)

def curve_name(key: str) -> str:
    """The legend name of a metrics.jsonl key: :data:`CURVE_NAMES`, else the key made
    readable (``foo_belief/kl_x`` -> ``KL x (foo belief)``)."""
    if key in CURVE_NAMES:
        return CURVE_NAMES[key]
    prefix, _, name = key.rpartition("/")
    words = " ".join(_ACRONYMS.get(w, w) for w in name.split("_") if w) or key
    return f"{words} ({prefix.replace('_', ' ')})" if prefix else words


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    # Questions and steps are counted: a tick at question 1.5 names nothing.
    axis.set_major_locator(MaxNLocator(integer=True))


def _shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with "…", at a word end if one is near."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[:width - 1]
    if text[width - 1] != " " and " " in cut[width // 2:]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


def belief_label(class_id: int, description: str) -> str:
    """A belief's tick label: its class id and description, shortened and on two lines at most
    (a wide label would squeeze the bars to nothing)."""
    if not description.strip():
        return str(class_id)
    return textwrap.fill(_shorten(f"{class_id}: {description}", 2 * LABEL_CHARS - 2), LABEL_CHARS)


def _belief_bars(ax: Any, p: PromptPrediction) -> None:
    series = [("target p*", p.group.target)]
    if p.predicted is not None:  # an API baseline without any belief sample has none
        series.append(("model (read)", p.predicted))
    if p.sampled is not None:
        series.append(("model (sampled)", p.sampled))
    height = 0.8 / len(series)
    rows = range(len(p.group.beliefs))
    for i, (name, values) in enumerate(series):
        ax.barh([y + (i - (len(series) - 1) / 2) * height for y in rows], values, height,
                label=name, color=BAR_COLOURS[name])
    # Horizontal bars: descriptions read as written on the y axis instead of rotated.
    ax.set_yticks(list(rows), [belief_label(b.class_id, b.description) for b in p.group.beliefs],
                  fontsize=FONT)
    ax.invert_yaxis()  # the first belief on top, in reading order
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])  # a narrow panel: few, short ticks
    ax.set_xlabel("probability", fontsize=FONT)
    ax.set_ylabel("belief", fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    # Three lines at most: a long question neither runs into the next panel nor grows the figure.
    ax.set_title(textwrap.fill(_shorten(p.group.prompt, 3 * TITLE_CHARS - 4), TITLE_CHARS),
                 fontsize=FONT + 1)


def beliefs_figure(evaluation: ModelEvaluation, questions: int) -> Any:
    """Target vs the model's read (and sampled) distribution for the first questions."""
    plt = _pyplot()
    preds = evaluation.predictions[:max(1, questions)]
    cols = min(2, len(preds))
    rows = math.ceil(len(preds) / cols)
    beliefs = max(len(p.group.beliefs) for p in preds)
    fig, axes = plt.subplots(rows, cols, squeeze=False, layout="constrained",
                             figsize=(PANEL_WIDTH * cols, rows * (1.3 + 0.4 * beliefs)))
    for ax, p in zip(axes.flat, preds, strict=False):  # a 2-column grid may have a spare cell
        _belief_bars(ax, p)
    for ax in axes.flat[len(preds):]:
        ax.remove()
    # One legend for the figure, from the panel that shows every kind of bar.
    fullest = max(fig.axes, key=lambda ax: len(ax.get_legend_handles_labels()[1]))
    fig.legend(*fullest.get_legend_handles_labels(), loc="outside lower center",
               ncols=3, fontsize=FONT, frameon=False)
    fig.suptitle(f"{evaluation.label}: belief distribution per question", fontsize=FONT + 2)
    return fig


def plot_beliefs(evaluation: ModelEvaluation, path: Path, questions: int) -> Path | None:
    """:func:`beliefs_figure` saved to ``path``; None for an evaluation without prompts."""
    if not evaluation.predictions:
        return None
    return _save(beliefs_figure(evaluation, questions), path)


def spread_labels(values: Sequence[float], gap: float, top: float) -> list[float]:
    """Heights for labels of ``values`` (any order): at least ``gap`` apart, each as near its
    value as that allows and none above ``top``; in the order of ``values``."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ys = [float(values[i]) for i in order]
    for k in range(1, len(ys)):  # push each label up, clear of the one below it
        ys[k] = max(ys[k], ys[k - 1] + gap)
    if ys and ys[-1] > top:  # then down from the top, where the upward pass overshot
        ys[-1] = top
        for k in range(len(ys) - 2, -1, -1):
            ys[k] = min(ys[k], ys[k + 1] - gap)
    heights = [0.0] * len(values)
    for k, i in enumerate(order):
        heights[i] = ys[k]
    return heights


def _reference_labels(ax: Any, lines: dict[str, MetricResult]) -> None:
    """Dashed reference lines, named in the right margin at heights that do not overlap."""
    shown = {name: r.value for name, r in lines.items() if math.isfinite(r.value)}
    for value in shown.values():
        ax.axhline(value, ls="--", lw=0.8, color="0.6", zorder=1)
    low, high = ax.get_ylim()
    # A label line (FONT pt with leading) as a share of the axes' laid-out height.
    ax.figure.draw_without_rendering()
    height = ax.get_position().height * ax.figure.get_figheight()
    gap = (high - low) * FONT * 1.4 / 72 / height
    heights = spread_labels(list(shown.values()), gap, high)
    for (name, value), y in zip(shown.items(), heights, strict=True):
        ax.annotate(f"{name} {value:.3f}", xy=(1, value), xytext=(1.03, y),
                    xycoords=("axes fraction", "data"), textcoords=("axes fraction", "data"),
                    fontsize=FONT, color="0.25", va="center", annotation_clip=False,
                    # From the label's left middle: a line leaving its bottom would cross
                    # the label below.
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6,
                                "relpos": (0, 0.5), "shrinkA": 1, "shrinkB": 0})


def jsd_figure(evaluations: Sequence[ModelEvaluation], lines: dict[str, MetricResult]) -> Any:
    """JSD of every question per model, with the reference lines' mean JSD as dashed lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    questions = 0
    for e in evaluations:
        # The metric's own per-prompt values: NaN (a gap) where a prompt had no distribution.
        result = e.metrics.get("jsd")
        values = [] if result is None or result.per_item is None else list(result.per_item)
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=4, label=e.label)
        questions = max(questions, len(values))
    _integer_ticks(ax.xaxis)
    ax.set_xlim(0.5, max(questions, 1) + 0.5)  # questions count from 1: no tick at 0
    _reference_labels(ax, lines)
    ax.set_xlabel("question (in test-file order)", fontsize=FONT + 1)
    ax.set_ylabel("JSD to p*", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    if evaluations:
        fig.legend(loc="outside upper left", ncols=min(5, len(evaluations)), fontsize=FONT,
                   frameon=False, title="model (dashed: reference lines)",
                   title_fontsize=FONT)
    return fig


def plot_jsd_per_question(evaluations: Sequence[ModelEvaluation],
                          lines: dict[str, MetricResult], path: Path) -> Path:
    """:func:`jsd_figure` saved to ``path``."""
    return _save(jsd_figure(evaluations, lines), path)


def plot_margins(evaluations: Sequence[ModelEvaluation], path: Path) -> Path | None:
    """Mean reward margin of majority, lowest-minority and other pairs per model (95% CIs)."""
    with_margins = [e for e in evaluations if e.margins is not None]
    if not with_margins:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    width = 0.8 / len(MARGIN_PARTS)
    for i, e in enumerate(with_margins):
        for j, (key, label) in enumerate(MARGIN_PARTS):
            r = e.margins.summary.get(key)
            if r is None or r.n == 0:
                continue
            err = [[r.value - r.ci_low], [r.ci_high - r.value]]
            ax.bar(i + (j - (len(MARGIN_PARTS) - 1) / 2) * width, r.value, width, yerr=err,
                   color=f"C{j}", label=label if i == 0 else None)
    ax.set_xticks(range(len(with_margins)), [e.label for e in with_margins])
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("model", fontsize=FONT + 1)
    ax.set_ylabel("reward margin", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.legend(fontsize=FONT, title="pairs", title_fontsize=FONT)
    return _save(fig, path)


Series = tuple[str, list[tuple[int, float]]]


def _panel_keys(panel: CurvePanel, logged: set[str]) -> list[str]:
    keys = [k for k in panel.keys if k in logged]
    others = sorted(k for k in logged - set(panel.keys)
                    if k.startswith(panel.prefix) and k.endswith(panel.suffix))
    if any(k.endswith(("_lowest_minority", "_others")) for k in keys):
        keys = [k for k in keys if CURVE_NAMES.get(k) != LEGACY_MINORITY[1]]
    return keys + others


def curve_panels(records: Sequence[dict[str, Any]]) -> list[tuple[str, list[Series]]]:
    """The panels of a run's training curves: (title, [(name, [(step, value), ...])]).

    Only series the run logged appear, named by :func:`curve_name`, and only
    panels with a series. The legacy ``minority`` union is drawn only for runs
    logged before the three-way split (no lowest-minority or others key), so a
    new run shows the paper's groups and nothing twice.
    """
    logged = {k for r in records for k in r if isinstance(r.get(k), (int, float))}
    panels = []
    for panel in CURVE_PANELS:
        series = [(curve_name(key), [(r["step"], r[key]) for r in records
                                     if key in r and "step" in r])
                  for key in _panel_keys(panel, logged)]
        if series:
            panels.append((panel.title, series))
    return panels


def curves_figure(evaluation: ModelEvaluation) -> Any | None:
    """Training curves of a run (JSD over training, reward margins by group); None without."""
    panels = curve_panels(evaluation.curves or [])
    if not panels:
        return None
    ylabels = {p.title: p.ylabel for p in CURVE_PANELS}
    plt = _pyplot()
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_WIDTH * cols, 3.0 * rows),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.remove()
    for ax, (title, series) in zip(axes.flat, panels, strict=False):
        for label, points in series:
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=label)
        if title.startswith("reward margins"):
            ax.axhline(0, color="black", lw=0.6)
        _integer_ticks(ax.xaxis)
        ax.set_title(title, fontsize=FONT + 1)
        ax.set_xlabel("training step", fontsize=FONT)
        ax.set_ylabel(ylabels[title], fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.legend(fontsize=FONT)
    fig.suptitle(f"{evaluation.label}: training", fontsize=FONT + 2)
    return fig


def plot_curves(evaluation: ModelEvaluation, path: Path) -> Path | None:
    """:func:`curves_figure` saved to ``path``; None for a model without logged curves."""
    fig = curves_figure(evaluation)
    return None if fig is None else _save(fig, path)


def _samples(evaluation: ModelEvaluation, questions: int = 2, per_question: int = 2
             ) -> list[list[str]]:
    rows = [["question", "class", "description", "response", "verdict"]]
    for p in evaluation.predictions[:questions]:
        for i, g in enumerate(p.generations[:per_question]):
            verdict = p.verdicts[i] if i < len(p.verdicts) else "–"
            rows.append([p.group.prompt, str(g.class_id), g.description or "–",
                         g.response[:200], verdict])
    return rows


def _methods_table(evaluations: Sequence[ModelEvaluation]) -> list[list[str]]:
    return methods_table(evaluations)


def _methods_blocks(evaluations: Sequence[ModelEvaluation]) -> list[Block]:
    header = _methods_table(evaluations)
    blocks: list[Block] = [("h2", "Methods side by side"), ("table", header)]
    if len(evaluations) > 1:
        blocks.append(("p", "Bold: the best value of each metric column (↓ lower is better, "
                            "↑ higher is better); ties are all bold."))
    note = left_out_note(evaluations)
    if note is not None:
        blocks.append(("p", note))
    return blocks


def build_blocks(evaluations: Sequence[ModelEvaluation], lines: dict[str, MetricResult],
                 plots_dir: Path, plot_questions: int, by_group: GroupBreakdown | None = None
                 ) -> list[Block]:
    """The report as (kind, content) blocks: heading, text, table, image; a file of several
    groups gets a section per group after the JSD per question."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    blocks: list[Block] = [("h1", "pluralign evaluation")]
    prompts = len(evaluations[0].predictions) if evaluations else 0
    sampled = any(has_value(e.metrics.get("jsd_sampled")) for e in evaluations)
    blocks.append(("p", f"{prompts} prompts; intervals are 95% (bootstrap for means, Wilson for "
                        "shares). JSD is read from one forward pass" + (
                            "; 'JSD sampled' from samples of the first generated token."
                            if sampled else ".")))
    blocks += _methods_blocks(evaluations)
    blocks += [("h2", "Reference lines (JSD of trivial predictors)"),
               ("table", [["line", "JSD"], *([k, _fmt(v)] for k, v in lines.items())])]
    if evaluations:
        blocks += [("h2", "JSD per question"),
                   ("img", plot_jsd_per_question(evaluations, lines, plots_dir / "jsd.png"))]
    if by_group is not None:
        blocks += group_blocks(by_group, plots_dir / "jsd_per_group.png")
    margins = plot_margins(evaluations, plots_dir / "margins.png")
    if margins is not None:
        blocks += [("h2", "Reward margins (majority, lowest-minority and other pairs)"),
                   ("p", "A pair is majority when its chosen belief has the prompt's highest "
                         "target share, lowest minority when it has the lowest share, others "
                         "otherwise (the GDPO paper's Figures 2 and 3)."),
                   ("img", margins)]
    for i, e in enumerate(evaluations):
        blocks += [("h2", f"{e.label}"), ("p", f"model: {e.model}")]
        for plot in (plot_beliefs(e, plots_dir / f"beliefs_{i}.png", plot_questions),
                     plot_curves(e, plots_dir / f"curves_{i}.png")):
            if plot is not None:
                blocks.append(("img", plot))
        samples = _samples(e)
        blocks += [("h3", "Sample generations"),
                   ("table", samples) if len(samples) > 1 else ("p", "None (n_samples = 0).")]
    return blocks


def write_report(out: Path, evaluations: Sequence[ModelEvaluation],
                 lines: dict[str, MetricResult], *, plot_questions: int = 4,
                 by_group: GroupBreakdown | None = None) -> dict[str, Path]:
    """Write ``report.md`` (+ ``plots/*.png``) and the self-contained ``report.html``."""
    out = Path(out)
    blocks = build_blocks(evaluations, lines, out / "plots", plot_questions, by_group)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(render_markdown(blocks, out), encoding="utf-8")
    html_path.write_text(render_html(blocks, out), encoding="utf-8")
    return {"report_md": md_path, "report_html": html_path}
