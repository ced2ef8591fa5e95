"""A small hand-written conversation log for the GPA tests (groups A, B, C)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LONG_ANSWER = ("Here is a thorough answer. " * 60).strip()


def conv(cid: str, group: str, *turns: str) -> dict[str, Any]:
    roles = ["user", "assistant"] * len(turns)
    return {"id": cid, "metadata": {"country": group},
            "messages": [{"role": r, "content": t} for r, t in zip(roles, turns, strict=False)]}


def small_log() -> list[dict[str, Any]]:
    """Group A asks for shorter answers, group B for more detail; C has one conversation."""
    a = [conv(f"a{i}", "A", f"Explain topic {i}", LONG_ANSWER, "Too long, make it shorter please",
              "Short answer.") for i in range(4)]
    a.append(conv("a4", "A", "Write a plan for my week", "Plan: rest.", "meh", "Sorry."))
    b = [conv(f"b{i}", "B", f"What is item {i}?", "It is a thing.",
              "Can you give more details and an example?", "Sure, e.g. this.") for i in range(4)]
    b.append(conv("b4", "B", "Summarise this story", "A story.", "Thanks, great!", "Welcome."))
    c = [conv("c0", "C", "Hello there", "Hi!", "Tell me more", "More.")]
    return a + b + c


def write_log(folder: Path, rows: list[Any] | None = None, name: str = "log.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(small_log() if rows is None else rows))
    return path
