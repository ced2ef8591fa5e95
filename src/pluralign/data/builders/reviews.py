"""Movie review data: Amazon-style reviews -> rating-belief pairs per movie.

The prompt describes the movie (title, year, director, genre, plot from an
optional metadata file; the product id when there is none), the beliefs are
the ratings 1..5, the target is the movie's rating histogram, each review is
an accepted response and a review of the same movie with another rating
(drawn uniformly over the other ratings present) is the rejected one.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pluralign.config import YamlConfig
from pluralign.data.builders.cards import BuildReport, BuildResult
from pluralign.data.builders.splits import SPLIT_METHODS, split_examples
from pluralign.data.records import Belief, GroupPreferenceExample, distribution_from_counts
from pluralign.registry import BUILDERS

RATINGS = (1, 2, 3, 4, 5)
RATING_BELIEFS = tuple(Belief(r, f"{r} star" + ("s" if r > 1 else "")) for r in RATINGS)
META_FIELDS = ("title", "year", "director", "genre", "plot")


@dataclass
class ReviewsConfig(YamlConfig):
    """How to build rating-belief pairs from a review file."""

    reviews: str = field(
        default="", metadata={"help": "Review JSONL(.gz): asin, overall, reviewText[, summary]."}
    )
    metadata: str | None = field(
        default=None,
        metadata={"help": "Optional metadata JSONL keyed by asin (title, year, genre, plot, "
                          "director)."},
    )
    min_reviews: int = field(
        default=5, metadata={"help": "Skip (and report) movies with fewer usable reviews."}
    )
    group: str = field(
        default="amazon-movies-reviewers", metadata={"help": "Group name of the records."}
    )
    split_by: str = field(
        default="question", metadata={"help": "question (= movie) or example."}
    )
    fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train/eval/test fractions."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the rejected draws and splits."})

    def __post_init__(self) -> None:
        if self.min_reviews < 2:
            raise ValueError(f"min_reviews: must be >= 2, got {self.min_reviews}")
        if self.split_by not in SPLIT_METHODS:
            raise ValueError(f"split_by: must be one of {SPLIT_METHODS}, got {self.split_by!r}")


def _jsonl(path: str | Path, report: BuildReport, what: str) -> Iterator[dict[str, Any]]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # the 2018 dump has blank lines between records
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                report.skip(f"bad {what} line")
                report.warn(f"{path}:{n}: skipped: invalid JSON: {error}")
                continue
            if isinstance(data, dict):
                yield data


def load_metadata(path: str | Path | None, report: BuildReport) -> dict[str, dict[str, Any]]:
    """``{asin: metadata}`` from a metadata JSONL; empty when ``path`` is None."""
    if path is None:
        return {}
    return {str(m["asin"]): m for m in _jsonl(path, report, "metadata") if "asin" in m}


def movie_prompt(asin: str, meta: dict[str, Any] | None) -> str:
    """The prompt of a movie: its metadata, or its product id when there is none."""
    lines = []
    for name in META_FIELDS:
        value = (meta or {}).get(name)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if value not in (None, ""):
            lines.append(f"{name.capitalize()}: {value}")
    if not lines:
        return f"Write a review of the movie with Amazon product id {asin}."
    return "Write a review of the following movie.\n" + "\n".join(lines)


def _rating(value: Any) -> int | None:
    try:
        rating = float(value)
    except (TypeError, ValueError):
        return None
    return int(rating) if rating.is_integer() and int(rating) in RATINGS else None


def load_reviews(path: str | Path, report: BuildReport) -> dict[str, list[dict[str, Any]]]:
    """Usable reviews by asin; empty texts and bad ratings are counted and skipped."""
    movies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for data in _jsonl(path, report, "review"):
        report.counts["reviews read"] += 1
        text = str(data.get("reviewText") or "").strip()
        rating = _rating(data.get("overall"))
        if "asin" not in data:
            report.skip("review without asin")
        elif not text:
            report.skip("empty review text")
        elif rating is None:
            report.skip("rating not in 1..5")
        else:
            movies[str(data["asin"])].append(
                {"rating": rating, "text": text, "summary": data.get("summary")})
    return movies


def _movie_examples(
    asin: str, reviews: list[dict[str, Any]], prompt: str, group: str, rng: random.Random
) -> list[GroupPreferenceExample]:
    counts = Counter(r["rating"] for r in reviews)
    probs = distribution_from_counts([counts.get(r, 0) for r in RATINGS])
    by_rating = defaultdict(list)
    for review in reviews:
        by_rating[review["rating"]].append(review)
    examples = []
    for review in reviews:
        others = sorted(r for r in by_rating if r != review["rating"])
        rejected = rng.choice(by_rating[rng.choice(others)])
        examples.append(GroupPreferenceExample(
            prompt=prompt, beliefs=RATING_BELIEFS, target_distribution=probs,
            chosen_belief=review["rating"], rejected_belief=rejected["rating"],
            chosen_response=review["text"], rejected_response=rejected["text"],
            group=group, question_id=asin,
            metadata={"asin": asin, "chosen_summary": review.get("summary"),
                      "rejected_summary": rejected.get("summary"),
                      "rating_counts": [counts.get(r, 0) for r in RATINGS]},
        ))
    return examples


@BUILDERS.register("reviews")
def build_reviews(config: ReviewsConfig) -> BuildResult:
    """Amazon movie reviews -> rating-belief pairs with per-movie rating histograms."""
    if not config.reviews:
        raise ValueError("reviews: a review JSONL file is required")
    report = BuildReport("reviews", config.reviews, config.seed)
    metadata = load_metadata(config.metadata, report)
    movies = load_reviews(config.reviews, report)
    rng = random.Random(config.seed)
    examples: list[GroupPreferenceExample] = []
    few, single = [], []
    for asin in tqdm(sorted(movies), desc="reviews", unit="movie", disable=len(movies) < 200):
        reviews = movies[asin]
        if len(reviews) < config.min_reviews:
            few.append(asin)
            report.skip(f"movie with fewer than {config.min_reviews} reviews")
            continue
        if len({r["rating"] for r in reviews}) < 2:
            single.append(asin)
            report.skip("movie whose reviews all share one rating")
            continue
        report.counts["movies kept"] += 1
        examples.extend(_movie_examples(asin, reviews, movie_prompt(asin, metadata.get(asin)),
                                        config.group, rng))
    report.counts["movies"] = len(movies)
    report.counts["movies with metadata"] = sum(a in metadata for a in movies)
    report.counts["pairs"] = len(examples)
    report.details["skipped movies (too few reviews)"] = few
    if single:
        report.details["skipped movies (one rating only)"] = single
    splits = split_examples(examples, by=config.split_by, fractions=config.fractions,
                            seed=config.seed)
    return BuildResult(splits, report, config.split_by)
