"""Issue 19, item 4: the pure parts of benchmarks/gpu_step.py (its table from one or more
results files) and the synchronising step timer it uses, on hand-made numbers."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def bench(benchmark_module):
    return benchmark_module("gpu_step")


def _results(runs: dict, steps: int = 10, repeats: int = 2) -> dict:
    return {"gpu": "Fake GPU", "torch": "2.x", "cuda": "13.0", "transformers": "5.x",
            "trl": "1.x", "random_init": True, "steps": steps, "warmup": 3,
            "repeats": repeats, "wall_s": 60.0, "date": "2026-12-04", "runs": runs}


def _run(step_s: float, peak: float = 1000.0) -> dict:
    return {"step_s": step_s, "peak_gpu_mb": peak}


def test_table_takes_each_setting_from_the_file_that_measured_it(bench, tmp_path):
    first_title, first_batch, first_rows = bench.SETTINGS[0]
    last_title, _, last_rows = bench.SETTINGS[-1]
    main = {f"{first_title}: {label}": [_run(0.2), _run(0.4)] for label, _ in first_rows}
    # Second row: 0.1 s then 0.8 s against the base's 0.2 and 0.4: per-repeat ratios 2.0
    # and 0.5, median 1.25 (a ratio of the medians would say 0.3 / 0.45 = 0.67).
    main[f"{first_title}: {first_rows[1][0]}"] = [_run(0.1), _run(0.8)]
    main[f"{first_title}: {first_rows[2][0]}"] = [{"error": "RuntimeError: out of memory"},
                                                  _run(0.3)]
    extra = {f"{last_title}: {label}": [_run(0.5)] for label, _ in last_rows}
    (tmp_path / "a.json").write_text(json.dumps(_results(main)))
    (tmp_path / "b.json").write_text(json.dumps(_results(extra, steps=6, repeats=1)))

    text = bench.table([tmp_path / "a.json", tmp_path / "b.json"])

    lines = text.splitlines()
    base_row = next(line for line in lines if line.startswith(f"| {first_rows[0][0]} |"))
    # Median step 0.3 s = 300 ms; batch 8 / 0.3 s = 27 pairs/s.
    assert base_row == f"| {first_rows[0][0]} | 300.0 | {first_batch / 0.3:.0f} | 1.00x | 1000 |"
    second = next(line for line in lines if line.startswith(f"| {first_rows[1][0]} |"))
    assert "| 1.25x |" in second
    third = next(line for line in lines if line.startswith(f"| {first_rows[2][0]} |"))
    assert "failed: RuntimeError: out of memory" in third
    assert f"**{last_title}** (median of 6 steps after 3 warm-up steps, 1 repeats)" in text
    # The batch-64 setting was in neither file: no table for it.
    assert bench.SETTINGS[1][0] not in text


def test_step_timer_synchronises_at_both_ends_of_a_step(benchmark_module):
    timing = benchmark_module("_timing")
    calls = []
    timer = timing.step_timer(lambda: calls.append("sync"))
    timer.on_step_begin()
    calls.append("step")
    timer.on_step_end()
    assert calls == ["sync", "step", "sync"]
    assert len(timer.times) == 1 and timer.times[0] >= 0.0


@pytest.mark.parametrize("entry, worker", [("profile", "_profile_trainers"),
                                           ("measure", "_measure_settings")])
def test_the_random_weights_folder_is_removed_even_when_a_run_fails(bench, tmp_path,
                                                                     monkeypatch, entry, worker):
    import argparse

    made = []

    def fake_random_model(config_dir, out):
        out.mkdir(parents=True)
        made.append(out)
        return out

    def failing(*args):
        assert made[0].is_dir()  # the model exists while the run uses it
        raise RuntimeError("CUDA error")

    monkeypatch.setattr(bench, "random_model_dir", fake_random_model)
    monkeypatch.setattr(bench, worker, failing)
    args = argparse.Namespace(profile=str(tmp_path / "profile"), measure=str(tmp_path / "m.json"),
                              random_init=str(tmp_path), model="smollm2-135m")
    with pytest.raises(RuntimeError, match="CUDA error"):
        getattr(bench, entry)(args)
    assert len(made) == 1 and not made[0].parent.exists()
