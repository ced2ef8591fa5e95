"""Capability retention: a fine-tuned model's loss on general instructions vs its base.

The instructions below are general-purpose (not group-specific) and were
written for pluralign. The loss is the mean token NLL of the reference
answer after the chat-templated prompt, the same rendering GPA-FT trains on.
"""

from __future__ import annotations

import math
from typing import Any

GENERAL_INSTRUCTIONS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Give me three primary colours.", "Red, blue and yellow are the three primary colours."),
    ("Translate 'good morning' into Spanish.", "'Good morning' in Spanish is 'buenos días'."),
    ("What is 12 times 7?", "12 times 7 is 84."),
    ("Write a Python function that adds two numbers.",
     "def add(a, b):\n    return a + b"),
    ("Explain what photosynthesis is in one sentence.",
     "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide "
     "to make glucose and release oxygen."),
    ("Name a mammal that can fly.", "The bat is a mammal that can fly."),
    ("Suggest a title for a story about a lost dog.", "\"The Long Way Home\"."),
)


def instruction_loss(model: Any, tokenizer: Any,
                     pairs: tuple[tuple[str, str], ...] = GENERAL_INSTRUCTIONS) -> float:
    """Mean per-token NLL of the answers (prompt tokens are not scored)."""
    import torch

    from pluralign.generation import encode_prompt

    model.eval()
    total, count = 0.0, 0
    for prompt, answer in pairs:
        prompt_ids = encode_prompt(tokenizer, prompt)["input_ids"][0].tolist()
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1: -1]
        targets = ids[0, len(prompt_ids):]
        nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        total += float(nll)
        count += len(answer_ids)
    return total / max(count, 1)


def retention_check(base: tuple[Any, Any], tuned: tuple[Any, Any], margin: float
                    ) -> dict[str, Any]:
    """Losses of both models and whether the tuned one stayed within ``(1 + margin) x base``."""
    base_loss = instruction_loss(*base)
    tuned_loss = instruction_loss(*tuned)
    limit = base_loss * (1 + margin)
    return {"base_loss": round(base_loss, 4), "finetuned_loss": round(tuned_loss, 4),
            "relative_change": round(tuned_loss / base_loss - 1, 4) if base_loss else math.nan,
            "margin": margin, "limit": round(limit, 4), "passed": tuned_loss <= limit,
            "instructions": len(GENERAL_INSTRUCTIONS)}
