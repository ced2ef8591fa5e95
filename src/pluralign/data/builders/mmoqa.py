"""The GDPO paper's released dialogue sets (``Binwei01/mmoqa_*``, ``movie_review``).

Each row is already a pair: a prompt, accepted and rejected responses with
their class ids, and the question's options, probabilities and option ->
class map. Rows become :class:`GroupPreferenceExample` records (options of
one class pool their probability); the ``context`` column of the released
in-context fine-tuning (ICF) rows is kept as the record's context. Hub ids
load through ``datasets`` and keep the hub's splits; a local JSONL/JSON file
with the same columns goes through the same conversion and is split here.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pluralign.beliefs.formats import FORMAT_METADATA_KEY
from pluralign.config import YamlConfig
from pluralign.data.builders.cards import BuildReport, BuildResult
from pluralign.data.builders.opinions import question_id
from pluralign.data.builders.splits import SPLIT_METHODS, split_examples
from pluralign.data.records import Belief, GroupPreferenceExample, RecordError
from pluralign.registry import BUILDERS

HUB_IDS = tuple(f"Binwei01/{name}{size}" for name in ("mmoqa_usa", "mmoqa_pk", "mmoqa_sa",
                                                      "movie_review") for size in ("", "_large"))
#: Group names of the paper's sets (the country the dialogues were written for).
GROUPS = {"mmoqa_usa": "United States", "mmoqa_pk": "Pakistan", "mmoqa_sa": "South Africa",
          "movie_review": "movie-reviewers"}
#: Sets whose records name a sequence format (``metadata["sequence_format"]``), which
#: training with ``sequence_format: auto`` follows: the review set is the paper's
#: ``{rating}{review}`` task, trained and evaluated without a description.
SET_FORMATS = {"movie_review": "reviews"}
_HUB_SPLITS = {"train": "train", "validation": "eval", "valid": "eval", "eval": "eval",
               "dev": "eval", "test": "test"}


@dataclass
class MmoqaConfig(YamlConfig):
    """Which released GDPO set to convert, and how to split a local copy."""

    source: str = field(
        default="Binwei01/mmoqa_usa",
        metadata={"help": f"A Hub id ({', '.join(HUB_IDS)}) or a local JSONL/JSON file with "
                          "the same columns."},
    )
    group: str | None = field(
        default=None, metadata={"help": "Group name; None: from the dataset id."}
    )
    split_by: str = field(
        default="question",
        metadata={"help": "Local files: question or example. Hub ids keep the hub's splits."},
    )
    fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "Local files: fractions."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the split of a local file."})

    def __post_init__(self) -> None:
        if self.split_by not in SPLIT_METHODS:
            raise ValueError(f"split_by: must be one of {SPLIT_METHODS}, got {self.split_by!r}")


def _value(raw: Any) -> Any:
    """Columns may hold a list/dict or its string form (JSON or a Python literal)."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return ast.literal_eval(raw)


def _class_of(options: list[str], options_map: Any) -> list[int]:
    if options_map in (None, "", [], {}):
        return list(range(len(options)))  # no map: each option is its own class, by position
    mapping = _value(options_map)
    if isinstance(mapping, Mapping):
        return [int(mapping[o]) for o in options]
    classes = [int(c) for c in mapping]
    if len(classes) != len(options):
        raise ValueError(f"options_map has {len(classes)} entries for {len(options)} options")
    return classes


