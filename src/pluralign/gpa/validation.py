"""Rubric validation on held-out conversations, without a judge.

A rubric item was mined from negative user reactions (a correction, a
rephrase request, a complaint, "shorter please") to answers of one kind. If
the item is real, answers that violate it should draw those reactions more
often than answers that follow it, in conversations mining never saw. For
every (assistant answer, next user message) pair of a group's held-out
conversations, the answer is measured against the item (no model: word
counts, structure, examples, script) and the reaction is read with the same
cue patterns the classify stage uses. The statistic is

    lift = P(negative reaction | item violated) / P(negative reaction | item followed)

with a Katz log-ratio interval. The same statistic on the other groups'
held-out conversations says whether the item belongs to its group or is a
preference everyone shares. Turns of one conversation are not independent,
so the interval is optimistic when conversations are long.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.stats import norm

from pluralign.gpa.attributes import measure
from pluralign.gpa.signals import cue_label

#: Reactions that reject the answer before them (feedback_positive and none do not).
NEGATIVE_LABELS = ("correction", "rephrase", "feedback_negative", "more", "less")


def measured_adherence(item: dict[str, Any], response: str, prompt: str | None = None
                       ) -> bool | None:
    """Whether ``response`` follows a measurable item; None when the item is not measurable.

    Language items need the user's message (``prompt``): the answer follows "answer in the
    user's language" when its share of Latin letters is close to the message's.
    """
    f = measure(response)
    structure = f["bullets"] + f["headings"]
    checks = {("length", "more"): f["words"] >= 80, ("length", "less"): f["words"] <= 60,
              ("format", "more"): structure >= 2, ("format", "less"): structure == 0,
              ("examples", "more"): f["examples"] >= 1, ("examples", "less"): f["examples"] == 0,
              ("language", "less"): f["latin_share"] >= 0.9}
    if prompt is not None:
        checks[("language", "more")] = abs(f["latin_share"]
                                           - measure(prompt)["latin_share"]) < 0.5
    return checks.get((item["attribute"], item["direction"]))


def lift_interval(negative_violated: int, violated: int, negative_followed: int,
                  followed: int, confidence: float = 0.95) -> dict[str, Any]:
    """Risk ratio of a negative reaction, violated vs followed, with a Katz log interval.

    This is scipy's ``relative_risk`` interval, plus the Haldane-Anscombe correction
    (+0.5 to each count) when a reaction count is zero: scipy leaves that side of the
    interval undefined, and a handful of held-out turns often has a zero.
    """
    counts = {"negative_violated": negative_violated, "violated": violated,
              "negative_followed": negative_followed, "followed": followed}
    if min(counts.values()) < 0 or negative_violated > violated \
            or negative_followed > followed:
        raise ValueError(f"lift_interval: counts must be 0 <= negatives <= totals, got {counts}")
    if not 0 < confidence < 1:
        raise ValueError(f"lift_interval: confidence must be in (0, 1), got {confidence}")
    if violated == 0 or followed == 0:
        return {**counts, "lift": None, "low": None, "high": None, "corrected": False}
    a, n1, c, n2 = negative_violated, violated, negative_followed, followed
    corrected = a == 0 or c == 0
    if corrected:
        a, n1, c, n2 = a + 0.5, n1 + 1, c + 0.5, n2 + 1
    lift = (a / n1) / (c / n2)
    spread = norm.ppf(0.5 + confidence / 2) * math.sqrt(1 / a - 1 / n1 + 1 / c - 1 / n2)
    return {**counts, "lift": lift, "low": lift * math.exp(-spread),
            "high": lift * math.exp(spread), "corrected": corrected}


def heldout_turns(conversations: Iterable[dict[str, Any]]
                  ) -> list[tuple[str, str, str, str]]:
    """(group, user prompt, answer, the user's next message) of held-out conversations."""
    out = []
    for conv in conversations:
        if conv.get("split") != "heldout":
            continue
        messages = conv["messages"]
        for before, answer, after in zip(messages, messages[1:], messages[2:], strict=False):
            if (before["role"], answer["role"], after["role"]) == ("user", "assistant", "user"):
                out.append((conv["group"], before["content"], answer["content"],
                            after["content"]))
    return out


def item_signals(item: dict[str, Any], rules: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The negative reactions the item was mined from (every negative label if none was)."""
    labels = {e["label"] for rule_id in item.get("rules", [])
              for e in rules.get(rule_id, {}).get("evidence", [])}
    mined = tuple(label for label in NEGATIVE_LABELS if label in labels)
    return mined or NEGATIVE_LABELS


def count_reactions(item: dict[str, Any], turns: list[tuple[str, str, str, str]],
                    signals: tuple[str, ...], cue_chars: int) -> dict[str, Any] | None:
    """The item's lift on ``turns``; None when the item cannot be measured without a model."""
    if measured_adherence(item, "", "") is None:  # measurability depends on the item only
        return None
    tally = {True: [0, 0], False: [0, 0]}  # followed? -> [negative reactions, answers]
    for _, prompt, answer, reaction in turns:
        followed = bool(measured_adherence(item, answer, prompt))
        tally[followed][0] += cue_label(reaction, cue_chars)[0] in signals
        tally[followed][1] += 1
    return lift_interval(tally[False][0], tally[False][1], tally[True][0], tally[True][1])


def verdict(own: dict[str, Any] | None, elsewhere: dict[str, Any] | None) -> str:
    """``replicates`` only when the held-out interval lies above 1."""
    if own is None:
        return "not measurable without a judge"
    if own["lift"] is None:
        return "no held-out evidence (no violating or no following answer)"
    if own["low"] <= 1:
        return "does not replicate"
    if elsewhere is not None and elsewhere["lift"] is not None \
            and elsewhere["lift"] >= own["lift"]:
        return "replicates, but not group-specific"
    return "replicates"


def validate_rubrics(rubrics: dict[str, dict[str, Any]], rules: list[dict[str, Any]],
                     conversations: list[dict[str, Any]], cue_chars: int
                     ) -> dict[str, dict[str, Any]]:
    """Item id -> held-out validation (own group's and other groups' lift, verdict)."""
    by_rule = {r["rule_id"]: r for r in rules}
    turns = heldout_turns(conversations)
    out = {}
    for group, rubric in rubrics.items():
        own_turns = [t for t in turns if t[0] == group]
        other_turns = [t for t in turns if t[0] != group]
        for item in rubric["items"]:
            signals = item_signals(item, by_rule)
            own = count_reactions(item, own_turns, signals, cue_chars)
            elsewhere = count_reactions(item, other_turns, signals, cue_chars)
            out[item["item_id"]] = {"signals": list(signals), "own": own,
                                    "elsewhere": elsewhere, "verdict": verdict(own, elsewhere),
                                    "heldout_turns": len(own_turns)}
    return out


def group_fit(rubrics: dict[str, dict[str, Any]], rules: list[dict[str, Any]],
              conversations: list[dict[str, Any]], cue_chars: int
              ) -> dict[str, dict[str, Any]]:
    """Per group, on its held-out turns: median lift of its own items vs other groups' items.

    A rubric that belongs to its group explains that group's reactions better than the
    other groups' rubrics do; ``belongs`` is None where either side has no measurable lift.
    """
    by_rule = {r["rule_id"]: r for r in rules}
    turns = heldout_turns(conversations)
    out = {}
    for group in rubrics:
        mine = [t for t in turns if t[0] == group]
        lifts: dict[bool, list[float]] = {True: [], False: []}
        for owner, rubric in rubrics.items():
            for item in rubric["items"]:
                counted = count_reactions(item, mine, item_signals(item, by_rule), cue_chars)
                if counted is not None and counted["lift"] is not None:
                    lifts[owner == group].append(counted["lift"])
        own, other = (float(np.median(lifts[k])) if lifts[k] else None for k in (True, False))
        out[group] = {"own_items": own, "other_items": other, "own_measured": len(lifts[True]),
                      "other_measured": len(lifts[False]),
                      "belongs": None if own is None or other is None else own > other}
    return out


def describe_fit(fit: dict[str, Any] | None) -> str:
    """One line on whether a group's rubric fits its own held-out conversations best."""
    if fit is None or fit["belongs"] is None:
        return "held-out group fit: not measurable (too few measurable items or turns)"
    verdict = "belongs to this group" if fit["belongs"] else \
        "does not fit this group better than other groups' rubrics"
    return (f"held-out group fit: median lift of its own items {fit['own_items']:.2f} "
            f"({fit['own_measured']}) vs other groups' items {fit['other_items']:.2f} "
            f"({fit['other_measured']}) on this group's held-out turns: {verdict}")


def describe(validation: dict[str, Any] | None) -> str:
    """One line for rubrics.md and evaluation.md."""
    if validation is None:
        return "held-out: not validated"
    own = validation["own"]
    if own is None or own["lift"] is None:
        return f"held-out: {validation['verdict']}"
    text = (f"held-out lift {own['lift']:.2f} [{own['low']:.2f}, {own['high']:.2f}] "
            f"({own['negative_violated']}/{own['violated']} violating vs "
            f"{own['negative_followed']}/{own['followed']} following answers drew "
            f"{'/'.join(validation['signals'])})")
    other = validation["elsewhere"]
    if other is not None and other["lift"] is not None:
        text += f", other groups {other['lift']:.2f}"
    return f"{text}: {validation['verdict']}"
