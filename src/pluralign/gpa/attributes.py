"""Stage 3: which attributes of an answer a signal is about, and in which direction.

For each assistant turn that received a signal, three sources name
(attribute, direction) pairs: cue patterns in the user's reaction, the
signal's label (``more`` -> longer, ``correction`` -> accuracy), measured
features of the answer itself (a praised answer with bullets endorses
format), and an LLM label through the shared backend. Each row keeps the
answer's measured features and its provenance.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pluralign.gpa.common import StepStats, ask, clip
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.io import read_jsonl, stage_path, write_jsonl
from pluralign.gpa.prompts import opposite, render
from pluralign.gpa.signals import LANGUAGES, cue_head
from pluralign.llm import LLMBackend

ATTRIBUTES = ("length", "format", "tone", "detail", "language", "examples", "accuracy",
              "simplicity")
DIRECTIONS = ("more", "less")

#: Cue patterns in the user's reaction: (attribute, direction, pattern).
ATTRIBUTE_CUES = tuple((a, d, re.compile(p, re.I)) for a, d, p in (
    ("length", "more", r"\b(longer|at least \d+ ?(pages?|words|paragraphs|lines)|more words|"
                       r"expand|continue|keep going|too short)\b"),
    ("length", "less", r"\b(shorter|shorten|too long|brief|concise|in \d+ words|one sentence|"
                       r"summari[sz]e|tl;?dr)\b"),
    ("detail", "more", r"\b(more details?|elaborate|in depth|in detail|explain more|specifics?|"
                       r"more information)\b"),
    ("detail", "less", r"\b(too detailed|less detail|just the (answer|gist)|high[- ]level)\b"),
    ("format", "more", r"\b(bullets?|bullet points|list|table|headings?|step[- ]by[- ]step|"
                       r"steps|format|outline)\b"),
    ("format", "less", r"\b(no bullets?|without (bullets|lists)|paragraph form|in prose)\b"),
    ("tone", "more", r"\b(polite|friendly|warm|nicer|kind|formal|professional)\b"),
    ("tone", "less", r"\b(rude|too (friendly|enthusiastic|formal)|neutral tone|casual)\b"),
    ("language", "more", rf"\b(translate|in ({LANGUAGES})|my language)\b"),
    ("language", "less", r"\b(in english|english please)\b"),
    ("examples", "more", r"\b(examples?|for instance|sample|show me)\b"),
    ("examples", "less", r"\b(no examples|without examples)\b"),
    ("simplicity", "more", r"\b(simpler|simple words|easy to understand|layman|simplify|"
                           r"like i'?m (5|five))\b"),
    ("simplicity", "less", r"\b(more technical|technical details)\b"),
))

#: What a signal label means when no cue names the attribute.
LABEL_DEFAULTS = {"more": ("length", "more"), "less": ("length", "less"),
                  "correction": ("accuracy", "more")}

_BULLET = re.compile(r"^\s*([-*\u2022]|\d+[.)])\s+", re.M)
_HEADING = re.compile(r"^\s*(#{1,6}\s|\*\*[^*]+\*\*\s*$|[A-Z][^.!?\n]{2,60}:\s*$)", re.M)
_EXAMPLE = re.compile(r"\b(for example|e\.g\.|for instance|such as)\b", re.I)


def measure(text: str) -> dict[str, Any]:
    """Cheap measurable features of a text (no model needed)."""
    letters = [c for c in text if c.isalpha()]
    latin = sum(c.isascii() for c in letters)
    return {
        "words": len(text.split()),
        "chars": len(text),
        "bullets": len(_BULLET.findall(text)),
        "headings": len(_HEADING.findall(text)),
        "code_blocks": text.count("```") // 2,
        "examples": len(_EXAMPLE.findall(text)),
        "latin_share": round(latin / len(letters), 3) if letters else 1.0,
    }


def feature_attributes(features: dict[str, Any]) -> list[tuple[str, str]]:
    """The (attribute, direction) pairs an answer's measured features exhibit."""
    found = []
    if features["words"] >= 200:
        found.append(("length", "more"))
    elif features["words"] <= 60:
        found.append(("length", "less"))
    found.append(("format", "more" if features["bullets"] + features["headings"] >= 3
                  else "less"))
    if features["examples"]:
        found.append(("examples", "more"))
    return found


def cue_attributes(message: str, chars: int = 240) -> list[tuple[str, str]]:
    """(attribute, direction) pairs the cues find in the message's first ``chars`` characters."""
    head = cue_head(message, chars)
    return [(a, d) for a, d, pattern in ATTRIBUTE_CUES if pattern.search(head)]


