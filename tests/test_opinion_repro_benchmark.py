"""benchmarks/opinion_repro.py's stage scheduling: every stage starts from what it needs."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor


def test_stage_graph_runs_each_stage_from_its_inputs(benchmark_module, tmp_path, monkeypatch):
    repro = benchmark_module("opinion_repro")
    from _opinions import StageResult

    calls: list[tuple] = []

    def fake_build(group, args):
        calls.append(("data", group))
        return {"train": tmp_path / f"{group}.jsonl"}, 1.5

    def fake_train(files, recipe, seed, out, method, start):
        calls.append((method, out.parent.name, seed, start))
        return StageResult(out / method / "final", 10.0 + seed, 20, None)

    def fake_evaluate(files, finals, seed, seed_dir, samples):
        calls.append(("evaluate", seed_dir.parent.name, seed, dict(finals)))
        return {"values": {("framings", "gdpo", "jsd"): {"p": 0.1 * seed}}, "lines": {}}

    monkeypatch.setattr(repro, "build_data", fake_build)
    monkeypatch.setattr(repro, "train_stage", fake_train)
    monkeypatch.setattr(repro, "evaluate_seed", fake_evaluate)
    args = argparse.Namespace(groups=["United States", "Pakistan"], seeds=[0, 1], out=tmp_path,
                              samples=2, sft_steps=3, pref_steps=4, sequence_format="auto",
                              lora_top_layers=10, base_dtype="auto")
    with ThreadPoolExecutor(2) as pool:
        graph = repro.StageGraph(pool, args)
        graph.run()

    assert set(graph.built) == {"United States", "Pakistan"}
    assert set(graph.done) == {(g, s) for g in args.groups for s in args.seeds}
    for group, short in (("United States", "US"), ("Pakistan", "PK")):
        for seed in (0, 1):
            seed_dir = tmp_path / short / f"seed{seed}"
            order = [c for c in calls if c[0] != "data" and c[1:3] == (short, seed)]
            assert (order[0][0], order[0][3]) == ("sft", "smollm2-135m")
            # DPO and GDPO start from this seed's SFT weights; evaluation comes last.
            assert {c[0]: c[3] for c in order[1:3]} == {
                "dpo": str(seed_dir / "sft" / "final"), "gdpo": str(seed_dir / "sft" / "final")}
            assert order[3] == ("evaluate", short, seed, {
                m: seed_dir / m / "final" for m in ("sft", "dpo", "gdpo")})
            done = graph.done[(group, seed)]
            assert done["seconds"] == {"sft": 10.0 + seed, "dpo": 10.0 + seed,
                                       "gdpo": 10.0 + seed}
            assert done["values"][("framings", "gdpo", "jsd")] == {"p": 0.1 * seed}
    assert graph.recipe.lora_top_layers == 10 and graph.recipe.preference_steps == 4
    assert graph.built["Pakistan"] == ({"train": tmp_path / "Pakistan.jsonl"}, 1.5)


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