def convert_row(row: Mapping[str, Any], group: str, sequence_format: str | None = None
                ) -> GroupPreferenceExample:
    """One released row -> one record; raises ``ValueError``/``KeyError`` naming the problem.

    ``sequence_format`` (None: none) is the format the record names for training."""
    options = [str(o) for o in _value(row["options"])]
    probs = [float(p) for p in _value(row["probabilities"])]
    if len(options) != len(probs):
        raise ValueError(f"{len(options)} options but {len(probs)} probabilities")
    classes = _class_of(options, row.get("options_map"))
    pooled: dict[int, float] = {}
    texts: dict[int, list[str]] = {}
    for option, cls, prob in zip(options, classes, probs, strict=True):
        pooled[cls] = pooled.get(cls, 0.0) + prob
        texts.setdefault(cls, []).append(option)
    ids = sorted(pooled)
    question = str(row.get("question") or row["prompt"])
    return GroupPreferenceExample(
        prompt=str(row["prompt"]),
        beliefs=[Belief(c, " / ".join(texts[c])) for c in ids],
        target_distribution=[pooled[c] for c in ids],
        chosen_belief=int(row["accept_choice_id"]),
        rejected_belief=int(row["reject_choice_id"]),
        chosen_response=str(row["accept_response"]),
        rejected_response=str(row["reject_response"]),
        group=group, question_id=question_id(question),
        style=str(row["style"]) if row.get("style") not in (None, "") else None,
        # The released ICF rows' in-context examples, placed before <Q> as the reference code does.
        context=row.get("context"),
        metadata={"question": question, "accept_choice": row.get("accept_choice"),
                  "reject_choice": row.get("reject_choice"),
                  **({FORMAT_METADATA_KEY: sequence_format} if sequence_format else {})},
        renormalize=True,
    )


def convert_rows(
    rows: Iterable[Mapping[str, Any]], group: str, report: BuildReport, where: str,
    sequence_format: str | None = None,
) -> list[GroupPreferenceExample]:
    """Convert rows; a bad row is counted and warned about (``where[i]``), never silently."""
    out = []
    for i, row in enumerate(tqdm(rows, desc=f"mmoqa {where}", unit="row", leave=False,
                                 mininterval=2.0)):
        report.counts["rows read"] += 1
        try:
            out.append(convert_row(row, group, sequence_format))
        except (KeyError, ValueError, TypeError, SyntaxError, RecordError) as error:
            report.skip("row that could not be converted")
            if report.skipped["row that could not be converted"] <= 20:
                report.warn(f"{where}[{i}]: skipped: {type(error).__name__}: {error}")
    return out


def _source_name(source: str) -> str:
    """A local file's name, or the last part of a Hub id."""
    return Path(source).name if Path(source).exists() else source.split("/")[-1]


def _set_of(source: str) -> str | None:
    """The released set a source is (``mmoqa_pk``, ``movie_review``, ...), by its name."""
    return next((key for key in GROUPS if _source_name(source).startswith(key)), None)


def _group_for(source: str) -> str:
    key = _set_of(source)
    return GROUPS[key] if key is not None else _source_name(source).split(".")[0] or "group"


def _local_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else list(data.get("data", []))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@BUILDERS.register("mmoqa")
def build_mmoqa(config: MmoqaConfig) -> BuildResult:
    """The GDPO paper's released sets (mmoqa_usa/pk/sa, movie_review) -> our records."""
    report = BuildReport("mmoqa", config.source, config.seed)
    group = config.group or _group_for(config.source)
    fmt = SET_FORMATS.get(_set_of(config.source) or "")
    path = Path(config.source)
    if path.exists():
        examples = convert_rows(_local_rows(path), group, report, str(path), fmt)
        splits = split_examples(examples, by=config.split_by, fractions=config.fractions,
                                seed=config.seed)
        method = config.split_by
    else:
        from pluralign.data.builders.hub import load_hub_dataset

        # No Hub and no cache -> one line naming the id (HubUnavailableError), no traceback.
        hub = load_hub_dataset(config.source, hint="pass a local JSONL/JSON copy as the source")
        splits = {"train": [], "eval": [], "test": []}
        for name, rows in hub.items():
            target = _HUB_SPLITS.get(name, name)
            splits.setdefault(target, []).extend(
                convert_rows(rows, group, report, f"{config.source}:{name}", fmt))
        method = "the hub's own splits"
    report.counts["records"] = sum(len(v) for v in splits.values())
    return BuildResult(splits, report, method)