def parse_attribute(text: str | None) -> tuple[str, str] | None:
    """``(attribute, direction)`` from an LLM answer such as ``length: more``."""
    if not text:
        return None
    match = re.search(r"\b(" + "|".join(ATTRIBUTES) + r")\b\W{0,3}\s*(more|less)\b", text.lower())
    return (match.group(1), match.group(2)) if match else None


def _pairs_for(signal: dict[str, Any], message: str, features: dict[str, Any],
               llm: tuple[str, str] | None, cue_chars: int) -> dict[tuple[str, str], set[str]]:
    """(attribute, direction) -> the sources that name it."""
    pairs: dict[tuple[str, str], set[str]] = {}
    for pair in cue_attributes(message, cue_chars):
        pairs.setdefault(pair, set()).add("cue")
    label = signal["label"]
    if not pairs and label in LABEL_DEFAULTS:
        pairs.setdefault(LABEL_DEFAULTS[label], set()).add("label")
    if not pairs and label.startswith("feedback_"):
        # Praise endorses what the answer measurably did; a complaint rejects it.
        for attribute, direction in feature_attributes(features):
            flipped = direction if label == "feedback_positive" else opposite(direction)
            pairs.setdefault((attribute, flipped), set()).add("feature")
    if llm is not None:
        pairs.setdefault(llm, set()).add("llm")
    return pairs


def extract_attributes(conversations: list[dict[str, Any]], signals: list[dict[str, Any]],
                       backend: LLMBackend | None, config: GPAConfig,
                       stats: StepStats | None = None) -> list[dict[str, Any]]:
    """One row per (signal, attribute, direction), with provenance and answer features."""
    stats = stats if stats is not None else StepStats()
    by_id = {c["conversation_id"]: c for c in conversations}
    active = [s for s in signals if s["signal"] and s["conversation_id"] in by_id]
    texts = []
    for s in active:
        turns = {m["turn"]: m["content"] for m in by_id[s["conversation_id"]]["messages"]}
        texts.append((turns[s["assistant_turn"]], turns[s["user_turn"]]))
    llm_raw: list[str | None] = [None] * len(active)
    if backend is not None and config.use_llm_labels:
        prompts = [render("attribute", answer=clip(a, config.label_chars),
                          message=clip(m, config.label_chars)) for a, m in texts]
        llm_raw = ask(backend, prompts, stats, max_tokens=12)
    rows = []
    for signal, (answer, message), raw in zip(active, texts, llm_raw, strict=True):
        features = measure(answer)
        features["user_latin_share"] = measure(message)["latin_share"]
        for (attribute, direction), sources in sorted(
                _pairs_for(signal, message, features, parse_attribute(raw),
                           config.cue_chars).items()):
            rows.append({
                "conversation_id": signal["conversation_id"], "group": signal["group"],
                "user_turn": signal["user_turn"], "assistant_turn": signal["assistant_turn"],
                "label": signal["label"], "attribute": attribute, "direction": direction,
                "sources": sorted(sources), "features": features, "llm_raw": raw,
            })
    return rows


def run_attributes(config: GPAConfig, backend: LLMBackend | None) -> dict[str, Any]:
    """Stage 3: ``signals.jsonl`` -> ``attributes.jsonl``; returns a summary."""
    conversations = list(read_jsonl(stage_path(config.work_dir, "ingest")))
    signals = list(read_jsonl(stage_path(config.work_dir, "signals")))
    stats = StepStats()
    rows = extract_attributes(conversations, signals, backend, config, stats)
    write_jsonl(stage_path(config.work_dir, "attributes"), rows)
    pairs = Counter(f"{r['attribute']}:{r['direction']}" for r in rows)
    # A signal no source could tie to an attribute (e.g. "make it catchier" without LLM
    # labels) yields no row; it is counted here rather than lost without a trace.
    covered = {(r["conversation_id"], r["user_turn"]) for r in rows}
    unmatched = [s for s in signals if s["signal"]
                 and (s["conversation_id"], s["user_turn"]) not in covered]
    return {"rows": len(rows), "pairs": dict(pairs),
            "signals_without_attribute": len(unmatched),
            "unmatched_examples": [f"{s['conversation_id']}:{s['user_turn']} {s['label']}: "
                                   f"{s['message'][:80]}" for s in unmatched[:5]],
            "llm": stats.as_dict()}
