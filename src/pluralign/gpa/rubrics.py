"""Stage 5: an interpretable rubric per group (JSON for machines, Markdown for people).

Each item comes from one mined rule and cites it (``rules``), with the rule's
support and the conversations behind it. The item text is the LLM's
phrasing when it passes a sanity check, else the attribute template; either
way ``template`` keeps the fixed phrasing and ``violation`` its opposite,
which GPA-FT uses to write rubric-violating answers.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pluralign.gpa.common import StepStats, ask
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.io import read_jsonl, stage_path, write_json
from pluralign.gpa.prompts import item_phrase, render, violation_phrase
from pluralign.gpa.rules import eligible_groups
from pluralign.gpa.validation import describe, describe_fit, group_fit, validate_rubrics
from pluralign.llm import LLMBackend

#: Words an LLM phrasing must use to count as being about its attribute *and direction*
#: (a weak model otherwise writes fluent items about something else, or the opposite:
#: SmolLM2-135M turned "answer in the user's language" into "answer in American English").
ITEM_WORDS: dict[tuple[str, str], str] = {
    ("length", "more"): r"long|length|complete|full|thorough|expand|extend|in depth",
    ("length", "less"): r"short|brief|concise|succinct|to the point|summar",
    ("detail", "more"): r"detail|specific|thorough|depth|step|reason",
    ("detail", "less"): r"high-level|overview|gist|summar|essential",
    ("format", "more"): r"list|bullet|heading|table|structure|steps|format",
    ("format", "less"): r"prose|paragraph|plain text|plain prose",
    ("tone", "more"): r"warm|polite|friendly|kind|courteous|respectful|engaging",
    ("tone", "less"): r"neutral|matter-of-fact|direct|plain|objective",
    ("language", "more"): r"language|translat|native",
    ("language", "less"): r"english",
    ("examples", "more"): r"example|instance|illustrat|sample",
    ("examples", "less"): r"fewer examples|without examples|no examples",
    ("accuracy", "more"): r"accura|correct|fact|check|precise|exact|what (was|is|they) ask",
    ("accuracy", "less"): r"speed|quick|fast",
    ("simplicity", "more"): r"simpl|plain|easy|jargon|everyday",
    ("simplicity", "less"): r"technical|precise|expert|terminolog",
}
#: Phrasings that are not an instruction to the assistant, or that may flip its meaning.
_FIRST_PERSON = re.compile(r"\b(I|I'll|I'm|I've|me|my|we will)\b")
_NEGATION = re.compile(r"\b(not|never|avoid|don'?t|no|without)\b", re.I)
_NEGATION_OK = {("format", "less"), ("examples", "less")}  # "without lists" is the point


def clean_item_text(text: str | None, attribute: str | None = None,
                    direction: str | None = None) -> str | None:
    """The first sentence-like line of an LLM answer, or None if it is not a usable item.

    With ``attribute`` and ``direction``, the line must use words of that pair (ITEM_WORDS),
    be an instruction (no first person) and have no negation that could flip it.
    """
    if not text:
        return None
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    # Small models echo the prompt's labels ("Guideline: ...", "Rewrite the guideline as: ").
    line = re.sub(r"^\s*([-*\u2022]|\d+[.)])?\s*((rewrite the guideline as|(rewritten )?"
                  r"(guideline|instruction))\s*:\s*)?", "", line, flags=re.I)
    line = line.strip().strip("\"'").strip()
    if not 15 <= len(line) <= 200 or len(line.split()) < 3:
        return None
    words = ITEM_WORDS.get((attribute or "", direction or ""))
    if words is None:
        return line
    if not re.search(rf"\b({words})", line, re.I) or _FIRST_PERSON.search(line):
        return None
    if (attribute, direction) not in _NEGATION_OK and _NEGATION.search(line):
        return None
    return line


def _evidence_text(rule: dict[str, Any], messages: dict[tuple[str, int], str]) -> str:
    quote = next((messages[(e["conversation_id"], e["user_turn"])] for e in rule["evidence"]
                  if (e["conversation_id"], e["user_turn"]) in messages), "")
    text = f"in {rule['support']} of {rule['group_conversations']} conversations"
    return text + (f" users reacted like this: \"{quote[:160]}\"" if quote else "")


def _own_phrasing(text: str | None, rule: dict[str, Any]) -> str | None:
    """``text``, unless it only repeats the template (then the item is the template's)."""
    def key(t: str) -> str:
        return re.sub(r"\W+", " ", t).strip().lower()

    template = item_phrase(rule["attribute"], rule["direction"])
    return None if text is None or key(text) == key(template) else text


def build_rubric(group: str, rules: list[dict[str, Any]], phrasings: list[str | None],
                 raws: list[str | None] | None = None) -> dict[str, Any]:
    """The rubric of ``group``: one item per rule, in the order given."""
    items = []
    raws = raws if raws is not None else [None] * len(rules)
    for i, (rule, phrased, raw) in enumerate(zip(rules, phrasings, raws, strict=True), 1):
        template = item_phrase(rule["attribute"], rule["direction"])
        items.append({
            "item_id": f"{group}#{i}", "attribute": rule["attribute"],
            "direction": rule["direction"], "text": phrased or template,
            "text_source": "llm" if phrased else "template", "template": template,
            # The LLM's answer is kept even when the check rejected it, for auditing.
            "llm_raw": raw,
            "violation": violation_phrase(rule["attribute"], rule["direction"]),
            "rules": [rule["rule_id"]], "support": rule["support"], "lift": rule["lift"],
            "conversations": sorted({e["conversation_id"] for e in rule["evidence"]}),
        })
    status = "ok" if items else "no rules: no preference signal distinguishes this group"
    return {"group": group, "status": status, "items": items}


def generate_rubrics(rules: list[dict[str, Any]], signals: list[dict[str, Any]],
                     groups: list[str], backend: LLMBackend | None, config: GPAConfig,
                     stats: StepStats | None = None) -> dict[str, dict[str, Any]]:
    """Rubric per group: the top rules by support and lift, phrased by LLM or template."""
    stats = stats if stats is not None else StepStats()
    messages = {(s["conversation_id"], s["user_turn"]): s["message"] for s in signals}
    chosen = {g: sorted((r for r in rules if r["group"] == g),
                        key=lambda r: (-r["support"], -r["lift"]))[: config.max_rubric_items]
              for g in groups}
    flat = [(g, r) for g in groups for r in chosen[g]]
    answers: list[str | None] = [None] * len(flat)
    if backend is not None and config.rubric_phrasing == "llm" and flat:
        prompts = [render("rubric_item", group=g, evidence=_evidence_text(r, messages),
                          guideline=item_phrase(r["attribute"], r["direction"]))
                   for g, r in flat]
        answers = ask(backend, prompts, stats, max_tokens=48)
    phrased = [_own_phrasing(clean_item_text(t, r["attribute"], r["direction"]), r)
               for (_, r), t in zip(flat, answers, strict=True)]
    out, cursor = {}, 0
    for group in groups:
        n = len(chosen[group])
        out[group] = build_rubric(group, chosen[group], phrased[cursor: cursor + n],
                                  answers[cursor: cursor + n])
        cursor += n
    return out


def _mark(check: dict[str, Any] | None) -> str:
    """A marker for items held-out conversations do not support, where people read them."""
    if check is None or check["verdict"].startswith("replicates"):
        return ""
    if check["verdict"] == "does not replicate":
        return "[does not replicate on held-out conversations] "
    return "[not validated on held-out conversations] "


def rubric_markdown(rubrics: dict[str, dict[str, Any]], skipped: dict[str, str]) -> str:
    lines = ["# Group preference rubrics", ""]
    for group, rubric in rubrics.items():
        lines += [f"## {group}", ""]
        if "heldout_fit" in rubric and rubric["items"]:
            lines += [describe_fit(rubric["heldout_fit"]), ""]
        if not rubric["items"]:
            lines += [f"_{rubric['status']}_", ""]
            continue
        for item in rubric["items"]:
            check = item.get("heldout")
            lines.append(f"- {_mark(check)}**{item['text']}** ({item['attribute']}: "
                         f"{item['direction']}; support {item['support']}, lift "
                         f"{item['lift']:.2f}; rules: {', '.join(item['rules'])}; "
                         f"{describe(check)})")
        lines.append("")
    if skipped:
        lines += ["## Groups without a rubric", ""]
        lines += [f"- {group}: {reason}" for group, reason in skipped.items()]
        lines.append("")
    return "\n".join(lines)


def load_rubrics(config: GPAConfig) -> dict[str, dict[str, Any]]:
    from pluralign.gpa.io import read_json

    return read_json(stage_path(config.work_dir, "rubrics"))["rubrics"]


def run_rubrics(config: GPAConfig, backend: LLMBackend | None) -> dict[str, Any]:
    """Stage 5: ``rules.jsonl`` -> ``rubrics.json`` and ``rubrics.md``; returns item counts."""
    rules = list(read_jsonl(stage_path(config.work_dir, "rules")))
    signals = list(read_jsonl(stage_path(config.work_dir, "signals")))
    groups, skipped = eligible_groups(config)
    stats = StepStats()
    rubrics = generate_rubrics(rules, signals, groups, backend, config, stats)
    conversations = list(read_jsonl(stage_path(config.work_dir, "ingest")))
    checks = validate_rubrics(rubrics, rules, conversations, config.cue_chars)
    fits = group_fit(rubrics, rules, conversations, config.cue_chars)
    for group, rubric in rubrics.items():
        rubric["heldout_fit"] = fits[group]
        for item in rubric["items"]:
            item["heldout"] = checks[item["item_id"]]
    write_json(stage_path(config.work_dir, "rubrics"), {"rubrics": rubrics, "skipped": skipped})
    stage_path(config.work_dir, "rubrics_md").write_text(rubric_markdown(rubrics, skipped),
                                                         encoding="utf-8")
    phrasing = Counter(i["text_source"] for r in rubrics.values() for i in r["items"])
    verdicts = Counter(c["verdict"] for c in checks.values())
    return {"items": {g: len(r["items"]) for g, r in rubrics.items()},
            "heldout_verdicts": dict(verdicts), "text_sources": dict(phrasing),
            "skipped_groups": skipped, "llm": stats.as_dict()}
