"""benchmarks/paper_tables.py: its tasks (every method of Table 2 from the weights the paper
starts it from, reviews in their own format) and the rows it builds from a run's results."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest


def _args(tmp_path, groups=("United States",)):
    return argparse.Namespace(groups=list(groups), seeds=[0, 1], questions=8, movies=None,
                              samples=1, margin_pairs=16, steps=None, out=tmp_path,
                              quick=False, no_write=True, no_reviews=False, workers=2)


def test_tasks_train_each_method_from_the_papers_start(benchmark_module, tmp_path):
    tables = benchmark_module("paper_tables")
    recipe = tables.paper_recipe(None)
    # The reproduction's recipe: its LoRA layers and its sequence format.
    assert (recipe.lora_top_layers, recipe.sequence_format) == (10, "separated-options")
    assert tables.paper_recipe(3).preference_steps == 3
    tasks = {t.name: t for t in tables.tasks_of(_args(tmp_path, ("United States",
                                                                 "Pakistan")), recipe)}
    assert list(tasks) == ["US", "PK", "reviews"]
    assert tasks["US"].methods == {
        "sft": "base", "uniform-sft": "base", "icf": "base", "dpo": "sft", "gdpo": "sft",
        "gdpo-calibration": "sft", "gdpo-conditioned": "sft", "kto": "sft",
        "gdpo-kto": "sft"}
    assert tasks["US"].overrides == {}
    assert tasks["reviews"].methods == {"sft": "base", "dpo": "sft", "gdpo": "sft"}
    # Reviews train as `{rating}{review}` (the records' format), over-long ones left out.
    assert tasks["reviews"].overrides == {"sequence_format": "auto", "too_long": "drop"}
    assert tasks["reviews"].evaluate.keywords == {"samples": 1, "beta": recipe.beta,
                                                  "margin_pairs": 16}
    no_reviews = argparse.Namespace(**{**vars(_args(tmp_path)), "no_reviews": True})
    assert [t.name for t in tables.tasks_of(no_reviews, recipe)] == ["US"]


def _done(values, seconds, margins=None):
    return {"values": values, "seconds": seconds, **({"margins": margins} if margins else {})}


def test_rows_are_means_over_seeds_with_the_papers_numbers(benchmark_module):
    tables = benchmark_module("paper_tables")
    methods = [*tables.OPINION_METHODS, "3-shot", "5-shot"]

    def values(seed):
        return {(m, metric): {"p1": 0.1 + seed * 0.1, "p2": 0.3 + seed * 0.1}
                for m in methods for metric in tables.OPINION_METRICS}

    review = {"majority": {"value": 1.0}, "lowest_minority": {"value": -0.5}}
    graph = SimpleNamespace(done={
        ("US", s): _done(values(s), dict.fromkeys(tables.OPINION_METHODS, 60.0)) for s in (0, 1)}
        | {("reviews", s): _done(
            {(m, metric): {"movie": 0.2 * (s + 1)} for m in tables.REVIEW_METHODS
             for metric in tables.REVIEW_METRICS}, {},
            {"sft": {}, "dpo": {**review, "others": {"value": 0.5 + s}},
             "gdpo": {**review, "others": {"value": None, "n": 0}}})
           for s in (0, 1)})
    rows = tables.opinion_rows(graph, "US", [0, 1])
    assert len(rows) == len(methods)
    gdpo = next(r for r in rows if r.startswith("| US | gdpo |"))
    # Mean 0.25 over seeds and prompts; the paper's Table 2 GDPO row; 2 x 60 s of training.
    assert gdpo.startswith("| US | gdpo | 0.250 [")
    assert gdpo.endswith("| 0.188 / 0.068 | 2.0 |")
    assert rows[-1].startswith("| US | 5-shot | 0.250 [") and rows[-1].endswith(
        "| 0.513 / 0.477 | – |")
    reviews = tables.review_rows(graph, [0, 1])
    assert reviews[0].startswith("| reviews | sft | 0.300 [") and reviews[0].endswith(
        "| – | – | – |")
    assert reviews[1].endswith("| 1.000 | -0.500 | 1.000 |")  # others: mean of 0.5 and 1.5
    assert reviews[2].endswith("| 1.000 | -0.500 | – |")  # no "others" pair held out


def test_groups_may_be_left_out_for_the_review_task_alone(benchmark_module, monkeypatch):
    tables = benchmark_module("paper_tables")
    monkeypatch.setattr("sys.argv", ["paper_tables.py", "--groups", "--workers", "1"])
    args = tables.parse_args()
    assert args.groups == [] and args.workers == 1
    monkeypatch.setattr("sys.argv", ["paper_tables.py", "--workers", "0"])
    with pytest.raises(SystemExit):
        tables.parse_args()


def test_the_machine_line_names_the_cpu_and_its_bf16(benchmark_module, monkeypatch):
    """Benchmark headers name the CPU model and whether bf16 is native: the same run takes
    several times longer on an AVX2-only CPU than on one with AVX512-BF16."""
    from pathlib import Path

    import pluralign.train.recipe as recipe_module

    report = benchmark_module("_report")
    monkeypatch.setattr(recipe_module, "bf16_is_fast", lambda: False)
    assert report.cpu_model().endswith(", no native bf16")
    assert ", no native bf16, " in report.machine_line()
    monkeypatch.setattr(recipe_module, "bf16_is_fast", lambda: True)
    assert report.cpu_model().endswith(", native bf16")
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            assert report.cpu_model() == f"{names[0]}, native bf16"
