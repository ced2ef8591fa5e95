"""Movie review data: Amazon-style reviews -> rating-belief pairs per movie.

The beliefs are the ratings 1..5, the target is the movie's rating histogram,
each review is an accepted response and a review of the same movie with another
rating (drawn uniformly over the other ratings present) is the rejected one.

Prompts. The paper prompts with the movie's metadata (appendix D: ``Heat, 1995,
Michael Mann (Genre: Crime, Drama). {plot}``), which it looked up in OMDb. Here
the lookup stays offline and optional: pass a metadata file (``--metadata``),
JSON lines (``.gz`` too), one object per movie::

    {"asin": "B00003CXCT", "title": "Heat", "year": 1995, "director": "Michael Mann",
     "genre": ["Crime", "Drama"], "plot": "A group of professional bank robbers ..."}

``asin`` (the product id the reviews carry) is required; ``title``, ``year``,
``director``, ``genre`` and ``plot`` are each optional, text (``year`` may be a
number; ``director`` and ``genre`` may be lists of texts). OMDb's own names
(``Title``, ``Year``, ``Director``, ``Genre``, ``Plot``) are read as the same
fields and its ``"N/A"`` as absent; other keys are ignored. A bad line stops the
build with ``FILE:LINE: field 'NAME': reason``. A movie with no metadata gets
``Write a review of the movie with Amazon product id {asin}.``: the prompt says
that only the id is known, and the card counts and warns about such movies.

Sequence format. Every record names ``reviews`` (or ``--sequence-format``) in
``metadata["sequence_format"]``: training with ``sequence_format: auto`` (the
default) then writes the paper's ``{rating}{review}`` answer, not the opinion
format's ``{class}<{description}>{response}`` (``5<5 stars>review``), and
evaluation reads the format from the trained run.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pluralign.beliefs.formats import FORMAT_METADATA_KEY, check_format_name
from pluralign.config import YamlConfig
from pluralign.data.builders.cards import BuildReport, BuildResult
from pluralign.data.builders.splits import SPLIT_METHODS, split_examples
from pluralign.data.records import Belief, GroupPreferenceExample, distribution_from_counts
from pluralign.registry import BUILDERS

RATINGS = (1, 2, 3, 4, 5)
RATING_BELIEFS = tuple(Belief(r, f"{r} star" + ("s" if r > 1 else "")) for r in RATINGS)
#: Metadata fields of a movie prompt, in prompt order.
META_FIELDS = ("title", "year", "director", "genre", "plot")
#: Fields that may hold a list of texts (several directors or genres).
LIST_FIELDS = ("director", "genre")
#: The format review records name: ``{rating}{review}`` after the ``<|belief|>`` separator.
DEFAULT_REVIEW_FORMAT = "reviews"
#: How to supply metadata, for warnings and help texts.
METADATA_HINT = ("give a metadata file (--metadata FILE; ReviewsConfig.metadata): JSON lines "
                 "with asin and any of title, year, director, genre, plot (OMDb's Title, Year, "
                 "Director, Genre, Plot work too)")


class MetadataError(ValueError):
    """A metadata line that cannot describe a movie: ``FILE:LINE: field 'NAME': reason``."""


@dataclass
class ReviewsConfig(YamlConfig):
    """How to build rating-belief pairs from a review file."""

    reviews: str = field(
        default="", metadata={"help": "Review JSONL(.gz): asin, overall, reviewText[, summary]."}
    )
    metadata: str | None = field(
        default=None,
        metadata={"help": "Optional movie metadata, JSON lines(.gz) keyed by asin: title, year, "
                          "director, genre, plot (OMDb's capitalised names too); the prompt "
                          "describes the movie as the paper's did. Without it a prompt names "
                          "only the product id."},
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
    sequence_format: str = field(
        default=DEFAULT_REVIEW_FORMAT,
        metadata={"help": "Sequence format the records name (metadata.sequence_format), which "
                          "training with sequence_format auto uses: reviews ({rating}{review} "
                          "after the <|belief|> separator), reviews-paper (the paper's exact "
                          "<Q>{prompt}<A>{rating}{review}) or any `pluralign ls "
                          "sequence-formats` name."},
    )

    def __post_init__(self) -> None:
        if self.min_reviews < 2:
            raise ValueError(f"min_reviews: must be >= 2, got {self.min_reviews}")
        if self.split_by not in SPLIT_METHODS:
            raise ValueError(f"split_by: must be one of {SPLIT_METHODS}, got {self.split_by!r}")
        check_format_name(self.sequence_format, allow_auto=False)


def _open_text(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(
        path, encoding="utf-8")


def _jsonl(path: str | Path, report: BuildReport, what: str) -> Iterator[dict[str, Any]]:
    path = Path(path)
    with _open_text(path) as handle:
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


# ----------------------------------------------------------------------- metadata


def _text(value: Any) -> str | None:
    """A metadata value as prompt text: lists joined with ", "; empty and OMDb's N/A: None."""
    if isinstance(value, list):
        value = ", ".join(t for t in (_text(v) for v in value) if t)
    if value is None or isinstance(value, bool):
        return None
    text = " ".join(str(value).split())
    return None if text in ("", "N/A") else text


