"""Pure metric functions: JSD, CBC, BPC and RS, each with a 95% interval.

Every metric takes predictions that were already produced (distributions,
parsed class ids, judge verdicts, embeddings) and returns a
:class:`MetricResult`; nothing here runs a model except
:func:`response_similarity`, which embeds texts with
:func:`pluralign.models.embed.embed_texts` for :func:`rs` to compare. The JSD
core is :mod:`pluralign.beliefs.distances`.

Evaluation computes every metric registered in ``METRICS`` through the
inputs it declares (:mod:`pluralign.eval.metric_inputs`): CBC and BPC by
their own arguments, JSD and RS through the scorers beside them
(:func:`score_jsd`, :func:`score_rs`).

Intervals: means over prompts get a seeded percentile bootstrap (the values
are bounded and skewed, so a normal interval would misbehave near 0), shares
of generations get a Wilson score interval (exact enough and never outside
[0, 1], unlike the Wald interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from pluralign.beliefs.distances import jsd_per_prompt
from pluralign.eval.metric_inputs import scored_by
from pluralign.models.embed import embed_texts
from pluralign.registry import METRICS

#: Verdicts of BPC: a judge's "yes"/"no" (or its failures "parse_failure"/"api_error"),
#: and "empty" for a response that is empty, whitespace-only or unparsed (never judged).
VERDICTS: tuple[str, ...] = ("yes", "no", "empty", "parse_failure", "api_error")

#: Default number of bootstrap resamples and the seed that makes them repeatable.
N_RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True, eq=False)
class MetricResult:
    """A metric's value over ``n`` items with a confidence interval and diagnostics.

    ``counts`` holds whatever explains the value (agreements, parse failures,
    API errors); ``per_item`` the per-prompt or per-generation values where
    the metric is a mean of them (JSD, RS), otherwise None.
    """

    name: str
    value: float
    n: int
    ci_low: float
    ci_high: float
    counts: dict[str, int] = field(default_factory=dict)
    per_item: np.ndarray | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-item values)."""
        return {
            "name": self.name,
            "value": self.value,
            "n": self.n,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "counts": dict(self.counts),
        }

    def __str__(self) -> str:
        interval = f"[{self.ci_low:.4f}, {self.ci_high:.4f}]"
        return f"{self.name} = {self.value:.4f} {interval} (n={self.n})"


@dataclass(frozen=True, eq=False)
class JSDResult(MetricResult):
    """JSD over a batch: ``value`` is the mean of ``per_prompt``."""

    @property
    def per_prompt(self) -> np.ndarray:
        assert self.per_item is not None
        return self.per_item


# ----------------------------------------------------------------- intervals


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    # statistics.NormalDist avoids importing scipy.stats (slow) for one quantile.
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n``; (nan, nan) when n is 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = _z(confidence)
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clamp rounding noise so that 0/n and n/n give exactly 0 and 1.
    return (max(0.0, center - half), min(1.0, center + half))


def bootstrap_mean_interval(
    values: ArrayLike,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded, repeatable)."""
    x = np.asarray(values, dtype=float).ravel()
    _z(confidence)  # validates confidence
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    # Resample in chunks so that large test sets do not need a B x N index matrix.
    chunk = max(1, 2_000_000 // x.size)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def mean_with_interval(
    values: ArrayLike, confidence: float = 0.95, seed: int = SEED
) -> tuple[float, float, float]:
    """(mean, low, high) with a bootstrap interval; nan everywhere for no values."""
    x = np.asarray(values, dtype=float).ravel()
    mean = float(x.mean()) if x.size else math.nan
    return (mean, *bootstrap_mean_interval(x, confidence, seed=seed))


def proportion_with_interval(
    successes: int, n: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(share, low, high) with a Wilson interval; nan everywhere when n is 0."""
    share = successes / n if n else math.nan
    return (share, *wilson_interval(successes, n, confidence))


# ----------------------------------------------------------------------- JSD


def jsd_where_read(name: str, predicted: Sequence[Sequence[float] | None],
                   targets: Sequence[Sequence[float]], seed: int = SEED) -> MetricResult:
    """JSD over the prompts that have a distribution; the others are counted, not filled in.

    ``per_item`` keeps one entry per prompt (NaN where there was none), so
    plots stay aligned with the questions.
    """
    kept = [i for i, p in enumerate(predicted) if p is not None]
    counts = {"prompts": len(kept), "prompts_without_belief_sample": len(predicted) - len(kept)}
    per_item = np.full(len(predicted), np.nan)
    if not kept:
        return MetricResult(name, float("nan"), 0, float("nan"), float("nan"), counts, per_item)
    result = jsd([predicted[i] for i in kept], [targets[i] for i in kept], seed=seed)
    per_item[kept] = result.per_item
    return MetricResult(name, result.value, result.n, result.ci_low, result.ci_high, counts,
                        per_item)


def score_jsd(predicted: Sequence[Sequence[float] | None], target: Sequence[Sequence[float]],
              *, sampled: Sequence[Sequence[float] | None] | None = None, seed: int = SEED
              ) -> dict[str, MetricResult]:
    """Evaluation's JSD: of the reading ("jsd") and, when drawn, the sampled estimate."""
    results = {"jsd": jsd_where_read("jsd", predicted, target, seed)}
    if sampled is not None:
        results["jsd_sampled"] = jsd_where_read("jsd_sampled", sampled, target, seed)
    return results


@METRICS.register("jsd")
@scored_by(score_jsd)
def jsd(
    predicted: ArrayLike, target: ArrayLike, *, confidence: float = 0.95, seed: int = SEED
) -> JSDResult:
    """Jensen-Shannon distance (natural log, 0..sqrt(ln 2)) between predicted beliefs and p*."""
    per = jsd_per_prompt(predicted, target)
    mean, low, high = mean_with_interval(per, confidence, seed)
    return JSDResult("jsd", mean, int(per.size), low, high, {"prompts": int(per.size)}, per)


