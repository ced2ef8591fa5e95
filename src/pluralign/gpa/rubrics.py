"""Stage 5: an interpretable rubric per group (JSON for machines, Markdown for people).

Each item comes from one mined rule and cites it (``rules``), with the rule's
support and the conversations behind it. The item text is the LLM's
phrasing when it passes a sanity check, else the attribute template; either
way ``template`` keeps the fixed phrasing and ``violation`` its opposite,
which GPA-FT uses to write rubric-violating answers.
"""

from __future__ import annotations

import re
from typing import Any

from pluralign.gpa.common import StepStats, ask
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.io import read_jsonl, stage_path, write_json
from pluralign.gpa.prompts import item_phrase, render, violation_phrase
from pluralign.gpa.rules import eligible_groups
from pluralign.llm import LLMBackend

#: Words an LLM phrasing must use to count as being about its attribute (a weak model
#: otherwise writes fluent items about something else entirely).
ATTRIBUTE_WORDS = {
    "length": r"short|brief|concise|long|length|lengthy|words|succinct|complete",
    "detail": r"detail|specific|thorough|depth|high-level|overview",
    "format": r"list|bullet|heading|table|structure|format|prose|paragraph",
    "tone": r"tone|polite|friendly|warm|formal|neutral|kind",
    "language": r"language|english|translate|native",
    "examples": r"example|instance|illustrat",
    "accuracy": r"accura|correct|fact|check|precise|exact",
    "simplicity": r"simpl|plain|easy|technical|jargon",
}


def clean_item_text(text: str | None, attribute: str | None = None) -> str | None:
    """The first sentence-like line of an LLM answer, or None if it is not a usable item.

    With ``attribute``, the line must also name that attribute (see ATTRIBUTE_WORDS).
    """
    if not text:
        return None
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*([-*\u2022]|\d+[.)]|instruction:)\s*", "", line, flags=re.I)
    line = line.strip().strip("\"'").strip()
    if not 15 <= len(line) <= 200 or len(line.split()) < 3:
        return None
    words = ATTRIBUTE_WORDS.get(attribute or "")
    if words and not re.search(rf"\b({words})", line, re.I):
        return None
    return line


def _evidence_text(rule: dict[str, Any], messages: dict[tuple[str, int], str]) -> str:
    quote = next((messages[(e["conversation_id"], e["user_turn"])] for e in rule["evidence"]
                  if (e["conversation_id"], e["user_turn"]) in messages), "")
    text = (f"in {rule['support']} of {rule['group_conversations']} conversations users asked "
            f"for {rule['direction']} {rule['attribute']} in answers")
    return text + (f", e.g. \"{quote[:160]}\"" if quote else "")


def build_rubric(group: str, rules: list[dict[str, Any]], phrasings: list[str | None],
                 ) -> dict[str, Any]:
    items = []
    for i, (rule, phrased) in enumerate(zip(rules, phrasings, strict=True), 1):
        template = item_phrase(rule["attribute"], rule["direction"])
        items.append({
            "item_id": f"{group}#{i}", "attribute": rule["attribute"],
            "direction": rule["direction"], "text": phrased or template,
            "text_source": "llm" if phrased else "template", "template": template,
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
    phrased: list[str | None] = [None] * len(flat)
    if backend is not None and config.rubric_phrasing == "llm" and flat:
        prompts = [render("rubric_item", group=g, evidence=_evidence_text(r, messages))
                   for g, r in flat]
        answers = ask(backend, prompts, stats, max_tokens=48)
        phrased = [clean_item_text(t, r["attribute"]) for (_, r), t in
                   zip(flat, answers, strict=True)]
    out, cursor = {}, 0
    for group in groups:
        n = len(chosen[group])
        out[group] = build_rubric(group, chosen[group], phrased[cursor: cursor + n])
        cursor += n
    return out


def rubric_markdown(rubrics: dict[str, dict[str, Any]], skipped: dict[str, str]) -> str:
    lines = ["# Group preference rubrics", ""]
    for group, rubric in rubrics.items():
        lines += [f"## {group}", ""]
        if not rubric["items"]:
            lines += [f"_{rubric['status']}_", ""]
            continue
        for item in rubric["items"]:
            lines.append(f"- **{item['text']}** ({item['attribute']}: {item['direction']}; "
                         f"support {item['support']}, lift {item['lift']:.2f}; "
                         f"rules: {', '.join(item['rules'])})")
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
    write_json(stage_path(config.work_dir, "rubrics"), {"rubrics": rubrics, "skipped": skipped})
    stage_path(config.work_dir, "rubrics_md").write_text(rubric_markdown(rubrics, skipped),
                                                         encoding="utf-8")
    return {"items": {g: len(r["items"]) for g, r in rubrics.items()},
            "skipped_groups": skipped, "llm": stats.as_dict()}
