"""Reference lines: what JSD a trivial predictor would score against any p*.

Each line maps target distributions (K,) or (N, K) to predicted ones of the
same shape; :func:`reference_lines` scores the standard set against p* so
that a model's JSD can be read next to "always the majority", "the reversed
distribution", "uniform" and "p* with a little noise".

Ties: positions are ranked by value, and among equal values the earlier
position counts as larger (as ``argmax`` does for ``majority``). ``reverse``
and ``noise`` use that one ranking, so their results never depend on how a
sort happens to break ties.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from numpy.typing import ArrayLike

from pluralign.beliefs.distances import as_distributions, is_ragged
from pluralign.eval.metrics import SEED, JSDResult, jsd
from pluralign.registry import REFERENCE_LINES

#: Reference lines by name; each maps targets (N, K) to predictions (N, K).

#: The noise levels of the standard set.
NOISE_LEVELS: tuple[float, ...] = (0.1, 0.05)

#: The standard set, in the order reports show it.
STANDARD_LINES: tuple[str, ...] = (
    "majority",
    "reverse",
    "uniform",
    *(f"noise_{eps}" for eps in NOISE_LEVELS),
)


def _rows(targets: ArrayLike) -> tuple[np.ndarray, bool]:
    """Validated, normalised rows and whether the input was a single distribution."""
    single = np.ndim(targets) == 1
    return as_distributions(targets, "target"), single


def _shape_like(rows: np.ndarray, single: bool) -> np.ndarray:
    return rows[0] if single else rows


def _descending_order(p: np.ndarray) -> np.ndarray:
    """Positions of each row from largest to smallest value, ties by position."""
    # A stable sort of -p keeps equal values in position order.
    return np.argsort(-p, axis=1, kind="stable")


@REFERENCE_LINES.register("majority")
def majority(targets: ArrayLike) -> np.ndarray:
    """One-hot on the most likely class (ties: the first)."""
    p, single = _rows(targets)
    out = np.zeros_like(p)
    out[np.arange(p.shape[0]), np.argmax(p, axis=1)] = 1.0
    return _shape_like(out, single)


@REFERENCE_LINES.register("reverse")
def reverse(targets: ArrayLike) -> np.ndarray:
    """Largest value swapped with smallest, second with second-smallest, ... (positions kept)."""
    p, single = _rows(targets)
    order = _descending_order(p)
    out = np.empty_like(p)
    # The i-th largest position receives the value of the i-th smallest one.
    np.put_along_axis(out, order, np.take_along_axis(p, order[:, ::-1], axis=1), axis=1)
    return _shape_like(out, single)


@REFERENCE_LINES.register("uniform")
def uniform(targets: ArrayLike) -> np.ndarray:
    """The uniform distribution over the K classes."""
    p, single = _rows(targets)
    return _shape_like(np.full_like(p, 1.0 / p.shape[1]), single)


def noise(targets: ArrayLike, eps: float) -> np.ndarray:
    """p* with ``eps`` moved from its largest entry to its smallest (never below 0)."""
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a non-negative number, got {eps}")
    p, single = _rows(targets)
    order = _descending_order(p)
    rows = np.arange(p.shape[0])
    top, bottom = order[:, 0], order[:, -1]
    # Move at most what the largest entry holds; with K = 1 top == bottom and
    # the two updates cancel, leaving the row unchanged.
    moved = np.minimum(eps, p[rows, top])
    out = p.copy()
    out[rows, top] -= moved
    out[rows, bottom] += moved
    return _shape_like(out, single)


def noise_line(eps: float) -> Callable[[ArrayLike], np.ndarray]:
    """The reference line ``noise(., eps)`` as a one-argument function."""

    def line(targets: ArrayLike) -> np.ndarray:
        return noise(targets, eps)

    line.__name__ = f"noise_{eps}"
    line.__doc__ = f"p* with {eps} moved from its largest entry to its smallest."
    return line


for _eps in NOISE_LEVELS:
    REFERENCE_LINES.register(f"noise_{_eps}", noise_line(_eps))


def reference_line(name: str, targets: ArrayLike) -> np.ndarray:
    """Apply the reference line called ``name`` (see ``REFERENCE_LINES``) to ``targets``."""
    return REFERENCE_LINES.get(name)(targets)


def reference_lines(
    targets: ArrayLike,
    names: Iterable[str] | None = None,
    *,
    confidence: float = 0.95,
    seed: int = SEED,
) -> dict[str, JSDResult]:
    """JSD of each reference line against p* over a dataset of targets (N, K)."""
    chosen = STANDARD_LINES if names is None else tuple(names)
    if is_ragged(targets):  # questions with different numbers of beliefs: line by row
        rows = [as_distributions(row, f"target row {i}")[0] for i, row in enumerate(targets)]
        return {name: jsd([reference_line(name, row) for row in rows], rows,
                          confidence=confidence, seed=seed) for name in chosen}
    p = as_distributions(targets, "target")
    return {
        name: jsd(reference_line(name, p), p, confidence=confidence, seed=seed) for name in chosen
    }