# ----------------------------------------------------------------------- CBC


def _class_id(value: Any, what: str, index: int) -> int | None:
    if value is None:
        return None
    # A string "3" would silently never equal 3: reject anything but integers.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}[{index}] must be an int class id or None, got {value!r}")
    return int(value)


@METRICS.register("cbc")
def cbc(
    predicted_classes: Sequence[int | None],
    description_classes: Sequence[int | None],
    *,
    confidence: float = 0.95,
) -> MetricResult:
    """Class-belief consistency: share of generations whose class token matches its description."""
    if len(predicted_classes) != len(description_classes):
        raise ValueError(
            f"{len(predicted_classes)} predicted classes but "
            f"{len(description_classes)} description classes"
        )
    counts = {"agree": 0, "disagree": 0, "unparsed_class": 0, "unparsed_description": 0}
    for i, (pred, desc) in enumerate(zip(predicted_classes, description_classes, strict=True)):
        pred_id = _class_id(pred, "predicted_classes", i)
        desc_id = _class_id(desc, "description_classes", i)
        if pred_id is None or desc_id is None:
            # Unparseable output is a failure to be consistent, but reported apart.
            counts["unparsed_class"] += pred_id is None
            counts["unparsed_description"] += desc_id is None
        elif pred_id == desc_id:
            counts["agree"] += 1
        else:
            counts["disagree"] += 1
    n = len(predicted_classes)
    counts["unparsed"] = n - counts["agree"] - counts["disagree"]
    value, low, high = proportion_with_interval(counts["agree"], n, confidence)
    return MetricResult("cbc", value, n, low, high, counts)


# ----------------------------------------------------------------------- BPC


def _verdict(value: Any, index: int) -> str:
    raw = getattr(value, "value", value)  # accept an Enum of verdicts as well
    if not isinstance(raw, str):
        raise TypeError(f"verdicts[{index}] must be one of {VERDICTS}, got {value!r}")
    verdict = raw.strip().lower()
    if verdict not in VERDICTS:
        raise ValueError(f"verdicts[{index}] is {value!r}; expected one of {VERDICTS}")
    return verdict


@METRICS.register("bpc")
def bpc(verdicts: Sequence[Any], *, confidence: float = 0.95) -> MetricResult:
    """Belief-prediction consistency over every generation (the paper's 1/N): the share of
    "yes"; empty, whitespace-only and unparsed responses ("empty") count as not expressing
    the belief. Only the judge's own failures are left out."""
    counts = dict.fromkeys(VERDICTS, 0)
    for i, value in enumerate(verdicts):
        counts[_verdict(value, i)] += 1
    # A judge's parse failures and API errors say nothing about the response: they are
    # left out of the denominator and never counted as agreement. An empty or unparsed
    # response is the model's failure and stays in it.
    judged = counts["yes"] + counts["no"] + counts["empty"]
    counts["judged"] = judged
    counts["total"] = len(verdicts)
    value, low, high = proportion_with_interval(counts["yes"], judged, confidence)
    return MetricResult("bpc", value, judged, low, high, counts)


# ------------------------------------------------------------------------ RS


def cosine_similarities(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays; errors name zero-norm rows."""
    x = np.atleast_2d(np.asarray(a, dtype=float))
    y = np.atleast_2d(np.asarray(b, dtype=float))
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"embeddings must have the same shape (N, D), got {x.shape} and {y.shape}")
    for name, arr in (("generated", x), ("reference", y)):
        norms = np.linalg.norm(arr, axis=1)
        zero = ~(norms > 0)
        if zero.any():
            raise ValueError(f"{name} embedding row {int(np.argmax(zero))} has zero norm")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    return np.clip((x * y).sum(axis=1), -1.0, 1.0)


def score_rs(similarities: Sequence[float | None], generations: Sequence[Any], *,
             seed: int = SEED) -> MetricResult:
    """Evaluation's RS: the mean of the generations' similarities to their references.

    None (a belief without a reference response) is counted as skipped; a
    response that expresses nothing already scored 0 and is counted as empty.
    """
    sims = [s for s in similarities if s is not None]
    mean, low, high = mean_with_interval(sims, seed=seed)
    counts = {"pairs": len(sims), "skipped": sum(s is None for s in similarities),
              "empty": sum(g.expresses_nothing for g in generations)}
    return MetricResult("rs", mean, len(sims), low, high, counts, np.asarray(sims))


@METRICS.register("rs")
@scored_by(score_rs)
def rs(
    generated: ArrayLike, reference: ArrayLike, *, confidence: float = 0.95, seed: int = SEED
) -> MetricResult:
    """Response similarity: mean cosine between generated and reference-response embeddings."""
    sims = cosine_similarities(generated, reference)
    mean, low, high = mean_with_interval(sims, confidence, seed)
    return MetricResult("rs", mean, int(sims.size), low, high, {"pairs": int(sims.size)}, sims)


def response_similarity(
    generated_texts: Sequence[str],
    reference_texts: Sequence[str],
    model: Any = None,
    *,
    confidence: float = 0.95,
    seed: int = SEED,
) -> MetricResult:
    """RS from texts: embed both lists (bundled MiniLM by default) and apply :func:`rs`."""
    if len(generated_texts) != len(reference_texts):
        raise ValueError(
            f"{len(generated_texts)} generated but {len(reference_texts)} reference texts"
        )
    return rs(
        embed_texts(generated_texts, model),
        embed_texts(reference_texts, model),
        confidence=confidence,
        seed=seed,
    )
