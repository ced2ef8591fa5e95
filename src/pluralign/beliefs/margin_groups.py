"""Reward margins split into the GDPO paper's subsets of pairs (training logs and evaluation)."""

from __future__ import annotations

import torch

from pluralign.data.records import MARGIN_GROUPS


def split_by_margin_group(values: torch.Tensor, groups: torch.Tensor) -> dict[str, list[float]]:
    """Per-pair values (reward margins) split into the GDPO paper's subsets of pairs.

    ``groups`` holds each pair's index in :data:`MARGIN_GROUPS` (majority, lowest
    minority, others; see :func:`pluralign.data.records.margin_group`). Besides
    the three subsets, ``minority`` is every pair that is not majority (lowest
    minority and others together): the split metrics.jsonl logged before the
    three-way one, kept under its name for readers of earlier runs.
    """
    groups = groups.long().to(values.device)
    split = {name: values[groups == code].float().tolist()
             for code, name in enumerate(MARGIN_GROUPS)}
    split["minority"] = values[groups != MARGIN_GROUPS.index("majority")].float().tolist()
    return split

