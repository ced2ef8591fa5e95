"""GDPO's overhead over DPO in pluralign's trainer: step time and peak memory.

Same model, batch, tokens and trainer for both methods: the pairs are GDPO's
(the rejected answer carries the chosen belief), DPO is the same trainer with
the belief weights at 0. GDPO adds the belief distribution at the last prompt
position and the belief-span NLL, read from the policy forward's hidden states
(no extra forward; the paper's reference code runs one, +16%). Both the
default forward (compact LM head, shared prefix) and TRL's fused-head forward
(``compact_logprobs=False``) are measured.

Usage: .venv/bin/python benchmarks/gdpo_overhead.py [--quick] [--repeats 3] [--lock FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import publish, run_stamp
from _timing import (
    add_common_args,
    interleaved,
    key_median,
    ratio_median,
    retry_note,
    train_worker,
    worker_entry,
)

PATHS = {
    "default (compact head, shared prefix)": {},
    "TRL fused head": {"compact_logprobs": False, "share_prefix": False},
}
MODELS = {"smollm2-135m": 8, "tiny": 8}  # model -> LoRA rank


def specs(model: str, batch: int, steps: int, warmup: int) -> list[dict]:
    out = []
    for path, flags in PATHS.items():
        for method in ("dpo", "gdpo"):
            # DPO on GDPO's pairs, scoring the same response tokens as GDPO (the belief span
            # left out of both): the gdpo-conditioned method, whose belief weights are 0.
            trained = "gdpo-conditioned" if method == "dpo" else method
            out.append({"kind": "train", "impl": "pluralign", "method": trained,
                        "model": model, "lora_r": MODELS[model], "batch": batch,
                        "steps": warmup + steps, "warmup": warmup, "flags": flags,
                        "label": f"{model} {path} {method}", "path": path})
    return out


def rows_for(model: str, spec_list: list[dict], results: list[list[dict]]) -> list[str]:
    rows = []
    for i in range(0, len(spec_list), 2):
        dpo, gdpo = results[i], results[i + 1]
        time_ratio = ratio_median(gdpo, dpo, "step_s")
        peak_ratio = ratio_median(gdpo, dpo, "peak_rss_mb")
        step_ratio = ratio_median(gdpo, dpo, "step_rss_mb", floor=1.0)
        rows.append(
            f"| {model} | {spec_list[i]['path']} | {key_median(dpo, 'step_s'):.3f} | "
            f"{key_median(gdpo, 'step_s'):.3f} | **{100 * (time_ratio - 1):+.1f}%** | "
            f"{key_median(dpo, 'peak_rss_mb'):.0f} / +{key_median(dpo, 'step_rss_mb'):.0f} | "
            f"{key_median(gdpo, 'peak_rss_mb'):.0f} / +{key_median(gdpo, 'step_rss_mb'):.0f} | "
            f"**{100 * (peak_ratio - 1):+.1f}%** / {100 * (step_ratio - 1):+.1f}% |")
    return rows


def main() -> None:
    worker_entry({"train": train_worker})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    steps, warmup = (2, 1) if args.quick else (4, 1)
    table = ["| model | forward | DPO step s | GDPO step s | GDPO time overhead | "
             "DPO peak RSS MB / step adds | GDPO peak RSS MB / step adds | "
             "GDPO peak overhead / of step adds |", "|---|---|---|---|---|---|---|---|"]
    all_results = []
    for model in args.models:
        model_steps = steps * (3 if model == "tiny" else 1)
        spec_list = specs(model, args.batch, model_steps, warmup)
        results = interleaved(Path(__file__), spec_list, args.repeats, args.lock)
        table.extend(rows_for(model, spec_list, results))
        all_results.append(results)
        tokens = results[0][0]["tokens_per_pair"]
        threads = results[0][0]["threads"]
    body = (
        "## GDPO overhead over DPO (`benchmarks/gdpo_overhead.py`)\n\n"
        f"pluralign's trainer, LoRA r=8, batch {args.batch} pairs of the bundled demo data "
        f"(GDPO pairs for both methods, so both see identical tokens: {tokens:.0f} tokens per "
        "pair, prompt written twice; DPO's log-probs also leave the belief span out, so both "
        "score the same response tokens and only the belief terms differ), "
        f"fp32, {threads} threads, precomputed reference log-probs. Step = forward + backward "
        f"+ AdamW; median over {steps} (bundled model) or "
        f"{3 * steps} (tiny) steps after {warmup} warm-up step(s), then median over "
        f"{args.repeats} repeats, each a fresh process; DPO and GDPO alternate within a repeat "
        "and the overheads are medians of the per-repeat ratios. Peak memory: process RSS "
        "sampled every 1 ms during training (psutil), and how much the steps add above the "
        "RSS before the first step. Target: GDPO at most +3% time and +5% peak memory. "
        f"{retry_note(*all_results)} "
        f"{run_stamp(args.quick)}\n\n" + "\n".join(table)
    )
    publish("gdpo-overhead", body, write=not args.no_write)


if __name__ == "__main__":
    main()
