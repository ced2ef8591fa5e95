"""pluralign's DPO and GDPO against TRL's DPOTrainer: pairs per second, peak memory, profile.

TRL 1.16 ``DPOTrainer`` runs with its fastest options on this hardware:
precomputed reference log-probs (no reference forward per step), no gradient
checkpointing, dropout off, its fused LM head (the default; padding-free
training is disabled in TRL 1.16). It gets exactly pluralign's token ids of
the DPO pairs (its text tokenisation is skipped), the same LoRA model,
batch, precision and thread count. pluralign's trainers run with their
defaults (compact LM head, shared prefix) and, for comparison, with TRL's
fused head (``compact_logprobs=False``) or without prefix sharing.

``--profile`` profiles one step (torch.profiler) of TRL's DPO and of
pluralign's GDPO and writes where the time goes.

Usage: .venv/bin/python benchmarks/vs_trl.py [--quick] [--profile] [--lock FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _report import publish, run_stamp
from _timing import (
    TRAINERS,
    add_common_args,
    interleaved,
    key_median,
    ratio_median,
    retry_note,
    run_isolated,
    train_worker,
    worker_entry,
)

MODEL = "smollm2-135m"
TRL_DPO = {"impl": "trl", "method": "dpo", "pairing": "dpo"}
OURS = {
    # pluralign's trainers pair as their method does (dpo: DPO pairs, gdpo: GDPO pairs).
    "pluralign DPO": {"impl": "pluralign", "method": "dpo"},
    "pluralign GDPO": {"impl": "pluralign", "method": "gdpo"},
}
WITHOUT_SHARING = {"share_prefix": False}
TRL_HEAD = {"compact_logprobs": False, "share_prefix": False}


def settings(quick: bool) -> list[dict[str, Any]]:
    """Each setting: a title, shared spec fields and the rows (label, spec overrides)."""
    short = [("TRL DPOTrainer (DPO)", TRL_DPO),
             ("pluralign DPO", OURS["pluralign DPO"]),
             ("pluralign GDPO", OURS["pluralign GDPO"]),
             ("pluralign GDPO, TRL's fused head", {**OURS["pluralign GDPO"], "flags": TRL_HEAD})]
    long = [("TRL DPOTrainer (DPO)", TRL_DPO),
            ("pluralign GDPO, no prefix sharing", {**OURS["pluralign GDPO"],
                                                   "flags": WITHOUT_SHARING}),
            ("pluralign GDPO", OURS["pluralign GDPO"])]
    bf16 = [("TRL DPOTrainer (DPO)", TRL_DPO), ("pluralign GDPO", OURS["pluralign GDPO"])]
    out = [{"title": "demo prompts, fp32", "batch": 8, "prompt_tokens": 0,
            "rows": short}]
    out.append({"title": "long prompts (background text + question), fp32", "batch": 4,
                "prompt_tokens": 256, "rows": long})
    if not quick:
        out.append({"title": "demo prompts, bf16 autocast (both)", "batch": 8,
                    "prompt_tokens": 0, "bf16": True, "rows": bf16})
    return out


def specs_of(setting: dict[str, Any], steps: int, warmup: int) -> list[dict[str, Any]]:
    base = {"kind": "train", "model": MODEL, "lora_r": 8, "batch": setting["batch"],
            "steps": steps + warmup, "warmup": warmup, "prompt_tokens": setting["prompt_tokens"],
            "bf16": setting.get("bf16", False)}
    return [{**base, **row, "label": f"{setting['title']}: {label}"}
            for label, row in setting["rows"]]


def table_of(setting: dict[str, Any], results: list[list[dict[str, Any]]]) -> list[str]:
    first = results[0][0]
    rows = [f"**{setting['title']}**, batch {setting['batch']} pairs, "
            f"{first['prompt_tokens_mean']:.0f} prompt tokens and {first['tokens_per_pair']:.0f} "
            "tokens per DPO pair (prompt counted twice):", "",
            "| trainer | step s | pairs/s | vs TRL DPO (speed) | peak RSS MB / step adds "
            "| vs TRL DPO (peak) |", "|---|---|---|---|---|---|"]
    baseline = results[0]
    for (label, _), runs in zip(setting["rows"], results, strict=True):
        speed = ratio_median(baseline, runs, "step_s")
        peak = ratio_median(runs, baseline, "peak_rss_mb")
        step = key_median(runs, "step_s")
        rows.append(
            f"| {label} | {step:.3f} | {setting['batch'] / step:.2f} | **{speed:.2f}x** | "
            f"{key_median(runs, 'peak_rss_mb'):.0f} / +{key_median(runs, 'step_rss_mb'):.0f} "
            f"| {peak:.2f}x |")
    return [*rows, ""]


# ------------------------------------------------------------------------------ profile

#: Autograd functions of the LM head (TRL's fused head, pluralign's compact head).
HEAD_FUNCTIONS = ("ChunkedLogProbFunction", "_TokenLogProbs")


def _category(event: Any) -> str:
    names = []
    node = event
    while node is not None:
        names.append(node.name)
        node = node.cpu_parent
    if any(head in name for name in names for head in HEAD_FUNCTIONS):
        return "LM head log-probs (forward + backward)"
    if any("scaled_dot_product" in name for name in names):
        return "attention (SDPA forward + backward)"
    if any(name.startswith("Optimizer.") for name in names):
        return "optimiser"
    if event.name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::addmm_"):
        return "layer matmuls (forward + backward)"
    return "elementwise, norms, LoRA glue, other"


def profile_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Profile the step after the warm-up; self CPU time per category."""
    import tempfile
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    class Profiled(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == spec["warmup"]:
                self.profiler = profile(activities=[ProfilerActivity.CPU])
                self.profiler.__enter__()
                self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == spec["warmup"] + 1:
                self.wall = time.perf_counter() - self.started
                self.profiler.__exit__(None, None, None)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = TRAINERS[spec["impl"]](spec, Path(tmp))
        probe = Profiled()
        trainer.add_callback(probe)
        trainer.train()
    seconds: dict[str, float] = defaultdict(float)
    for event in probe.profiler.events():
        seconds[_category(event)] += event.self_cpu_time_total / 1e6
    return {"wall_s": probe.wall, "seconds": dict(seconds)}


def profile_section(lock: str | None) -> str:
    from _timing import cpu_lock

    base = {"kind": "profile", "model": MODEL, "lora_r": 8, "batch": 8, "steps": 2,
            "warmup": 1, "prompt_tokens": 0}
    runs = [("TRL DPOTrainer (DPO)", {**base, **TRL_DPO}),
            ("pluralign GDPO, TRL's fused head", {**base, **OURS["pluralign GDPO"],
                                                  "flags": TRL_HEAD}),
            ("pluralign GDPO (default)", {**base, **OURS["pluralign GDPO"]})]
    with cpu_lock(lock):
        results = [run_isolated(Path(__file__), spec) for _, spec in runs]
    categories = sorted({c for r in results for c in r["seconds"]},
                        key=lambda c: -results[0]["seconds"].get(c, 0.0))
    rows = ["| where | " + " | ".join(label for label, _ in runs) + " |",
            "|---|" + "---|" * len(runs)]
    for category in categories:
        cells = []
        for result in results:
            value = result["seconds"].get(category, 0.0)
            cells.append(f"{value:.2f} s ({100 * value / sum(result['seconds'].values()):.0f}%)")
        rows.append(f"| {category} | " + " | ".join(cells) + " |")
    rows.append("| **profiled step (wall, with profiler overhead)** | "
                + " | ".join(f"**{r['wall_s']:.2f} s**" for r in results) + " |")
    return (
        "## Where a step's time goes (`benchmarks/vs_trl.py --profile`)\n\n"
        f"One profiled step (torch.profiler, CPU self time per category; the step after one "
        f"warm-up step) of {MODEL} + LoRA r=8, batch 8 demo pairs, fp32. "
        f"{run_stamp(False)}\n\n" + "\n".join(rows)
    )


def main() -> None:
    worker_entry({"train": train_worker, "profile": profile_worker})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--profile", action="store_true", help="Also profile one step.")
    parser.add_argument("--profile-only", action="store_true", help="Only profile one step.")
    args = parser.parse_args()
    if args.profile or args.profile_only:
        publish("step-profile", profile_section(args.lock), write=not args.no_write)
        if args.profile_only:
            return
    steps, warmup = (2, 1) if args.quick else (4, 1)
    tables: list[str] = []
    threads, all_results = 0, []
    for setting in settings(args.quick):
        results = interleaved(Path(__file__), specs_of(setting, steps, warmup), args.repeats,
                              args.lock)
        tables.extend(table_of(setting, results))
        all_results.append(results)
        threads = results[0][0]["threads"]
    body = (
        "## pluralign vs TRL DPOTrainer (`benchmarks/vs_trl.py`)\n\n"
        f"{MODEL} + LoRA r=8 (q_proj, v_proj), bundled demo pairs; TRL 1.16 `DPOTrainer` with "
        "precomputed reference log-probs, no gradient checkpointing, its fused LM head, on "
        "pluralign's own token ids of the DPO pairs (the rejected answer carries the rejected "
        "belief); pluralign DPO on the same pairs, pluralign GDPO on the GDPO pairs of the same "
        f"records (same lengths up to the belief description); same batch, precision and "
        f"{threads} threads for all. Step time: median over {steps} steps after {warmup} "
        f"warm-up step(s), median over {args.repeats} repeats (fresh process each, trainers "
        "alternating within a repeat); ratios are medians of per-repeat ratios. Peak memory: "
        "process RSS sampled every 1 ms (psutil) and what the steps add above the RSS before "
        "training. Long prompts: neutral background text before each demo question, 256 "
        f"tokens of prompt text. {retry_note(*all_results)} "
        f"{run_stamp(args.quick)}\n\n" + "\n".join(tables)
    )
    publish("vs-trl", body, write=not args.no_write)


if __name__ == "__main__":
    main()
