"""Seeded train/eval/test splits, by question (default) or by example.

Splitting by question keeps every prompt of a question (all its styles and
pairs, in every group) in one split, so a test question was never seen in
training; splitting by example is the looser option some baselines use.

The files keep pluralign's names (``eval.jsonl``: every command, benchmark and
README line reads it), while the Hugging Face split names are ``train`` /
``validation`` / ``test``: :func:`hub_data_files` maps one onto the other for
the card's YAML ``configs`` block, which is what ``datasets.load_dataset(folder)``
follows (without it, ``datasets`` guesses from file names and folds
``eval.jsonl`` into ``test``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from pluralign.data.records import GroupPreferenceExample, write_examples

SPLIT_NAMES = ("train", "eval", "test")
SPLIT_METHODS = ("question", "example")
#: pluralign split name -> Hugging Face split name, where they differ.
HUB_SPLIT_NAMES = {"eval": "validation"}


def split_file_name(split: str) -> str:
    """The file a split is written to: ``<split>.jsonl``."""
    return f"{split}.jsonl"


def hub_split_name(split: str) -> str:
    """The split's name on the Hugging Face Hub (``eval`` -> ``validation``)."""
    return HUB_SPLIT_NAMES.get(split, split)


def hub_data_files(splits: Mapping[str, Sequence[object]]) -> list[dict[str, str]]:
    """``[{"split": hub name, "path": file}, ...]`` for the card's ``configs`` block.

    Empty splits are left out: ``datasets`` refuses a listed split with no rows
    ("corresponds to no data"), so listing one would break ``load_dataset``.
    """
    return [{"split": hub_split_name(name), "path": split_file_name(name)}
            for name, examples in splits.items() if len(examples)]


def _sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer sizes for ``n`` items; eval/test get at least one each when n allows it."""
    eval_n = round(n * fractions[1])
    test_n = round(n * fractions[2])
    if n >= 3:
        eval_n = max(eval_n, 1) if fractions[1] > 0 else 0
        test_n = max(test_n, 1) if fractions[2] > 0 else 0
    train_n = max(n - eval_n - test_n, 0)
    return [train_n, eval_n, test_n]


def split_examples(
    examples: Sequence[GroupPreferenceExample],
    *,
    by: str = "question",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, list[GroupPreferenceExample]]:
    """``{"train": [...], "eval": [...], "test": [...]}``, shuffled with ``seed``."""
    if by not in SPLIT_METHODS:
        raise ValueError(f"split by must be one of {SPLIT_METHODS}, got {by!r}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    rng = random.Random(seed)
    if by == "example":
        order = list(range(len(examples)))
        rng.shuffle(order)
        sizes = _sizes(len(order), fractions)
        bounds = [0, sizes[0], sizes[0] + sizes[1], len(order)]
        return {name: [examples[i] for i in order[bounds[k]:bounds[k + 1]]]
                for k, name in enumerate(SPLIT_NAMES)}
    keys = sorted({e.question_id or e.prompt for e in examples})
    rng.shuffle(keys)
    sizes = _sizes(len(keys), fractions)
    where: dict[str, str] = {}
    start = 0
    for name, size in zip(SPLIT_NAMES, sizes, strict=True):
        for key in keys[start:start + size]:
            where[key] = name
        start += size
    out: dict[str, list[GroupPreferenceExample]] = {name: [] for name in SPLIT_NAMES}
    for example in examples:
        out[where[example.question_id or example.prompt]].append(example)
    return out


def write_splits(
    folder: str | Path, splits: Mapping[str, Sequence[GroupPreferenceExample]]
) -> dict[str, Path]:
    """Write ``<split>.jsonl`` for every split; returns the paths."""
    folder = Path(folder)
    paths = {}
    for name, examples in splits.items():
        paths[name] = folder / split_file_name(name)
        write_examples(paths[name], examples)
    return paths
