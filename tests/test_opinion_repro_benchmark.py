"""The benchmarks' stage scheduling (benchmarks/_stages.py): every stage starts from what it
needs; the reproduction's tasks and the recipe sweep's rule."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest


def _fake_stages(stages, monkeypatch, calls):
    """Stages that record (method, task folder, seed, start) instead of training."""
    from _opinions import StageResult

    def fake_train(files, recipe, seed, out, method, start, **overrides):
        calls.append((method, out.parent.name, seed, start, overrides))
        return StageResult(out / method / "final", 10.0 + seed, 20, None)

    monkeypatch.setattr(stages, "train_stage", fake_train)


def _fake_build(calls, name, path):
    calls.append(("data", name))
    return {"train": path}, 1.5


def _fake_evaluate(calls, files, finals, seed, seed_dir):
    calls.append(("evaluate", seed_dir.parent.name, seed, dict(finals)))
    return {"values": {("framings", "gdpo", "jsd"): {"p": 0.1 * seed}}}


@pytest.mark.parametrize("serial", [False, True])
def test_stage_graph_runs_each_stage_from_its_inputs(benchmark_module, tmp_path, monkeypatch,
                                                      serial):
    stages = benchmark_module("_stages")
    calls: list[tuple] = []
    _fake_stages(stages, monkeypatch, calls)
    methods = {"sft": "base", "dpo": "sft", "gdpo": "sft", "gdpo-kto": "dpo"}
    tasks = [stages.Task(name, partial(_fake_build, calls, name, tmp_path / f"{name}.jsonl"),
                         methods, partial(_fake_evaluate, calls),
                         overrides={"too_long": "drop"} if name == "PK" else {})
             for name in ("US", "PK")]
    recipe = object()
    if serial:
        graph = stages.StageGraph(stages.SerialPool(), tasks, [0, 1], recipe, tmp_path).run()
    else:
        with ThreadPoolExecutor(2) as pool:
            graph = stages.StageGraph(pool, tasks, [0, 1], recipe, tmp_path).run()

    assert set(graph.built) == {"US", "PK"}
    assert graph.built["PK"] == ({"train": tmp_path / "PK.jsonl"}, 1.5)
    assert set(graph.done) == {(t, s) for t in ("US", "PK") for s in (0, 1)}
    for short in ("US", "PK"):
        for seed in (0, 1):
            seed_dir = tmp_path / short / f"seed{seed}"
            order = [c for c in calls if c[0] != "data" and c[1:3] == (short, seed)]
            final = {m: str(seed_dir / m / "final") for m in methods}
            assert (order[0][0], order[0][3]) == ("sft", "smollm2-135m")
            # Each method starts from the weights its map names; evaluation comes last.
            assert {c[0]: c[3] for c in order[1:4]} == {
                "dpo": final["sft"], "gdpo": final["sft"], "gdpo-kto": final["dpo"]}
            assert [c[0] for c in order].index("gdpo-kto") > [c[0] for c in order].index("dpo")
            assert all(c[4] == ({"too_long": "drop"} if short == "PK" else {})
                       for c in order[:4])
            assert order[4] == ("evaluate", short, seed,
                                {m: seed_dir / m / "final" for m in methods})
            done = graph.done[(short, seed)]
            assert done["seconds"] == dict.fromkeys(methods, 10.0 + seed)
            assert done["values"][("framings", "gdpo", "jsd")] == {"p": 0.1 * seed}


def test_task_refuses_a_start_that_is_not_one_of_its_methods(benchmark_module):
    stages = benchmark_module("_stages")
    with pytest.raises(ValueError, match="US: dpo starts from 'sfT', which is not one of"):
        stages.Task("US", print, {"sft": "base", "dpo": "sfT"}, print)


def test_serial_pool_raises_a_stage_error_where_the_result_is_read(benchmark_module):
    stages = benchmark_module("_stages")
    future = stages.SerialPool().submit(int, "not a number")
    with pytest.raises(ValueError, match="invalid literal"):
        future.result()


def test_reproduction_trains_dpo_and_gdpo_from_its_sft(benchmark_module, tmp_path, monkeypatch):
    repro = benchmark_module("opinion_repro")
    seen = {}

    def fake_run_tasks(tasks, seeds, recipe, out, workers):
        seen.update(tasks=tasks, seeds=seeds, recipe=recipe, workers=workers)
        raise SystemExit("stop")

    monkeypatch.setattr(repro, "run_tasks", fake_run_tasks)
    args = argparse.Namespace(groups=["United States", "Pakistan"], seeds=[0, 1], out=tmp_path,
                              samples=2, sft_steps=3, pref_steps=4, sequence_format="auto",
                              lora_top_layers=10, base_dtype="auto", workers=2)
    with pytest.raises(SystemExit):
        repro.run_groups(args)
    assert [t.name for t in seen["tasks"]] == ["US", "PK"]
    assert seen["tasks"][0].methods == {"sft": "base", "dpo": "sft", "gdpo": "sft"}
    assert seen["recipe"].lora_top_layers == 10 and seen["recipe"].preference_steps == 4
    assert (seen["seeds"], seen["workers"]) == ([0, 1], 2)


def _scores(gdpo: dict[str, float], sft: dict[str, float]) -> dict:
    return {"scores": {"gdpo": gdpo, "sft": sft}, "gdpo_minutes": 1.0}


def test_recipe_sweep_keeps_by_its_stated_rule(benchmark_module):
    """Clean (BPC and RS within 0.02 of SFT's) first, then CBC >= 0.9 where any candidate
    reaches it, then the lowest mean validation JSD; scores of a shared SFT are read by the
    evaluation's labels (the SFT folder's name), not by the method name."""
    sweep = benchmark_module("recipe_sweep")
    sft = {"jsd": 0.25, "cbc": 0.5, "bpc": 0.40, "rs": 0.50}
    results = {
        "lowest-but-unclean": {"US": _scores({"jsd": 0.05, "cbc": 0.95, "bpc": 0.30, "rs": 0.6},
                                             sft)},
        "clean-low-cbc": {"US": _scores({"jsd": 0.08, "cbc": 0.80, "bpc": 0.45, "rs": 0.6}, sft)},
        "clean-calibrated": {"US": _scores({"jsd": 0.10, "cbc": 0.92, "bpc": 0.39, "rs": 0.49},
                                           sft)},
    }
    assert sweep.kept_candidate(results) == "clean-calibrated"
    del results["clean-calibrated"]
    assert sweep.kept_candidate(results) == "clean-low-cbc"
    rows = [{"model": "US", "prompt": "q", "jsd": 0.3, "generations": []},
            {"model": "gdpo", "prompt": "q", "jsd": 0.1, "generations": []}]
    scores = sweep.scores_of({"models": {"US": {}, "gdpo": {}}, "rows": rows}, ["sft", "gdpo"])
    assert (scores["sft"]["jsd"], scores["gdpo"]["jsd"]) == (0.3, 0.1)
