"""What a build did, in numbers, and the dataset card written next to its files.

Every builder fills a :class:`BuildReport` as it goes: rows read, rows
skipped and why, LLM failures, unparsable LLM answers, options no map
covers. Nothing is dropped without a count, and the card (``README.md`` in
the output folder) shows all of it together with the source, groups, split
method and seed, so a reader knows what a data folder holds.

The card opens with the Hugging Face YAML metadata block: its ``configs``
entry names the file of each split (``eval.jsonl`` is the ``validation``
split), so ``datasets.load_dataset(folder)`` and the Hub read three correct
splits, and the Hub shows license, language, size and tags.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pluralign.data.records import GroupPreferenceExample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptionMapComparison:
    """How a build's option map differs from pluralign's default map.

    ``differences`` are ``(option, class in this map, class in the default,
    rows of this build carrying the option)`` for every option both maps cover
    with different classes; options only one map covers are counted.
    """

    differences: tuple[tuple[str, int, int, int], ...] = ()
    only_selected: int = 0  #: options only this map covers
    only_default: int = 0  #: options only the default map covers
    is_default: bool = False  #: the build used the default map itself

    def to_dict(self) -> dict[str, Any]:
        return {"is_default": self.is_default, "only_selected": self.only_selected,
                "only_default": self.only_default,
                "differences": [{"option": o, "class": c, "default_class": d, "rows": n}
                                for o, c, d, n in self.differences]}


@dataclass
class BuildReport:
    """Counters and notes of one build; ``skipped`` maps a reason to how many rows."""

    builder: str
    source: str
    seed: int
    counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    unmapped_options: Counter[str] = field(default_factory=Counter)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    option_map_comparison: OptionMapComparison | None = None

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def warn(self, message: str) -> None:
        """Record a warning for the card and log it now."""
        self.warnings.append(message)
        logger.warning(message)

    def to_dict(self) -> dict[str, Any]:
        comparison = self.option_map_comparison
        return {
            "builder": self.builder,
            "source": self.source,
            "seed": self.seed,
            "counts": dict(self.counts),
            "skipped": dict(self.skipped),
            "unmapped_options": dict(self.unmapped_options.most_common()),
            "details": self.details,
            "warnings": list(self.warnings),
            **({"option_map_comparison": comparison.to_dict()} if comparison else {}),
        }


def _table(rows: Sequence[tuple[Any, ...]], header: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _option_map_lines(comparison: OptionMapComparison) -> list[str]:
    """The card's section on where the build's option map differs from the default map."""
    if comparison.is_default:
        return ["", "## Option map vs the default", "", "This build used the default map."]
    lines = ["", f"## Option map vs the default ({len(comparison.differences)} differences)",
             "", "Options both maps cover that this map puts in another class than "
             f"pluralign's default map. Not listed: {comparison.only_selected} options only "
             f"this map covers, {comparison.only_default} only the default covers.", ""]
    rows = [(o, c, d, n) for o, c, d, n in comparison.differences]
    return lines + (_table(rows, ("option", "class here", "class in default",
                                  "rows of this build")) if rows else
                    ["None: on the options both cover, the two maps agree."])


def _split_lines(splits: Mapping[str, Sequence[GroupPreferenceExample]]) -> list[str]:
    rows = []
    for name, examples in splits.items():
        groups = Counter(e.group for e in examples)
        questions = len({e.question_id or e.prompt for e in examples})
        shown = ", ".join(f"{g} {n}" for g, n in groups.most_common())
        rows.append((name, len(examples), questions, shown or "-"))
    return _table(rows, ("split", "examples", "questions", "examples per group"))


#: Licenses pluralign knows for a source (the Hub id a build read): a build inherits it.
#: GlobalOpinionQA's Hub card says CC BY-NC-SA 4.0, which binds derived data too.
SOURCE_LICENSES = {"Anthropic/llm_global_opinions": "cc-by-nc-sa-4.0"}
#: Builders whose records are pluralign's own text, under pluralign's license.
BUILDER_LICENSES = {"demo": "apache-2.0"}
#: pluralign's builders read and write English only (English request templates and
#: parsers; GlobalOpinionQA, the Amazon reviews, HH-RLHF and the GDPO sets are English).
#: A plugin's builder gets no language: pluralign cannot know it.
ENGLISH_BUILDERS = frozenset({"opinions", "reviews", "mmoqa", "mine", "demo"})
#: Tags every build carries on the Hub.
HUB_TAGS = ("pluralistic-alignment", "preference", "group-preference", "pluralign")
#: The Hub's size buckets: (exclusive upper bound, label); the last one is open.
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                    (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))


def card_license(report: BuildReport) -> str | None:
    """The license the build inherits from its source or builder; None when unknown."""
    return SOURCE_LICENSES.get(report.source) or BUILDER_LICENSES.get(report.builder)


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` label for ``n`` rows."""
    return next((label for bound, label in _SIZE_CATEGORIES if n < bound), "n>10M")


