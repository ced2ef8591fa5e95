"""What an evaluation's numbers can be trusted for, decided before they are shown.

A judge that gives the same verdict (nearly) every time, or that is the
bundled 135M model, produces win rates that say nothing about the answers.
Its win rates are then reported as unusable rather than as results, and the
report leads with the judge-free evidence: measured adherence and the rubric
items' held-out validation.
"""

from __future__ import annotations

from typing import Any

from pluralign.gpa.config import GPAConfig
from pluralign.gpa.validation import describe, describe_fit
from pluralign.models.loading import DEFAULT_MODEL

#: A judge whose most common verdict exceeds this share of its decided verdicts is one-sided.
ONE_SIDED_SHARE = 0.9


def judge_is_bundled(config: GPAConfig) -> bool:
    """Whether the judge is the bundled small model (too weak to judge, whatever it says)."""
    kind = "openai" if config.judge_base_url else config.llm.backend
    return kind == "hf" and (config.judge_model or config.llm.model) == DEFAULT_MODEL


def bundled_judge_problem() -> str:
    """Why the bundled model's verdicts are no result, whatever they are."""
    return f"the judge is the bundled {DEFAULT_MODEL} model, too small to compare answers"


def judge_problems(verdicts: dict[str, int], bundled: bool) -> list[str]:
    """Why the judge's win rates are unusable (an empty list: they are usable).

    ``verdicts`` counts the judge's decided answers ("A", "B"); each pair is asked in both
    orders, so a judge that reads the answers says A about as often as B.
    """
    problems = []
    if bundled:
        problems.append(bundled_judge_problem())
    decided = sum(verdicts.values())
    if decided == 0:
        problems.append("the judge decided no comparison")
    else:
        side = max(verdicts, key=lambda k: verdicts[k])
        if verdicts[side] > ONE_SIDED_SHARE * decided:
            problems.append(f"the judge is one-sided: it answered {side} in "
                            f"{verdicts[side]} of {decided} decided verdicts "
                            f"(more than {ONE_SIDED_SHARE:.0%})")
    return problems


def trust_lines(result: dict[str, Any], rubrics: dict[str, dict[str, Any]]) -> list[str]:
    """The report's first section: what can be trusted, and what cannot."""
    lines = ["## What can be trusted", ""]
    measured = sum(a.get("measured", 0) for methods in result["adherence"].values()
                   for a in methods.values())
    lines.append(f"- Measured rubric adherence (judge-free): {measured} checks of length, "
                 "format, examples and language, by counting.")
    checks = [i.get("heldout") for r in rubrics.values() for i in r["items"]]
    replicated = sum(c is not None and c["verdict"].startswith("replicates") for c in checks)
    failed = sum(c is not None and c["verdict"] == "does not replicate" for c in checks)
    lines.append(f"- Rubric items validated on held-out conversations (judge-free): "
                 f"{replicated} of {len(checks)} replicate, {failed} do not, "
                 f"{len(checks) - replicated - failed} not validated (not measurable without a "
                 "judge, or too few held-out answers).")
    judge = result.get("judge") or {}
    if judge.get("problems"):
        lines.append("- Blind win rates: UNUSABLE, not results: "
                     + "; ".join(judge["problems"]) + ".")
    elif judge:
        lines.append(f"- Blind win rates: usable; the judge never saw the rubric and each pair "
                     f"was asked in both orders ({judge.get('position_ties', 0)} pairs "
                     "changed verdict with the order and count as ties).")
    lines.append("- Judged adherence (items that cannot be measured) is rubric-aware: it "
                 "says whether an answer follows an item, not whether users prefer it.")
    return [*lines, ""]


def validation_lines(rubrics: dict[str, dict[str, Any]]) -> list[str]:
    """One line per rubric item: its held-out lift and verdict."""
    lines = ["## Rubric validation on held-out conversations (judge-free)", "",
             "Lift: how much more often an answer violating the item drew the reactions it "
             "was mined from than an answer following it, in conversations mining never saw "
             "(95% interval; 'replicates' needs the interval above 1).", ""]
    items = [i for r in rubrics.values() for i in r["items"]]
    lines += [f"- {i['item_id']} ({i['text']}) {describe(i.get('heldout'))}" for i in items]
    lines += [f"- {group}: {describe_fit(r['heldout_fit'])}" for group, r in rubrics.items()
              if r["items"] and "heldout_fit" in r]
    return [*lines, ""] if items else [*lines, "- no rubric items", ""]