def _checked_field(name: str, value: Any, where: str) -> str | None:
    """``value`` of metadata field ``name`` as prompt text; MetadataError when unusable."""
    if value is None:
        return None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return _text(value)  # numbers: a year, or a title such as 1917
    if name in LIST_FIELDS and isinstance(value, list) and all(
            isinstance(v, str) for v in value):
        return _text(value)
    wanted = "text or a list of texts" if name in LIST_FIELDS else "text or a whole number"
    raise MetadataError(f"{where}: field {name!r}: expected {wanted}, got {value!r}")


def _metadata_line(data: Any, where: str) -> tuple[str, dict[str, str]]:
    """``(asin, {field: text})`` of one parsed metadata line."""
    if not isinstance(data, dict):
        raise MetadataError(f"{where}: expected a JSON object, got {type(data).__name__}")
    keys: dict[str, str] = {}
    for key in data:
        name = str(key).lower()
        if name in ("asin", *META_FIELDS):
            if name in keys:
                raise MetadataError(f"{where}: field {name!r}: given twice "
                                    f"({keys[name]!r} and {key!r})")
            keys[name] = key
    asin = data.get(keys.get("asin", "asin"))
    if isinstance(asin, bool) or not isinstance(asin, (str, int)) or not str(asin).strip():
        got = "missing" if asin is None else f"got {asin!r}"
        raise MetadataError(f"{where}: field 'asin': the Amazon product id the reviews carry "
                            f"is required ({got})")
    fields = {name: _checked_field(name, data[key], where)
              for name, key in keys.items() if name != "asin"}
    return str(asin).strip(), {k: v for k, v in fields.items() if v is not None}


def load_metadata(path: str | Path | None, report: BuildReport) -> dict[str, dict[str, str]]:
    """``{asin: {field: text}}`` from a metadata JSON-lines file; empty when ``path`` is None.

    The format is in the module docstring. Any bad line raises :class:`MetadataError`
    naming the file, the line and the field: a metadata file is small and hand-made,
    and a silently skipped line would leave its movie with a bare product id.
    """
    if path is None:
        return {}
    path = Path(path)
    movies: dict[str, dict[str, str]] = {}
    lines: dict[str, int] = {}
    with _open_text(path) as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise MetadataError(f"{where}: invalid JSON: {error}") from None
            asin, fields = _metadata_line(data, where)
            if asin in lines:
                raise MetadataError(f"{where}: field 'asin': {asin!r} is already described on "
                                    f"line {lines[asin]}")
            lines[asin] = n
            movies[asin] = fields
    report.counts["metadata lines"] = len(movies)
    return movies


def movie_prompt(asin: str, meta: Mapping[str, Any] | None) -> str:
    """The prompt of a movie, shaped as the paper's (``Heat, 1995, Michael Mann (Genre:
    Crime, Drama). {plot}``); a movie without metadata gets a prompt that says only its
    Amazon product id is known."""
    fields = {name: _text((meta or {}).get(name)) for name in META_FIELDS}
    if not any(fields.values()):
        return f"Write a review of the movie with Amazon product id {asin}."
    title = fields["title"] or f"Amazon product {asin}"
    head = ", ".join(v for v in (title, fields["year"], fields["director"]) if v)
    if fields["genre"]:
        head += f" (Genre: {fields['genre']})"
    return f"{head}. {fields['plot']}" if fields["plot"] else f"{head}."


# ----------------------------------------------------------------------- reviews


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
    asin: str, reviews: list[dict[str, Any]], prompt: str, config: ReviewsConfig,
    rng: random.Random,
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
            group=config.group, question_id=asin,
            metadata={"asin": asin, "chosen_summary": review.get("summary"),
                      "rejected_summary": rejected.get("summary"),
                      "rating_counts": [counts.get(r, 0) for r in RATINGS],
                      # Training with sequence_format auto writes {rating}{review} from this.
                      FORMAT_METADATA_KEY: config.sequence_format},
        ))
    return examples


def _report_bare_prompts(report: BuildReport, config: ReviewsConfig,
                        metadata: Mapping[str, Any], kept: set[str | None]) -> None:
    """Warn (card and log) about kept movies whose prompt names only the product id."""
    bare = sorted(a for a in kept if a is not None and a not in metadata)
    report.counts["kept movies without metadata"] = len(bare)
    if not bare:
        return
    if config.metadata is None:
        report.warn(f"no metadata file: the prompts of all {len(bare)} movies name only the "
                    f"Amazon product id; to describe them as the paper does, {METADATA_HINT}")
    else:
        report.warn(f"{len(bare)} of {len(kept)} movies have no line in {config.metadata}: "
                    "their prompts name only the Amazon product id")
        report.details["movies without metadata"] = bare


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
                                        config, rng))
    report.counts["movies"] = len(movies)
    report.counts["movies with metadata"] = sum(a in metadata for a in movies)
    report.counts["pairs"] = len(examples)
    _report_bare_prompts(report, config, metadata, {e.question_id for e in examples})
    report.details["skipped movies (too few reviews)"] = few
    if single:
        report.details["skipped movies (one rating only)"] = single
    splits = split_examples(examples, by=config.split_by, fractions=config.fractions,
                            seed=config.seed)
    return BuildResult(splits, report, config.split_by)
