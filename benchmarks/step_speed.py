"""Training step speed under the recipe: attention kernel and SFT's LM head, side by side.

The recipe (`pluralign.train.recipe`) trains the bundled model with LoRA r=16 on every
linear layer under bf16 autocast on CPUs with native bf16. Measured here, in one run,
interleaved repeat by repeat, each configuration in a fresh process:

- GDPO steps with SDPA attention (transformers' default) and with eager attention (what
  ``attn_implementation: auto`` picks on such a CPU for sequences of at most 256 tokens);
- SFT steps with TRL's fused LM head (every position scored) and with pluralign's compact
  head (labelled positions only), each with SDPA and eager attention.

Usage: .venv/bin/python benchmarks/step_speed.py [--quick] [--repeats 3] [--lock FILE]
       .venv/bin/python benchmarks/step_speed.py --precision   # fp32 / bf16 / bf16 base
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from _report import publish, run_stamp
from _timing import (
    add_common_args,
    demo_pair_records,
    interleaved,
    key_median,
    ratio_median,
    retry_note,
    timed_training,
    worker_entry,
)

LORA_R = 16


def _recipe_config(spec: dict[str, Any], out: Path) -> Any:
    from pluralign.train.recipe import RECIPE

    recipe = RECIPE.replace(batch_size=spec["batch"], lora_r=LORA_R,
                            base_dtype=spec.get("base_dtype", "float32"))
    config = recipe.train_config(
        spec["method"], start=spec["model"], train_file="(in memory)", output_dir=str(out),
        seed=0, max_steps=spec["steps"], bf16=spec["bf16"], validation_fraction=0.0,
        frame_prompts=False, logging_steps=10**6, save_steps=10**6)
    # The spec's attention kernel, set where the model loads (auto would pick its own).
    model = dataclasses.replace(config.model, attn_implementation=spec["attention"])
    return dataclasses.replace(config, model=model)


def recipe_trainer(spec: dict[str, Any], out: Path) -> Any:
    """The SFT or GDPO trainer ``pluralign.train`` builds for the recipe, with the spec's
    attention kernel and (SFT) LM head."""
    from pluralign.train.api import build_trainer

    trainer = build_trainer(_recipe_config(spec, out),
                            train_records=demo_pair_records(spec["batch"] * spec["steps"]))
    if spec.get("sft_head") == "trl":
        trainer.compact_nll = False  # TRL's fused head for the SFT loss
    return trainer


def step_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        trainer = recipe_trainer(spec, Path(tmp))
        result = timed_training(trainer, spec["warmup"])
    result["threads"] = torch.get_num_threads()
    return result


VARIANTS = [  # (method, attention, SFT head, label)
    ("gdpo", "sdpa", None, "GDPO, SDPA attention"),
    ("gdpo", "eager", None, "GDPO, eager attention"),
    ("sft", "sdpa", "trl", "SFT, SDPA, TRL's fused head"),
    ("sft", "sdpa", "compact", "SFT, SDPA, compact head"),
    ("sft", "eager", "compact", "SFT, eager, compact head"),
]


def speed_rows(specs: list[dict[str, Any]], results: list[list[dict[str, Any]]],
               baselines: list[list[dict[str, Any]]]) -> list[str]:
    """A table row per configuration: median step, speed-up over its baseline's runs (median
    of per-repeat ratios), peak RSS."""
    rows = []
    for spec, runs, base in zip(specs, results, baselines, strict=True):
        speedup = 1.0 / ratio_median(runs, base, "step_s")
        rows.append(f"| {spec['label']} | {key_median(runs, 'step_s'):.2f} | "
                    f"**{speedup:.2f}x** | {key_median(runs, 'peak_rss_mb'):.0f} |")
    return rows


#: (label, bf16 autocast, frozen base dtype, attention): what each precision trains with,
#: attention as ``auto`` picks it (eager under bf16 on a CPU at these lengths).
PRECISIONS = [
    ("fp32 (SDPA)", False, "float32", "sdpa"),
    ("bf16 autocast over fp32 weights (eager)", True, "float32", "eager"),
    ("bf16 frozen base, fp32 LoRA, autocast (eager)", True, "bfloat16", "eager"),
]


def precision_section(args: argparse.Namespace, steps: int, warmup: int) -> str:
    """GDPO steps of the recipe in fp32, under bf16 autocast, and on a bf16 frozen base."""
    specs = [{"kind": "step", "method": "gdpo", "attention": attention, "sft_head": None,
              "label": label, "model": "smollm2-135m", "batch": args.batch,
              "steps": warmup + steps, "warmup": warmup, "bf16": bf16, "base_dtype": dtype}
             for label, bf16, dtype, attention in PRECISIONS]
    results = interleaved(Path(__file__), specs, args.repeats, args.lock)
    table = ["| GDPO step | step s (median) | vs fp32 | peak RSS MB |", "|---|---|---|---|",
             *speed_rows(specs, results, [results[0]] * len(specs))]
    return (
        "## bf16 frozen base (`benchmarks/step_speed.py --precision`)\n\n"
        f"The recipe's GDPO trainer on the bundled model: LoRA r={LORA_R} on every linear "
        f"layer, batch {args.batch} demo pairs, {results[0][0]['threads']} threads, attention "
        "as `auto` picks it. Under bf16 autocast every matmul rounds its fp32 weight to bf16 "
        "at every call; a bf16 frozen base stores the rounded weights once (LoRA weights and "
        "Adam state stay fp32), so the matmuls compute the same products without the casts, "
        "and the residual stream runs in bf16. Step = forward + backward + AdamW; median over "
        f"{steps} steps after {warmup} warm-up step(s), then over {args.repeats} repeats, "
        "each configuration in a fresh process, interleaved within a repeat; speed-ups are "
        f"medians of per-repeat ratios. {retry_note(results)} {run_stamp(args.quick)}\n\n"
        + "\n".join(table)
    )


def main() -> None:
    worker_entry({"step": step_worker})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fp32", action="store_true", help="Measure without bf16 autocast.")
    parser.add_argument("--precision", action="store_true",
                        help="Only GDPO in fp32, bf16 autocast and on a bf16 frozen base.")
    args = parser.parse_args()
    steps, warmup = (2, 1) if args.quick else (4, 1)
    if args.precision:
        publish("bf16-base", precision_section(args, steps, warmup), write=not args.no_write)
        return
    specs = [{"kind": "step", "method": method, "attention": attention, "sft_head": head,
              "label": label, "model": "smollm2-135m", "batch": args.batch,
              "steps": warmup + steps, "warmup": warmup, "bf16": not args.fp32}
             for method, attention, head, label in VARIANTS]
    results = interleaved(Path(__file__), specs, args.repeats, args.lock)
    baseline = {"gdpo": results[0], "sft": results[2]}
    table = ["| configuration | step s (median) | vs SDPA (GDPO) / TRL head + SDPA (SFT) | "
             "peak RSS MB |", "|---|---|---|---|",
             *speed_rows(specs, results, [baseline[spec["method"]] for spec in specs])]
    body = (
        "## Training step speed (`benchmarks/step_speed.py`)\n\n"
        f"The recipe's trainers on the bundled model: LoRA r={LORA_R} on every linear layer, "
        f"batch {args.batch} demo records (pairs for GDPO), "
        f"{'fp32' if args.fp32 else 'bf16 autocast'}, {results[0][0]['threads']} threads. "
        f"Step = forward + backward + AdamW; median over {steps} steps after {warmup} "
        f"warm-up step(s), then over {args.repeats} repeats, each configuration in a fresh "
        "process, interleaved within a repeat; speed-ups are medians of per-repeat ratios. "
        "SDPA's CPU backward is the slow part at these lengths (one layer, forward + backward, "
        "bf16, 2 threads: 63 ms SDPA vs 21 ms eager at 128 tokens, 56 vs 52 at 256, 55 vs 60 "
        "at 320), so `attn_implementation: auto` picks eager on a CPU under bf16 up to 256 "
        "tokens. TRL's fused head scores every position against the 49k vocabulary; the "
        "compact head scores the labelled (belief + response) positions only. "
        f"{retry_note(results)} {run_stamp(args.quick)}\n\n" + "\n".join(table)
    )
    publish("step-speed", body, write=not args.no_write)


if __name__ == "__main__":
    main()
