"""Capability retention: a fine-tuned model's loss on general instructions vs its base.

By default the eight instructions below (general-purpose, written for
pluralign); with ``retention_data``, held-out instruction text such as the
HH-RLHF test split in ``../shared/data/hh_rlhf``. The loss is the mean token
NLL of the reference answer after the chat-templated prompt, the same
rendering GPA-FT trains on. The relative change gets a paired bootstrap
interval over examples, so eight instructions show how little they say.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import bootstrap

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


def example_losses(model: Any, tokenizer: Any, pairs: tuple[tuple[str, str], ...],
                   max_length: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(summed answer NLL, answer tokens) per pair; prompt tokens are not scored.

    Long transcripts keep their last ``max_length`` tokens of prompt plus answer, so a
    long HH-RLHF dialogue costs no more than a short one.
    """
    import torch

    from pluralign.generation import encode_prompt

    model.eval()
    sums, counts = [], []
    for prompt, answer in pairs:
        prompt_ids = encode_prompt(tokenizer, prompt)["input_ids"][0].tolist()
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:max_length // 2]
        prompt_ids = prompt_ids[-(max_length - len(answer_ids)):]
        ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1: -1]
        targets = ids[0, len(prompt_ids):]
        nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        sums.append(float(nll))
        counts.append(len(answer_ids))
    return np.asarray(sums), np.asarray(counts)


def instruction_loss(model: Any, tokenizer: Any,
                     pairs: tuple[tuple[str, str], ...] = GENERAL_INSTRUCTIONS) -> float:
    """Mean per-token NLL of the answers (prompt tokens are not scored)."""
    sums, counts = example_losses(model, tokenizer, pairs)
    return float(sums.sum() / max(counts.sum(), 1))


def load_retention_pairs(path: str, limit: int, seed: int) -> tuple[tuple[str, str], ...]:
    """A seeded sample of ``limit`` (prompt, answer) pairs from JSONL (``.gz`` too).

    Rows are ``{"prompt", "answer"}`` or HH-RLHF transcripts (``chosen``), whose last
    assistant turn is the answer and the dialogue before it the prompt.
    """
    from datasets import load_dataset

    if not Path(path).is_file():
        raise ValueError(f"retention_data: {path} is not a file")
    rows = load_dataset("json", data_files=path, split="train")
    rows = rows.shuffle(seed=seed).select(range(min(limit, len(rows))))
    return tuple(_pair(row, path, i) for i, row in enumerate(rows))


def _pair(row: dict[str, Any], path: str, index: int) -> tuple[str, str]:
    if row.get("prompt") and row.get("answer"):
        return row["prompt"], row["answer"]
    head, marker, answer = (row.get("chosen") or "").rpartition("\n\nAssistant:")
    if not marker or not answer.strip():
        raise ValueError(f"retention_data: {path} row {index} has neither prompt/answer "
                         "nor an HH-RLHF 'chosen' transcript ending in an Assistant turn")
    return head.strip(), answer.strip()


def change_interval(base: np.ndarray, tuned: np.ndarray, tokens: np.ndarray, seed: int
                    ) -> tuple[float, float]:
    """95% paired bootstrap interval of the relative change of the token-mean loss."""
    if len(tokens) < 2:
        return math.nan, math.nan

    def change(b: np.ndarray, t: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
        return t.sum(axis=axis) / b.sum(axis=axis) - 1

    result = bootstrap((base, tuned, tokens), change, paired=True, vectorized=True,
                       n_resamples=2000, method="percentile", random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def retention_check(base: tuple[Any, Any], tuned: tuple[Any, Any], margin: float,
                    pairs: tuple[tuple[str, str], ...] = GENERAL_INSTRUCTIONS,
                    source: str = "built-in general instructions", seed: int = 0
                    ) -> dict[str, Any]:
    """Losses of both models and whether the tuned one stayed within ``(1 + margin) x base``."""
    base_sums, tokens = example_losses(*base, pairs)
    tuned_sums, _ = example_losses(*tuned, pairs)
    base_loss = float(base_sums.sum() / max(tokens.sum(), 1))
    tuned_loss = float(tuned_sums.sum() / max(tokens.sum(), 1))
    low, high = change_interval(base_sums, tuned_sums, tokens, seed)
    limit = base_loss * (1 + margin)
    return {"base_loss": round(base_loss, 4), "finetuned_loss": round(tuned_loss, 4),
            "relative_change": round(tuned_loss / base_loss - 1, 4) if base_loss else math.nan,
            "change_low": round(low, 4), "change_high": round(high, 4),
            "margin": margin, "limit": round(limit, 4), "passed": tuned_loss <= limit,
            "instructions": len(pairs), "source": source}
