"""The evaluation report: ``report.md`` (plots as PNG files) and ``report.html`` (plots embedded).

Contents: the methods side by side (every metric with its interval), the
reference lines, predicted vs target belief distributions for sample
questions, JSD per question, reward margins, training curves of runs (JSD over
training, reward margins of majority / lowest-minority / other pairs as in the
GDPO paper's Figures 2 and 3), and a few sample generations.
The report is built as a list of blocks rendered twice, so the two files
always say the same thing.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pluralign.data.records import MARGIN_GROUPS
from pluralign.registry import METRICS

if TYPE_CHECKING:
    from pluralign.eval.metrics import MetricResult
    from pluralign.eval.predictions import ModelEvaluation

#: Columns of the methods table: (metric key, header). Other registered metrics (plugins')
#: that a model was scored with follow them, headed by their name (see :func:`metric_columns`).
COLUMNS = (("jsd", "JSD ↓"), ("jsd_sampled", "JSD sampled ↓"), ("cbc", "CBC ↑"),
           ("bpc", "BPC ↑"), ("rs", "RS ↑"), ("marker_start", "marker starts ↓"))

#: Margin groups drawn in the report, in the paper's order: (summary / metrics key, label).
MARGIN_PARTS = tuple((group, group.replace("_", " ")) for group in MARGIN_GROUPS)
#: Runs logged before the three-way split have only this union of the two minority parts.
LEGACY_MINORITY = ("minority", "minority (all non-majority)")


def _margin_curves(prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{key}", label) for key, label in (*MARGIN_PARTS, LEGACY_MINORITY))


#: metrics.jsonl curves, one panel each: (title, ((key, label), ...)); a panel draws the keys
#: a run logged (see :func:`curve_panels` for the legacy minority key).
CURVE_PANELS = (
    ("JSD to p* over training", (("eval_belief/jsd", "eval_belief/jsd"),
                                 ("heldout_belief/jsd", "heldout_belief/jsd"))),
    ("reward margins, eval pairs", _margin_curves("eval_rewards/margins_")),
    ("reward margins, training batches", _margin_curves("rewards/margins_")),
)

Block = tuple[str, Any]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _fmt(result: MetricResult | None) -> str:
    if result is None or result.n == 0 or not math.isfinite(result.value):
        return "–"
    return f"{result.value:.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}] (n={result.n})"


def metric_columns(evaluations: Sequence[ModelEvaluation]) -> list[tuple[str, str]]:
    """:data:`COLUMNS`, then every other registered metric some evaluation holds.

    Only registered names: diagnostics kept in eval.json alone (the marker
    mass after descriptions) stay out of the table, as before plugins.
    """
    shown = {key for key, _ in COLUMNS}
    extra = [(name, name) for name in METRICS.registration_order()
             if name not in shown and any(name in e.metrics for e in evaluations)]
    return [*COLUMNS, *extra]


def _methods_table(evaluations: Sequence[ModelEvaluation]) -> list[list[str]]:
    columns = metric_columns(evaluations)
    header = ["model", "method", *(h for _, h in columns),
              *(f"margin {label}" for _, label in MARGIN_PARTS), "judge failures"]
    rows = [header]
    for e in evaluations:
        margins = e.margins.summary if e.margins is not None else {}
        failures = e.judge_failures()
        rows.append([
            e.label, e.method or "–", *(_fmt(e.metrics.get(k)) for k, _ in columns),
            *(_fmt(margins.get(key)) for key, _ in MARGIN_PARTS),
            f"{failures['parse_failure']} parse, {failures['api_error']} api",
        ])
    return rows


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def plot_beliefs(evaluation: ModelEvaluation, path: Path, questions: int) -> Path:
    """Bar charts: target vs predicted (and sampled) distribution for the first questions."""
    plt = _pyplot()
    preds = evaluation.predictions[:max(1, questions)]
    fig, axes = plt.subplots(1, len(preds), figsize=(3.6 * len(preds), 3.0), squeeze=False)
    legend_ax, most = axes[0][0], 0
    for ax, p in zip(axes[0], preds, strict=True):
        x = list(range(len(p.group.beliefs)))
        series = [("target", p.group.target)]
        if p.predicted is not None:  # an API baseline without any belief sample has none
            series.append(("predicted", p.predicted))
        if p.sampled is not None:
            series.append(("sampled", p.sampled))
        if len(series) > most:  # the legend goes where every kind of bar appears
            legend_ax, most = ax, len(series)
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series):
            ax.bar([v + (i - (len(series) - 1) / 2) * width for v in x], values, width,
                   label=name)
        ax.set_xticks(x, [str(b.class_id) for b in p.group.beliefs])
        ax.set_title(p.group.prompt[:40] + ("…" if len(p.group.prompt) > 40 else ""), fontsize=8)
        ax.set_ylim(0, 1)
    legend_ax.legend(fontsize=7)
    fig.suptitle(f"{evaluation.label}: belief distribution", fontsize=9)
    return _save(fig, path)


def plot_jsd_per_question(evaluations: Sequence[ModelEvaluation],
                          lines: dict[str, MetricResult], path: Path) -> Path:
    """JSD of every question per model, with the reference lines' mean JSD as dashed lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for e in evaluations:
        # The metric's own per-prompt values: NaN (a gap) where a prompt had no distribution.
        values = e.metrics["jsd"].per_item
        ax.plot(range(len(values)), values, marker="o", ms=3, label=e.label)
    for name, result in lines.items():
        ax.axhline(result.value, ls="--", lw=0.8, color="grey")
        ax.text(0, result.value, name, fontsize=6, color="grey", va="bottom")
    ax.set_xlabel("question")
    ax.set_ylabel("JSD")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_margins(evaluations: Sequence[ModelEvaluation], path: Path) -> Path | None:
    """Mean reward margin of majority, lowest-minority and other pairs per model (95% CIs)."""
    with_margins = [e for e in evaluations if e.margins is not None]
    if not with_margins:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
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
    ax.set_ylabel("reward margin")
    ax.legend(fontsize=7)
    return _save(fig, path)


