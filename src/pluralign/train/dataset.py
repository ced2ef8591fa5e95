"""Records -> tokenised ``datasets.Dataset`` for each trainer family.

Offsets come from :mod:`pluralign.beliefs.tokenize` at tokenisation time; this
module only lays them out in the columns the trainers read.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from pluralign.beliefs.formats import SequenceFormat
from pluralign.beliefs.tokenize import build_sequence, encode_prompt, tokenize_example
from pluralign.data.records import MARGIN_GROUPS, GroupPreferenceExample, group_prompt_key


def _span_length(span: tuple[int, int]) -> int:
    return span[1] - span[0]


def preference_rows(
    records: Sequence[GroupPreferenceExample], tokenizer: Any, fmt: SequenceFormat, *,
    pairing: str,
) -> list[dict[str, Any]]:
    """One row per record: TRL's prompt/chosen/rejected ids plus the belief columns."""
    rows = []
    for record in records:
        pair = tokenize_example(record, tokenizer, fmt, pairing=pairing)
        prompt_length = pair["chosen"]["prompt_length"]
        rows.append({
            "prompt_ids": pair["prompt_input_ids"],
            "chosen_ids": pair["chosen"]["input_ids"][prompt_length:],
            "rejected_ids": pair["rejected"]["input_ids"][prompt_length:],
            "chosen_belief_len": _span_length(pair["chosen"]["belief_span"]),
            "rejected_belief_len": _span_length(pair["rejected"]["belief_span"]),
            # Given options after the marker (marker-options format; 0 elsewhere): the same
            # tokens in both sequences, read by no loss.
            "options_len": _span_length(pair["chosen"]["options_span"]),
            "belief_token_ids": pair["belief_token_ids"],
            "target_probs": pair["target_distribution"],
            "margin_group": MARGIN_GROUPS.index(pair["margin_group"]),
        })
    return rows


def preference_dataset(
    records: Sequence[GroupPreferenceExample], tokenizer: Any, fmt: SequenceFormat, *,
    pairing: str,
) -> Dataset:
    """Dataset for :class:`pluralign.train.preference.GDPOTrainer`."""
    return Dataset.from_list(preference_rows(records, tokenizer, fmt, pairing=pairing))


def uniform_belief_records(
    records: Sequence[GroupPreferenceExample], seed: int, *, by_group: bool = False
) -> list[tuple[GroupPreferenceExample, int, str]]:
    """For each record, an accepted belief drawn uniformly among those with a response.

    The candidates of a prompt are every (belief, response) that appears as a
    chosen or rejected side of any record with that prompt (of its group, with
    ``by_group``: a prompt that names its group); this is the paper's Uniform
    SFT data built from the same responses.
    """
    candidates: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    for record in records:
        key = group_prompt_key(record, by_group=by_group)
        candidates[key].setdefault(record.chosen_belief, record.chosen_response)
        candidates[key].setdefault(record.rejected_belief, record.rejected_response)
    rng = random.Random(seed)
    drawn = []
    for record in records:
        options = sorted(candidates[group_prompt_key(record, by_group=by_group)].items())
        class_id, response = options[rng.randrange(len(options))]
        drawn.append((record, class_id, response))
    return drawn


def sft_dataset(
    records: Sequence[GroupPreferenceExample], tokenizer: Any, fmt: SequenceFormat, *,
    uniform_beliefs: bool = False, seed: int = 0,
) -> Dataset:
    """``input_ids``/``labels`` of belief + response after the prompt (prompt masked)."""
    if uniform_beliefs:
        items = uniform_belief_records(records, seed, by_group=fmt.names_group)
    else:
        items = [(r, r.chosen_belief, r.chosen_response) for r in records]
    rows = []
    for record, class_id, response in items:
        prompt_ids = encode_prompt(tokenizer, record.prompt, fmt, context=record.context,
                                   beliefs=record.beliefs, group=record.group)
        belief = record.belief(class_id)
        sequence = build_sequence(tokenizer, prompt_ids, class_id, belief.description, response,
                                  fmt, beliefs=record.beliefs)
        rows.append({"input_ids": sequence["input_ids"], "labels": sequence["labels"]})
    return Dataset.from_list(rows)


def belief_eval_inputs(
    records: Sequence[GroupPreferenceExample], tokenizer: Any, fmt: SequenceFormat
) -> dict[str, list[Any]]:
    """One entry per distinct prompt (per group and prompt where the format names the group,
    so two groups' targets for one wording are both read): prompt ids, belief token ids,
    target p*."""
    seen: set[tuple[str, str]] = set()
    out: dict[str, list[Any]] = {"prompt": [], "prompt_ids": [], "belief_token_ids": [],
                                 "target_probs": []}
    for record in records:
        key = group_prompt_key(record, by_group=fmt.names_group)
        if key in seen:
            continue
        seen.add(key)
        pair = tokenize_example(record, tokenizer, fmt, pairing="gdpo")
        out["prompt"].append(record.prompt)
        out["prompt_ids"].append(pair["prompt_input_ids"])
        out["belief_token_ids"].append(pair["belief_token_ids"])
        out["target_probs"].append(pair["target_distribution"])
    return out
