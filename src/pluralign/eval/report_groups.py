"""The report's section per group: a table of each model's JSD per group with the reference
lines of that group, and a plot of JSD per group for each model.

Shown only for a file of several groups (:class:`pluralign.eval.by_group.GroupBreakdown`).
The plot draws each group's uniform line as a dashed segment over the group's
bars: a group's uniform JSD depends on its own targets, so one line across the
plot would misplace it for every group but one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pluralign.eval.report_render import FONT, Block, pyplot, save_figure
from pluralign.eval.report_table import fmt

if TYPE_CHECKING:
    from pluralign.eval.by_group import GroupBreakdown

__all__ = ["UNIFORM_LINE", "group_blocks", "group_table", "groups_figure", "plot_groups"]

#: The reference line each group's bars are drawn against.
UNIFORM_LINE = "uniform"


def _value(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "–"


def group_table(by_group: GroupBreakdown) -> list[list[str]]:
    """Rows: one per group (each model's JSD with its interval, then the group's reference
    lines), and a last row of means over groups."""
    labels = list(by_group.jsd)
    lines = by_group.line_names()
    rows = [["group", "prompts", *(f"{label} JSD ↓" for label in labels), *lines]]
    for group in by_group.groups:
        rows.append([group, str(by_group.prompts[group]),
                     *(fmt(by_group.jsd[label][group]) for label in labels),
                     *(_value(by_group.reference_lines[group][line].value) for line in lines)])
    rows.append(["mean over groups", str(sum(by_group.prompts.values())),
                 *(_value(by_group.mean_jsd(label)) for label in labels),
                 *(_value(by_group.mean_reference_line(line)) for line in lines)])
    return rows


def groups_figure(by_group: GroupBreakdown) -> Any:
    """Bars of each model's JSD per group (95% intervals), with each group's uniform line."""
    plt = pyplot()
    labels = list(by_group.jsd)
    groups = by_group.groups
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 2.0), 3.4),
                           layout="constrained")
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        results = [by_group.jsd[label][g] for g in groups]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(groups))]
        errors = [[max(0.0, r.value - r.ci_low) if math.isfinite(r.ci_low) else 0.0
                   for r in results],
                  [max(0.0, r.ci_high - r.value) if math.isfinite(r.ci_high) else 0.0
                   for r in results]]
        ax.bar(xs, [r.value for r in results], width, yerr=errors, color=f"C{j}", label=label,
               error_kw={"lw": 0.8})
    for i, group in enumerate(groups):
        line = by_group.reference_lines[group].get(UNIFORM_LINE)
        if line is not None and math.isfinite(line.value):
            ax.hlines(line.value, i - 0.45, i + 0.45, colors="0.4", linestyles="--", lw=1.0,
                      label=f"{UNIFORM_LINE} line (per group)" if i == 0 else None)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlabel("group", fontsize=FONT + 1)
    ax.set_ylabel("JSD to p*", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    fig.legend(loc="outside upper left", ncols=min(5, len(labels) + 1), fontsize=FONT,
               frameon=False)
    return fig


def plot_groups(by_group: GroupBreakdown, path: Path) -> Path:
    """:func:`groups_figure` saved to ``path``."""
    return save_figure(groups_figure(by_group), path)


def group_blocks(by_group: GroupBreakdown, path: Path) -> list[Block]:
    """The section: heading, note, table and the plot (written to ``path``)."""
    return [("h2", "JSD per group"),
            ("p", f"{len(by_group.groups)} groups. Each group's JSD is the mean over its "
                  "prompts; the mean over groups counts every group once. The reference "
                  "lines are computed on each group's own targets."),
            ("table", group_table(by_group)),
            ("img", plot_groups(by_group, path))]
