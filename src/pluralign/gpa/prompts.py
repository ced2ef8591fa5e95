"""Every prompt GPA sends to an LLM, as templates in one place.

Templates are ``str.format`` strings; :func:`render` fills them and names a
missing field. Rubric item phrases per (attribute, direction) live here too,
because they are shown to models (GPA-CT context, synthetic pairs, judges).
"""

from __future__ import annotations

from typing import Any

PROMPTS: dict[str, str] = {
    "classify": (
        "An assistant answered a user, and the user then sent another message.\n\n"
        "Assistant answer:\n{answer}\n\nUser's next message:\n{message}\n\n"
        "Does the user's message react to the answer? Reply with exactly one label:\n"
        "none (a new, unrelated request), feedback_positive (praise, thanks), "
        "feedback_negative (complaint), correction (points out a mistake), "
        "rephrase (asks to rewrite or say it differently), more (asks for more, longer, "
        "more detail), less (asks for shorter, simpler, less).\nLabel:"
    ),
    "attribute": (
        "A user reacted to an assistant's answer.\n\nAssistant answer:\n{answer}\n\n"
        "User's reaction:\n{message}\n\n"
        "Which property of the answer does the user want changed? Properties: length, "
        "format, tone, detail, language, examples, accuracy, simplicity. Reply in the form "
        "'property: more' or 'property: less' (one line, nothing else).\nAnswer:"
    ),
    "rubric_item": (
        "Guideline for answering users from {group}: {guideline}\n"
        "Evidence: {evidence}\n\n"
        "Rewrite the guideline as one short instruction to an assistant, starting with a verb "
        "(for example \"Keep ...\", \"Use ...\", \"Give ...\"). Reply with the instruction "
        "only."
    ),
    "ct_system": (
        "You are a helpful assistant. The user is from {group}. Users from {group} prefer "
        "answers that follow these guidelines:\n{items}\nFollow them in your answer."
    ),
    "persona_system": "You are talking to someone from {group}.",
    "follows_system": (
        "Answer the user's request. Follow every one of these guidelines:\n{items}"
    ),
    "violates_system": (
        "Answer the user's request. Follow every one of these guidelines:\n{items}"
    ),
    # The blind judge never sees the rubric or the group: a judge told the mined rubric
    # rewards the answer written from that rubric (GPA-CT), which makes the win rate
    # circular. The question comes last: small models answer the last thing they read.
    "judge_blind": (
        "Request: {prompt}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
        "Which response would a user who sent this request prefer, A or B? Reply with one "
        "letter."
    ),
    "judge_adherence": (
        "Here is a response:\n{response}\n\n"
        "Question: does this response follow the guideline \"{item}\"? Answer yes or no."
    ),
}

#: Rubric phrasing per (attribute, direction), and what violating it looks like.
ITEM_PHRASES: dict[tuple[str, str], str] = {
    ("length", "more"): "Give long, complete answers rather than brief ones.",
    ("length", "less"): "Keep answers short and to the point.",
    ("detail", "more"): "Go into detail: explain steps, reasons and specifics.",
    ("detail", "less"): "Stay high-level; leave out minor details.",
    ("format", "more"): "Structure answers with lists, headings or tables.",
    ("format", "less"): "Answer in plain prose without lists or headings.",
    ("tone", "more"): "Use a warm, polite and friendly tone.",
    ("tone", "less"): "Use a neutral, matter-of-fact tone.",
    ("language", "more"): "Answer in the language the user writes in.",
    ("language", "less"): "Answer in English.",
    ("examples", "more"): "Include concrete examples.",
    ("examples", "less"): "Do not pad answers with examples.",
    ("accuracy", "more"): "Double-check facts and do exactly what was asked.",
    ("accuracy", "less"): "Favour speed over exhaustive checking.",
    ("simplicity", "more"): "Use simple words and short sentences.",
    ("simplicity", "less"): "Use precise technical language.",
}


def opposite(direction: str) -> str:
    return {"more": "less", "less": "more"}.get(direction, direction)


def item_phrase(attribute: str, direction: str) -> str:
    """The template text of a rubric item (a generic line for unknown pairs)."""
    return ITEM_PHRASES.get((attribute, direction),
                            f"Users want {direction} {attribute} in answers.")


def violation_phrase(attribute: str, direction: str) -> str:
    """The instruction that makes an answer violate the item (attribute, direction)."""
    return item_phrase(attribute, opposite(direction))


def render(name: str, **fields: Any) -> str:
    """Fill template ``name``; a missing field raises a KeyError naming it and the template."""
    try:
        return PROMPTS[name].format(**fields)
    except KeyError as exc:
        raise KeyError(f"prompt template {name!r} needs field {exc.args[0]!r}") from None


def bullet_list(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines) if lines else "- (no guidelines)"
