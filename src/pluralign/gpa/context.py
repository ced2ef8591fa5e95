"""Stage 6, GPA-CT: answer a group's prompt with its relevant rubric items in context.

Relevance is embedding similarity between the prompt and each item (the
bundled MiniLM through ``pluralign.models.embed.embed_texts``) or keyword
overlap (no model). Ties go to the better-supported item.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pluralign.gpa.common import StepStats, ask, clip
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.io import read_jsonl, stage_path, write_jsonl
from pluralign.gpa.prompts import bullet_list, render
from pluralign.gpa.rubrics import load_rubrics
from pluralign.llm import LLMBackend

logger = logging.getLogger(__name__)

#: Words in a prompt that make an attribute's items relevant (keyword relevance).
ATTRIBUTE_KEYWORDS = {
    "length": {"essay", "write", "pages", "words", "long", "short", "summary", "story",
               "article", "report"},
    "detail": {"explain", "why", "how", "describe", "detail", "analysis", "analyze"},
    "format": {"list", "steps", "plan", "table", "outline", "compare", "guide", "how"},
    "tone": {"email", "letter", "message", "reply", "customer", "friend"},
    "language": {"translate", "language", "english"},
    "examples": {"example", "examples", "code", "how", "use", "sample"},
    "accuracy": {"fact", "true", "correct", "calculate", "solve", "code", "fix"},
    "simplicity": {"explain", "simple", "understand", "what", "mean"},
}

_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def keyword_scores(prompt: str, items: list[dict[str, Any]]) -> list[float]:
    words = _words(prompt)
    return [len(words & (_words(item["text"]) | ATTRIBUTE_KEYWORDS.get(item["attribute"], set())))
            for item in items]


def embedding_scores(prompt: str, items: list[dict[str, Any]], embedder: Any = None
                     ) -> list[float]:
    from pluralign.eval.metrics import cosine_similarities
    from pluralign.models.embed import embed_texts

    vectors = embed_texts([prompt] + [item["text"] for item in items], embedder)
    return [float(s) for s in cosine_similarities(vectors[:1].repeat(len(items), 0),
                                                  vectors[1:])]


def select_items(prompt: str, items: list[dict[str, Any]], k: int, relevance: str = "embedding",
                 embedder: Any = None) -> list[tuple[dict[str, Any], float]]:
    """The ``k`` items most relevant to ``prompt`` with their scores, best first."""
    if not items:
        return []
    if relevance == "embedding":
        scores = embedding_scores(prompt, items, embedder)
    elif relevance == "keywords":
        scores = keyword_scores(prompt, items)
    else:
        raise ValueError(f"relevance: expected embedding or keywords, got {relevance!r}")
    ranked = sorted(zip(items, scores, strict=True), key=lambda p: (-p[1], -p[0]["support"]))
    return ranked[:k]


def heldout_prompts(conversations: list[dict[str, Any]], groups: list[str], limit: int
                    ) -> dict[str, list[dict[str, Any]]]:
    """First user message of each held-out conversation, per group (with provenance)."""
    out: dict[str, list[dict[str, Any]]] = {g: [] for g in groups}
    for conv in conversations:
        if conv.get("split") != "heldout" or conv["group"] not in out:
            continue
        first = next((m for m in conv["messages"] if m["role"] == "user"), None)
        if first and first["content"].strip() and len(out[conv["group"]]) < limit:
            out[conv["group"]].append({"conversation_id": conv["conversation_id"],
                                       "turn": first["turn"], "prompt": first["content"]})
    return out


def load_prompts(config: GPAConfig, groups: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The prompts to answer: ``prompts_file`` rows, else the held-out first prompts."""
    if config.prompts_file:
        out: dict[str, list[dict[str, Any]]] = {g: [] for g in groups}
        for number, line in enumerate(Path(config.prompts_file).read_text().splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if row.get("group") in out and len(out[row["group"]]) < config.prompts_per_group:
                    out[row["group"]].append({"conversation_id": None, "turn": None,
                                              "prompt": row["prompt"], "line": number})
        return out
    conversations = list(read_jsonl(stage_path(config.work_dir, "ingest")))
    return heldout_prompts(conversations, groups, config.prompts_per_group)


def ct_system_prompt(group: str, items: list[dict[str, Any]]) -> str:
    return render("ct_system", group=group, items=bullet_list([i["text"] for i in items]))


def answer_with_rubric(group: str, prompts: list[dict[str, Any]], rubric: dict[str, Any],
                       backend: LLMBackend, config: GPAConfig, stats: StepStats | None = None,
                       embedder: Any = None) -> list[dict[str, Any]]:
    """GPA-CT answers (one row per prompt, with the items that were put in context)."""
    stats = stats if stats is not None else StepStats()
    selections = [select_items(p["prompt"], rubric["items"], config.top_k, config.relevance,
                               embedder) for p in prompts]
    systems = [ct_system_prompt(group, [item for item, _ in sel]) for sel in selections]
    answers = ask(backend, [clip(p["prompt"], config.max_chars) for p in prompts], stats,
                  system=systems, max_tokens=config.answer_max_tokens)
    return [{"group": group, **p, "items": [i["item_id"] for i, _ in sel],
             "scores": [round(s, 4) for _, s in sel], "answer": answer, "ok": answer is not None}
            for p, sel, answer in zip(prompts, selections, answers, strict=True)]


def run_context(config: GPAConfig, backend: LLMBackend, embedder: Any = None) -> dict[str, Any]:
    """Stage 6: GPA-CT answers for every rubric group -> ``ct_answers.jsonl``."""
    rubrics = load_rubrics(config)
    groups = [g for g, r in rubrics.items() if r["items"]]
    prompts = load_prompts(config, groups)
    stats, rows = StepStats(), []
    for group in groups:
        rows += answer_with_rubric(group, prompts[group], rubrics[group], backend, config, stats,
                                   embedder)
    write_jsonl(stage_path(config.work_dir, "context"), rows)
    return {"answers": {g: sum(r["group"] == g for r in rows) for g in groups},
            "groups_without_prompts": [g for g in groups if not prompts[g]],
            "llm": stats.as_dict()}
