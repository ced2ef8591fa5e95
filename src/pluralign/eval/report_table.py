"""The report's methods table: one row per model, a column per metric and margin group.

Each metric column knows its direction (``lower_is_better``: the arrow in its
header), so the best value of a column is marked (:class:`Best`, bold in both
renderings). A column that no model has a value in is left out, and
:func:`left_out_note` says which and why, so an empty "JSD sampled" column
does not leave a reader guessing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from pluralign.data.records import MARGIN_GROUPS
from pluralign.registry import METRICS

if TYPE_CHECKING:
    from pluralign.eval.metrics import MetricResult
    from pluralign.eval.predictions import ModelEvaluation


class Column(NamedTuple):
    """A metric column: its metrics key, header and direction.

    ``lower_is_better`` is None where the direction is not known (plugins'
    metrics, the reward margins): such a column is never marked.
    """

    key: str
    header: str
    lower_is_better: bool | None = None


#: Columns of the methods table. Other registered metrics (plugins') that a model was scored
#: with follow them, headed by their name (see :func:`metric_columns`).
COLUMNS = (Column("jsd", "JSD ↓", True), Column("jsd_sampled", "JSD sampled ↓", True),
           Column("cbc", "CBC ↑", False), Column("bpc", "BPC ↑", False),
           Column("rs", "RS ↑", False), Column("marker_start", "marker starts ↓", True))

#: Margin groups, in the paper's order: (summary / metrics key, label).
MARGIN_PARTS = tuple((group, group.replace("_", " ")) for group in MARGIN_GROUPS)

#: Why a column is empty for every model, for the note that names the columns left out.
EMPTY_BECAUSE = {
    "jsd": "no belief distribution was read",
    "jsd_sampled": "no belief samples (belief_samples = 0, or no sample held a belief marker)",
    "cbc": "no generation with a belief description",
    "bpc": "no judged generation",
    "rs": "no generation with a reference response",
    "marker_start": "no generations",
    "generations": "no generations (n_samples = 0)",
    "margins": "no reward margins (no ref_model given)",
}
#: Columns measured on generations: all empty for the one reason when nothing was generated.
GENERATION_COLUMNS = frozenset({"cbc", "bpc", "rs", "marker_start"})


class Best(str):
    """A cell holding the best value of its column: rendered bold (``**`` / ``<strong>``)."""

    __slots__ = ()


def fmt(result: MetricResult | None) -> str:
    """``value [low, high] (n=N)``, or "–" where there is no value."""
    if not has_value(result):
        return "–"
    assert result is not None
    return f"{result.value:.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}] (n={result.n})"


def has_value(result: MetricResult | None) -> bool:
    return result is not None and result.n > 0 and math.isfinite(result.value)


def metric_columns(evaluations: Sequence[ModelEvaluation]) -> list[Column]:
    """:data:`COLUMNS`, then every other registered metric some evaluation holds.

    Only registered names: diagnostics kept in eval.json alone (the marker
    mass after descriptions) stay out of the table, as before plugins.
    """
    shown = {c.key for c in COLUMNS}
    extra = [Column(name, name) for name in METRICS.registration_order()
             if name not in shown and any(name in e.metrics for e in evaluations)]
    return [*COLUMNS, *extra]


def _all_columns(evaluations: Sequence[ModelEvaluation]
                 ) -> list[tuple[Column, list[MetricResult | None]]]:
    """Every column with its results, one per evaluation (None: not measured)."""
    columns = [(c, [e.metrics.get(c.key) for e in evaluations])
               for c in metric_columns(evaluations)]
    for key, label in MARGIN_PARTS:
        results = [e.margins.summary.get(key) if e.margins is not None else None
                   for e in evaluations]
        columns.append((Column(f"margin_{key}", f"margin {label}"), results))
    return columns


def best_rows(results: Sequence[MetricResult | None], lower_is_better: bool | None) -> set[int]:
    """Indices of the best results by the shown (3-decimal) value; ties are all best.

    Nothing is best without a direction, with fewer than two values to compare,
    or when every value ties (a mark would single nothing out).
    """
    shown = {i: round(r.value, 3) for i, r in enumerate(results)
             if r is not None and has_value(r)}
    if lower_is_better is None or len(shown) < 2 or len(set(shown.values())) == 1:
        return set()
    best = min(shown.values()) if lower_is_better else max(shown.values())
    return {i for i, v in shown.items() if v == best}


def _kept_columns(evaluations: Sequence[ModelEvaluation]
                  ) -> tuple[list[tuple[Column, list[MetricResult | None]]], list[Column]]:
    """(columns some model has a value in, columns empty for every model)."""
    kept, dropped = [], []
    for column, results in _all_columns(evaluations):
        # Without any model there is nothing to judge emptiness by: the header stays whole.
        empty = bool(evaluations) and not any(has_value(r) for r in results)
        if empty:
            dropped.append(column)
        else:
            kept.append((column, results))
    return kept, dropped


def methods_table(evaluations: Sequence[ModelEvaluation]) -> list[list[str]]:
    """Header and one row per model; the best cell of a metric column is a :class:`Best`."""
    kept, _ = _kept_columns(evaluations)
    rows = [["model", "method", *(c.header for c, _ in kept), "judge failures"]]
    for e in evaluations:
        failures = e.judge_failures()
        rows.append([e.label, e.method or "–", *([""] * len(kept)),
                     f"{failures['parse_failure']} parse, {failures['api_error']} api"])
    for j, (column, results) in enumerate(kept):
        best = best_rows(results, column.lower_is_better)
        for i, result in enumerate(results):
            rows[i + 1][2 + j] = (Best if i in best else str)(fmt(result))
    return rows


def _empty_because(column: Column, generated: bool) -> str:
    if column.key.startswith("margin_"):
        return EMPTY_BECAUSE["margins"]
    if column.key in GENERATION_COLUMNS and not generated:
        return EMPTY_BECAUSE["generations"]
    return EMPTY_BECAUSE.get(column.key, "no values")


def left_out_note(evaluations: Sequence[ModelEvaluation]) -> str | None:
    """One line naming the columns left out as empty for every model, and why; None if none.

    Columns empty for the same reason are named together, so that n_samples = 0
    reads as one cause rather than four.
    """
    _, dropped = _kept_columns(evaluations)
    if not dropped:
        return None
    generated = any(p.generations for e in evaluations for p in e.predictions)
    named: dict[str, list[str]] = {}
    for column in dropped:
        named.setdefault(_empty_because(column, generated), []).append(
            column.header.rstrip(" ↑↓"))
    parts = [f"{', '.join(names)}: {reason}" for reason, names in named.items()]
    return "Left out as empty for every model — " + "; ".join(parts) + "."
