"""KTO's reference point: each row's KL completion comes from another question (issue 16.5)."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import defaultdict

import pytest

from pluralign.beliefs.formats import OPINION_FORMAT
from pluralign.beliefs.tokenize import encode_prompt
from pluralign.data.toy import conflicting_opinions
from pluralign.train.kto import kl_donors, kto_dataset

PHRASINGS = ("{prompt}", "Quick question: {prompt}", "In a survey you are asked: {prompt}")


def phrased_records(n_questions: int, pairs_per_question: int, seed: int = 6):
    """Toy records grouped by question as record files are, each question in three phrasings
    (same ``question_id``); the toy responses name the question's topic."""
    records = conflicting_opinions(n_questions, pairs_per_question, seed=seed)
    return [dataclasses.replace(r, prompt=PHRASINGS[i % len(PHRASINGS)].format(prompt=r.prompt))
            for i, r in enumerate(records)]


def kl_pair_overlaps(data, records, tokenizer) -> tuple[int, int, int]:
    """(KL pairs whose completion answers the row's prompt, ... the row's question,
    undesirable rows whose KL completion is a desirable response of their prompt)."""
    question_of = {tuple(encode_prompt(tokenizer, r.prompt, OPINION_FORMAT)): r.question_id
                   for r in records}
    answers: dict[tuple, set] = defaultdict(set)  # completion -> the prompts it answers
    desirable: dict[tuple, set] = defaultdict(set)  # prompt -> its desirable completions
    for prompt, completion, label in zip(data["prompt_ids"], data["completion_ids"],
                                         data["label"], strict=True):
        answers[tuple(completion)].add(tuple(prompt))
        if label:
            desirable[tuple(prompt)].add(tuple(completion))
    same_prompt = same_question = own_desirable = 0
    for prompt, kl_completion, label in zip(data["prompt_ids"], data["KL_completion_ids"],
                                            data["label"], strict=True):
        prompt, answered = tuple(prompt), answers[tuple(kl_completion)]
        same_prompt += prompt in answered
        same_question += question_of[prompt] in {question_of[p] for p in answered}
        own_desirable += (not label) and tuple(kl_completion) in desirable[prompt]
    return same_prompt, same_question, own_desirable


@pytest.mark.parametrize("batch_size", [2, 4, 8])
def test_no_kl_pair_shares_a_prompt_or_a_question(tiny_lm, batch_size):
    _, tokenizer = tiny_lm
    records = phrased_records(4, 6)
    data = kto_dataset(records, tokenizer, OPINION_FORMAT, pairing="gdpo", batch_size=batch_size)
    assert len(data) == 2 * len(records) and sum(data["label"]) == len(records)
    assert len({tuple(p) for p in data["prompt_ids"]}) == 12  # 4 questions x 3 phrasings
    assert kl_pair_overlaps(data, records, tokenizer) == (0, 0, 0)


def test_batches_mix_questions_and_keep_their_completions_as_kl_set(tiny_lm):
    _, tokenizer = tiny_lm
    data = kto_dataset(phrased_records(4, 6), tokenizer, OPINION_FORMAT, pairing="dpo",
                       batch_size=8)
    completions, kl = data["completion_ids"], data["KL_completion_ids"]
    in_batch = 0
    for start in range(0, len(data), 8):
        block, block_kl = completions[start : start + 8], kl[start : start + 8]
        assert len({tuple(p) for p in data["prompt_ids"][start : start + 8]}) > 1
        in_batch += sorted(block_kl) == sorted(block)
    # A shuffled block of 8 rows from 4 questions almost always has no question over half of
    # it; then its KL completions are its own completions, paired with other prompts.
    assert in_batch >= 5


def test_kl_donors_permute_a_block_where_they_can():
    keys = [(q, q, i // 2) for i, q in enumerate("aabbccab")]
    donors = kl_donors(keys, 4, random.Random(0))
    assert sorted(donors[:4]) == [0, 1, 2, 3] and sorted(donors[4:]) == [4, 5, 6, 7]
    assert all(keys[d][0] != keys[i][0] for i, d in enumerate(donors))


def test_kl_donors_reach_outside_a_block_of_one_question():
    keys = [("a", "a", 0), ("a", "a", 0), ("b", "b", 1), ("b", "b", 1), ("c", "c", 2)]
    donors = kl_donors(keys, 2, random.Random(3))
    assert all(keys[d][0] != keys[i][0] for i, d in enumerate(donors))


def test_single_question_falls_back_to_other_phrasings_then_records(caplog):
    phrasings = [("q", f"phrasing {i % 3}", i // 2) for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="pluralign.train.kto"):
        donors = kl_donors(phrasings, 4, random.Random(0))
    assert all(phrasings[d][1] != phrasings[i][1] for i, d in enumerate(donors))
    assert "hold a single question: KL completions come from other prompts" in caplog.text

    one_prompt = [("q", "p", i // 2) for i in range(6)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pluralign.train.kto"):
        donors = kl_donors(one_prompt, 2, random.Random(0))
    assert all(d // 2 != i // 2 for i, d in enumerate(donors))  # never the row's own record
    assert "hold a single prompt: KL completions come from other records" in caplog.text

    with pytest.raises(ValueError, match="KTO needs at least two records"):
        kl_donors([("q", "p", 0), ("q", "p", 0)], 2, random.Random(0))


def test_kto_dataset_is_deterministic_given_the_seed(tiny_lm):
    _, tokenizer = tiny_lm
    records = phrased_records(3, 4)

    def build(seed: int):
        return kto_dataset(records, tokenizer, OPINION_FORMAT, pairing="gdpo", batch_size=4,
                           seed=seed).to_list()

    assert build(7) == build(7)
    assert build(7) != build(8)


def test_options_after_the_marker_are_refused_by_kto(tiny_lm):
    fmt = dataclasses.replace(OPINION_FORMAT, marker_options_template="({options})")
    with pytest.raises(ValueError, match="gdpo-kto does not support options written after"):
        kto_dataset(conflicting_opinions(2, 2, seed=0), tiny_lm[1], fmt, pairing="gdpo",
                    batch_size=4)