def card_metadata(report: BuildReport, splits: Mapping[str, Sequence[GroupPreferenceExample]],
                  title: str) -> dict[str, Any]:
    """The card's YAML metadata: Hub fields, and ``configs`` naming each split's file.

    Only what pluralign knows goes in: no license for a source it cannot vouch for.
    """
    from pluralign.data.builders.splits import hub_data_files

    meta: dict[str, Any] = {"pretty_name": title}
    license_id = card_license(report)
    if license_id:
        meta["license"] = license_id
    if report.builder in ENGLISH_BUILDERS:
        meta["language"] = ["en"]
    meta["task_categories"] = ["text-generation"]
    meta["size_categories"] = [size_category(sum(len(v) for v in splits.values()))]
    meta["tags"] = [*HUB_TAGS, report.builder]
    files = hub_data_files(splits)
    if files:  # an empty build: no configs, as a config without data breaks load_dataset
        meta["configs"] = [{"config_name": "default", "data_files": files}]
    return meta


def _front_matter(meta: Mapping[str, Any]) -> list[str]:
    """``---`` YAML ``---`` lines; safe_dump quotes titles with colons or quotes."""
    text = yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True, width=1000)
    return ["---", *text.rstrip("\n").splitlines(), "---", ""]


def _hub_lines(meta: Mapping[str, Any]) -> list[str]:
    """The card's prose on the YAML block: which file is which split, and the license."""
    configs = meta.get("configs") or [{"data_files": []}]
    files = ", ".join(f"`{f['path']}` as `{f['split']}`" for f in configs[0]["data_files"])
    lines = ["", "`datasets.load_dataset(\"<this folder>\")` reads "
             f"{files or 'no split (every split is empty)'}: the `configs` entry of the YAML "
             "block above names each split's file (an empty split is not listed)."]
    if "license" not in meta:
        lines.append("No license is set: pluralign does not know the source's terms; add "
                     "`license:` to the YAML block before publishing.")
    return lines


def write_card(
    folder: str | Path,
    report: BuildReport,
    splits: Mapping[str, Sequence[GroupPreferenceExample]],
    *,
    title: str,
    description: str,
    split_method: str,
    option_map: str | None = None,
) -> Path:
    """Write ``README.md`` (the dataset card, YAML metadata first) and ``build_report.json``
    into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups = sorted({e.group for examples in splits.values() for e in examples})
    meta = card_metadata(report, splits, title)
    lines = [*_front_matter(meta), f"# {title}", "", description, "",
             f"- builder: `{report.builder}` (pluralign)", f"- source: `{report.source}`",
             f"- groups: {', '.join(groups) or '(none)'}", f"- seed: {report.seed}",
             f"- split method: {split_method}"]
    if option_map is not None:
        lines.append(f"- option map: {option_map}")  # Markdown: a name or a `path`
    lines += ["", "## Splits", "", *_split_lines(splits), *_hub_lines(meta), "", "## Counts",
              ""]
    lines += _table(sorted(report.counts.items()), ("what", "count")) if report.counts else [
        "(none)"]
    lines += ["", "## Skipped (never silently dropped)", ""]
    lines += _table(sorted(report.skipped.items()), ("reason", "count")) if report.skipped else [
        "Nothing was skipped."]
    if report.option_map_comparison is not None:
        lines += _option_map_lines(report.option_map_comparison)
    if option_map is not None:
        unmapped = report.unmapped_options
        lines += ["", f"## Unmapped options ({len(unmapped)})", ""]
        lines += (_table(unmapped.most_common(), ("option", "rows")) if unmapped
                  else ["Every option was mapped."])
    for key, value in report.details.items():
        lines += ["", f"## {key}", "", "```", json.dumps(value, indent=1, ensure_ascii=False),
                  "```"]
    if report.warnings:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in report.warnings]]
    card = folder / "README.md"
    card.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "build_report.json").write_text(
        json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return card


@dataclass
class BuildResult:
    """What a builder returns: the records by split, and its report."""

    splits: dict[str, list[GroupPreferenceExample]]
    report: BuildReport
    split_method: str = "question"
    option_map: str | None = None  #: Markdown, e.g. from option_rules.describe_option_map

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.splits.values())


def save_build(result: BuildResult, folder: str | Path, *, title: str, description: str
               ) -> dict[str, Path]:
    """Write ``train/eval/test.jsonl`` and the card into ``folder``; returns the file paths.

    The card's YAML ``configs`` maps ``eval.jsonl`` to the Hub's ``validation`` split, so
    ``datasets.load_dataset(folder)`` gives train / validation / test.
    """
    from pluralign.data.builders.splits import write_splits

    paths = write_splits(folder, result.splits)
    method = {"question": "by question (no question in two splits)",
              "example": "by example (a question may appear in several splits)"}.get(
        result.split_method, result.split_method)
    paths["card"] = write_card(folder, result.report, result.splits, title=title,
                               description=description, split_method=method,
                               option_map=result.option_map)
    return paths
