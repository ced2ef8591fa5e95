"""Distances between belief distributions: validation of distributions and the JSD core.

Pure numpy; both training (per-pair diagnostics) and evaluation (the JSD
metric with its interval) read them here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def as_distributions(values: ArrayLike, what: str = "distribution") -> np.ndarray:
    """Validate a (K,) or (N, K) array of non-negative weights; return rows summing to 1.

    Rows are normalised (as scipy's ``jensenshannon`` does), so counts such
    as rating histograms are accepted; errors name the offending row.
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{what} must have shape (K,) or (N, K), got {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{what} has no classes (shape {arr.shape})")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(f"{what} row {int(np.argmax(bad))} has a non-finite entry")
    neg = (arr < 0).any(axis=1)
    if neg.any():
        row = int(np.argmax(neg))
        raise ValueError(f"{what} row {row} has a negative entry: {arr[row].tolist()}")
    sums = arr.sum(axis=1)
    zero = sums <= 0
    if zero.any():
        raise ValueError(f"{what} row {int(np.argmax(zero))} sums to 0")
    return arr / sums[:, None]


def _kl_rows(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Row-wise KL(p || m) in nats, where m > 0 wherever p > 0 (m is a mixture with p)."""
    # 0 * log 0 is 0 by convention; the masked division keeps log(0) out entirely.
    ratio = np.divide(p, m, out=np.ones_like(p), where=p > 0)
    return (p * np.log(ratio)).sum(axis=1)


def is_ragged(values: ArrayLike) -> bool:
    """Whether ``values`` is a list of rows of different lengths (prompts with different K)."""
    if isinstance(values, np.ndarray):
        return values.dtype == object
    rows = list(values)  # type: ignore[arg-type]
    if not rows or np.ndim(rows[0]) == 0:
        return False
    return len({len(row) for row in rows}) > 1


def _jsd_ragged(predicted: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Row by row, for datasets whose questions have different numbers of beliefs."""
    p_rows, q_rows = list(predicted), list(target)  # type: ignore[arg-type]
    if len(p_rows) != len(q_rows):
        raise ValueError(f"{len(p_rows)} predicted rows but {len(q_rows)} target rows")
    out = []
    for i, (p, q) in enumerate(zip(p_rows, q_rows, strict=True)):
        if len(p) != len(q):
            raise ValueError(f"row {i}: predicted has {len(p)} classes, target {len(q)}")
        out.append(jsd_per_prompt(as_distributions(p, f"predicted row {i}"),
                                  as_distributions(q, f"target row {i}"))[0])
    return np.asarray(out)


def jsd_per_prompt(predicted: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Jensen-Shannon distance (natural log) of each predicted row against its target row.

    Rows may differ in length between prompts (questions with 2 and 5 options
    in one dataset); each predicted row must match its own target row.
    """
    if is_ragged(predicted) or is_ragged(target):
        return _jsd_ragged(predicted, target)
    p = as_distributions(predicted, "predicted")
    q = as_distributions(target, "target")
    if p.shape != q.shape:
        raise ValueError(
            f"predicted and target shapes differ: {p.shape} vs {q.shape} "
            "(need the same number of prompts and of classes)"
        )
    m = (p + q) / 2.0
    divergence = (_kl_rows(p, m) + _kl_rows(q, m)) / 2.0
    # Rounding can leave a tiny negative divergence for identical rows.
    return np.sqrt(np.clip(divergence, 0.0, None))

