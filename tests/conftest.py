"""Shared fixtures: offline Hugging Face settings and the tiny test model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Tests never reach a model hub: keywords, local folders and local caches only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The project's shared public data (tests that need it skip when it is absent).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_lm():
    """(model, tokenizer): random 2-layer Llama with SmolLM2's tokenizer, seed 0.

    Session-scoped: tests that train must deep-copy the model (see ``fresh_tiny_lm``).
    """
    from pluralign.models import load_model

    return load_model("tiny", device="cpu")


@pytest.fixture
def fresh_tiny_lm(tiny_lm):
    """A private copy of the tiny model that a test may modify or train."""
    import copy

    model, tokenizer = tiny_lm
    return copy.deepcopy(model), tokenizer


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present next to the project")
    return SHARED_DATA


@pytest.fixture
def captured(monkeypatch):
    """The figures the evaluation report would save (``pluralign.eval.report._save``), kept
    open for inspection instead of written; closed after the test."""
    from pluralign.eval import report

    figures = []

    def keep(fig: Any, path: Path) -> Path:
        figures.append(fig)
        return path

    monkeypatch.setattr(report, "_save", keep)
    yield figures
    report._pyplot().close("all")


@pytest.fixture
def benchmark_module(monkeypatch):
    """Import a script of ``benchmarks/`` by name (its folder on ``sys.path``, where the
    scripts import ``_opinions`` and ``_report`` from); forgotten again after the test."""
    import importlib
    import sys

    names: list[str] = []
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))

    def load(name: str) -> Any:
        names.append(name)
        return importlib.import_module(name)

    yield load
    for name in names:
        sys.modules.pop(name, None)
