"""Issue 22, item 6: the tables benchmarks/gpa_eval.py writes into BENCHMARKS.md."""

from __future__ import annotations

import pytest

from pluralign.gpa.validation import lift_interval


@pytest.fixture
def bench(benchmark_module):
    return benchmark_module("gpa_eval")


def _item(text: str, attribute: str, direction: str, heldout: dict | None) -> dict:
    return {"item_id": f"US#{text[:3]}", "text": text, "attribute": attribute,
            "direction": direction, "heldout": heldout}


def _run(bench) -> dict:
    replicated = {"own": lift_interval(8, 10, 1, 10), "elsewhere": lift_interval(2, 10, 2, 10),
                  "verdict": "replicates"}
    unmeasured = {"own": None, "elsewhere": None, "verdict": "not measurable without a judge"}
    rubrics = {"US": {"items": [_item("Keep it short.", "length", "less", replicated),
                                _item("Be warm.", "tone", "more", unmeasured)]},
               "UK": {"items": []}}
    reference = [{"item_id": "US#Kee", "attribute": "length", "direction": "less",
                  "text": "Keep it short."}]
    row = {"share": "25%", "mined": 3, "rubric_items": 1, "shared_items": 1, "checks": 4,
           "by_attribute": {"length": [3, 4]}, "adherence": 0.75, "low": 0.3, "high": 0.95}
    data_size = {"group": "US", "seed": 7, "prompts": 4, "reference_share": "100%",
                 "reference_items": reference, "win_rates": [],
                 "judge": {"asked": False, "usable": False, "problems": ["bundled"]},
                 "rows": [{**row, "method": "gpa_ct"},
                          {**row, "method": "gpa_ft", "adherence": 0.25, "low": 0.05,
                           "high": 0.7, "by_attribute": {"length": [1, 4]}}]}
    retention = {"base_loss": 2.0, "finetuned_loss": 2.03, "relative_change": 0.015,
                 "change_low": 0.005, "change_high": 0.025, "margin": 0.1, "passed": True,
                 "instructions": 64, "source": str(bench.HH_TEST)}
    return {"rubrics": rubrics, "data_size": data_size, "retention": retention,
            "seconds": {"mining": 60.0, "data size": 54.0, "retention": 6.0}}


def test_the_benchmark_section_has_its_three_tables_and_says_what_needs_a_judge(bench):
    text = bench.section(_run(bench), quick=True, seed=7, load=1.25)
    lines = text.splitlines()
    assert lines[0] == "## GPA evaluation with the bundled model (`benchmarks/gpa_eval.py`)"
    assert "seed 7. Run time 2.0 min (mining 60 s, data size 54 s, retention 6 s); load " \
           "average 1.2" in text and "(--quick)." in text
    assert "**Needs a capable judge, so not shown:** blind win rates" in text
    validation = [ln for ln in lines if ln.startswith("| US |")]
    assert validation == [
        "| US | Keep it short. | length: less | 8/10 | 1/10 | 8.00 [1.21, 52.69] | "
        "1.00 [0.17, 5.77] | replicates |",
        "| US | Be warm. | tone: more | n/a | n/a | n/a | n/a | not measurable without a "
        "judge |"]
    assert "| gpa_ct | 25% | 3 | 1 (1) | 3/4 | - | - | - | 75% [30%, 95%] | 4 | needs a " \
           "capable judge | needs a capable judge |" in text
    assert "| gpa_ft | 25% | 3 | 1 (1) | 1/4 | - | - | - | 25% [5%, 70%] |" in text
    assert "measurable items of the 100% rubric (length: less)" in text
    assert "Base 2.0000, after GPA-FT (100% model) 2.0300 nats per answer token: +1.50% " \
           "[95% CI +0.50%, +2.50%], within the 10% margin; 64 examples of " \
           "`../shared/data/hh_rlhf/harmless_base_test.jsonl.gz`." in text
    assert "/work/" not in text  # data paths as the project names them


def test_a_run_without_rubric_items_or_model_says_so(bench):
    run = _run(bench)
    run["rubrics"] = {"UK": {"items": []}}
    run["retention"] = None
    run["data_size"]["reference_items"] = []
    text = bench.section(run, quick=False, seed=0, load=0.0)
    assert "| (no rubric items) | | | | | | | |" in text
    assert "No GPA-FT model was trained at 100%: nothing to compare." in text
    assert "rubric (none: this table is empty of checks)" in text and "(--quick)" not in text

