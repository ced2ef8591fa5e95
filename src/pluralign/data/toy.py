"""A small synthetic opinion dataset with conflicting pairs, written by pluralign.

Every question has a group distribution over a few stances; pairs are drawn
as the GDPO paper draws them (accepted belief sampled from ``p*``, rejected
uniformly from the other beliefs), so the same prompt carries pairs that
prefer opposite answers. Used by tests, the quick demo and smoke runs; it
needs no download and no LLM.
"""

from __future__ import annotations

import random

from pluralign.data.records import Belief, GroupPreferenceExample

TOPICS = (
    "stricter limits on air pollution", "a four-day working week", "more public transport",
    "raising the minimum wage", "nuclear power", "school uniforms", "a tax on sugary drinks",
    "remote work for public servants", "building more housing in cities", "free university",
    "banning phones in classrooms", "a national service year", "more bicycle lanes",
    "lowering the voting age to 16", "daylight saving time", "a ban on private jets",
)
STANCES = (
    Belief(1, "Strongly oppose"),
    Belief(2, "Somewhat oppose"),
    Belief(4, "Somewhat support"),
    Belief(5, "Strongly support"),
)
RESPONSES = {
    1: "I am firmly against {topic}; the costs are far too high.",
    2: "I lean against {topic}, though I see some merit in it.",
    4: "I lean towards {topic}, with a few reservations.",
    5: "I fully support {topic}; it is clearly worth doing.",
}


def _distribution(rng: random.Random, k: int) -> list[float]:
    weights = [rng.gammavariate(0.8, 1.0) + 0.02 for _ in range(k)]
    total = sum(weights)
    probs = [round(w / total, 4) for w in weights]
    probs[-1] = round(1.0 - sum(probs[:-1]), 4)
    return probs


def conflicting_opinions(
    n_questions: int = 8, pairs_per_question: int = 8, *, seed: int = 0, group: str = "Toyland"
) -> list[GroupPreferenceExample]:
    """``n_questions x pairs_per_question`` records with group-distributed beliefs."""
    if not 1 <= n_questions <= len(TOPICS):
        raise ValueError(f"n_questions must be between 1 and {len(TOPICS)}, got {n_questions}")
    rng = random.Random(seed)
    records = []
    for q, topic in enumerate(TOPICS[:n_questions]):
        probs = _distribution(rng, len(STANCES))
        ids = [b.class_id for b in STANCES]
        for _ in range(pairs_per_question):
            chosen = rng.choices(ids, weights=probs)[0]
            rejected = rng.choice([c for c in ids if c != chosen])
            records.append(GroupPreferenceExample(
                prompt=f"What do you think about {topic}?",
                beliefs=STANCES,
                target_distribution=tuple(probs),
                chosen_belief=chosen,
                rejected_belief=rejected,
                chosen_response=RESPONSES[chosen].format(topic=topic),
                rejected_response=RESPONSES[rejected].format(topic=topic),
                group=group,
                question_id=f"toy-{q}",
            ))
    return records