Series = tuple[str, list[tuple[int, float]]]


def curve_panels(records: Sequence[dict[str, Any]]) -> list[tuple[str, list[Series]]]:
    """The panels of a run's training curves: (title, [(label, [(step, value), ...])]).

    Only series the run logged appear, and only panels with a series. The
    legacy ``minority`` union is drawn only for runs logged before the three-way
    split (no lowest-minority or others key), so a new run shows the paper's
    groups and nothing twice.
    """
    logged = {k for r in records for k in r}
    panels = []
    for title, curves in CURVE_PANELS:
        keys = [(key, label) for key, label in curves if key in logged]
        if any(key.endswith(("_lowest_minority", "_others")) for key, _ in keys):
            keys = [(key, label) for key, label in keys if label != LEGACY_MINORITY[1]]
        series = [(label, [(r["step"], r[key]) for r in records if key in r and "step" in r])
                  for key, label in keys]
        if series:
            panels.append((title, series))
    return panels


def plot_curves(evaluation: ModelEvaluation, path: Path) -> Path | None:
    """Training curves of a run: JSD over training and reward margins by margin group."""
    panels = curve_panels(evaluation.curves or [])
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for label, points in series:
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=label)
        if title.startswith("reward margins"):
            ax.axhline(0, color="black", lw=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.suptitle(f"{evaluation.label}: training", fontsize=9)
    return _save(fig, path)


def _samples(evaluation: ModelEvaluation, questions: int = 2, per_question: int = 2
             ) -> list[list[str]]:
    rows = [["question", "class", "description", "response", "verdict"]]
    for p in evaluation.predictions[:questions]:
        for i, g in enumerate(p.generations[:per_question]):
            verdict = p.verdicts[i] if i < len(p.verdicts) else "–"
            rows.append([p.group.prompt, str(g.class_id), g.description or "–",
                         g.response[:200], verdict])
    return rows


def build_blocks(evaluations: Sequence[ModelEvaluation], lines: dict[str, MetricResult],
                 plots_dir: Path, plot_questions: int) -> list[Block]:
    """The report as (kind, content) blocks: heading, text, table, image."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    blocks: list[Block] = [("h1", "pluralign evaluation")]
    prompts = len(evaluations[0].predictions) if evaluations else 0
    blocks.append(("p", f"{prompts} prompts; intervals are 95% (bootstrap for means, Wilson for "
                        "shares). JSD is read from one forward pass; 'JSD sampled' from samples "
                        "of the first generated token."))
    blocks += [("h2", "Methods side by side"), ("table", _methods_table(evaluations))]
    blocks += [("h2", "Reference lines (JSD of trivial predictors)"),
               ("table", [["line", "JSD"], *([k, _fmt(v)] for k, v in lines.items())])]
    if evaluations:
        blocks += [("h2", "JSD per question"),
                   ("img", plot_jsd_per_question(evaluations, lines, plots_dir / "jsd.png"))]
    margins = plot_margins(evaluations, plots_dir / "margins.png")
    if margins is not None:
        blocks += [("h2", "Reward margins (majority, lowest-minority and other pairs)"),
                   ("p", "A pair is majority when its chosen belief has the prompt's highest "
                         "target share, lowest minority when it has the lowest share, others "
                         "otherwise (the GDPO paper's Figures 2 and 3)."),
                   ("img", margins)]
    for i, e in enumerate(evaluations):
        blocks += [("h2", f"{e.label}"), ("p", f"model: {e.model}")]
        blocks.append(("img", plot_beliefs(e, plots_dir / f"beliefs_{i}.png", plot_questions)))
        curves = plot_curves(e, plots_dir / f"curves_{i}.png")
        if curves is not None:
            blocks.append(("img", curves))
        blocks += [("h3", "Sample generations"), ("table", _samples(e))]
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], base: Path) -> str:
    out = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + content)
        elif kind == "p":
            out.append(content)
        elif kind == "table":
            header, *rows = content
            out.append("| " + " | ".join(map(_md_cell, header)) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
        elif kind == "img":
            out.append(f"![{content.stem}]({content.relative_to(base).as_posix()})")
        out.append("")
    return "\n".join(out)


def render_html(blocks: Sequence[Block]) -> str:
    body = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "table":
            header, *rows = content
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in header)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                          for r in rows)
            body.append(f"<table><tr>{cells}</tr>{trs}</table>")
        elif kind == "img":
            data = base64.b64encode(Path(content).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(content.stem)}" '
                        f'src="data:image/png;base64,{data}">')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>pluralign evaluation"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")


def write_report(out: Path, evaluations: Sequence[ModelEvaluation],
                 lines: dict[str, MetricResult], *, plot_questions: int = 4) -> dict[str, Path]:
    """Write ``report.md`` (+ ``plots/*.png``) and the self-contained ``report.html``."""
    out = Path(out)
    blocks = build_blocks(evaluations, lines, out / "plots", plot_questions)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(render_markdown(blocks, out), encoding="utf-8")
    html_path.write_text(render_html(blocks), encoding="utf-8")
    return {"report_md": md_path, "report_html": html_path}
