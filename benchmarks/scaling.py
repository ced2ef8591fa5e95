"""How a GDPO step's time and memory grow with sequence length and batch size.

pluralign's GDPO trainer (defaults: compact LM head, shared prefix) on the
bundled model with LoRA r=8. Sequence length grows with the prompt (neutral
background text before each demo question; the belief and response stay the
demo's), batch size at demo lengths. From the batch sweep, a least-squares
line of peak RSS over batch size gives the memory per pair, and from it the
largest batch whose peak fits in 24 GB at demo lengths and at the longest
measured length.

Usage: .venv/bin/python benchmarks/scaling.py [--quick] [--repeats 3] [--lock FILE]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from _report import machine_line, write_section
from _timing import (
    add_common_args,
    interleaved,
    key_median,
    retry_note,
    train_worker,
    worker_entry,
)

MODEL = "smollm2-135m"
BUDGET_MB = 24 * 1024
#: Every sweep's raw results, for the note on repeats redone.
RETRIES: list[list[list[dict[str, Any]]]] = []


def sweep(points: list[dict[str, Any]], steps: int, args: argparse.Namespace) -> list[dict]:
    base = {"kind": "train", "impl": "pluralign", "method": "gdpo", "model": MODEL, "lora_r": 8,
            "steps": steps + 1, "warmup": 1}
    specs = [{**base, **point, "label": f"batch {point['batch']} prompt "
              f"{point['prompt_tokens']}"} for point in points]
    results = interleaved(Path(__file__), specs, args.repeats, args.lock)
    RETRIES.append(results)
    return [{**point, "step_s": key_median(runs, "step_s"),
             "peak_rss_mb": key_median(runs, "peak_rss_mb"),
             "step_rss_mb": key_median(runs, "step_rss_mb"),
             "tokens_per_pair": runs[0]["tokens_per_pair"],
             "prompt_tokens_mean": runs[0]["prompt_tokens_mean"]}
            for point, runs in zip(points, results, strict=True)]


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``; returns ``(a, b, r2)``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, 1 - ss_res / ss_tot if ss_tot else 1.0


def length_table(rows: list[dict]) -> list[str]:
    first = rows[0]
    out = ["| prompt tokens | tokens per pair (prompt twice) | step s | time / shortest | "
           "tokens / shortest | peak RSS MB / step adds |", "|---|---|---|---|---|---|"]
    for row in rows:
        out.append(
            f"| {row['prompt_tokens_mean']:.0f} | {row['tokens_per_pair']:.0f} | "
            f"{row['step_s']:.2f} | {row['step_s'] / first['step_s']:.2f}x | "
            f"{row['tokens_per_pair'] / first['tokens_per_pair']:.2f}x | "
            f"{row['peak_rss_mb']:.0f} / +{row['step_rss_mb']:.0f} |")
    return out


def batch_table(rows: list[dict]) -> list[str]:
    first = rows[0]
    out = ["| batch (pairs) | step s | pairs/s | time per pair / batch 1 | "
           "peak RSS MB / step adds |", "|---|---|---|---|---|"]
    for row in rows:
        per_pair = row["step_s"] / row["batch"] / first["step_s"]
        out.append(f"| {row['batch']} | {row['step_s']:.2f} | {row['batch'] / row['step_s']:.2f} | "
                   f"{per_pair:.2f}x | {row['peak_rss_mb']:.0f} / +{row['step_rss_mb']:.0f} |")
    return out


def fit_lines(batches: list[dict], lengths: list[dict]) -> list[str]:
    a, b, r2 = fit_line([r["batch"] for r in batches], [r["peak_rss_mb"] for r in batches])
    ta, tb, tr2 = fit_line([r["batch"] for r in batches], [r["step_s"] for r in batches])
    longest = lengths[-1]
    # Memory per pair at the longest length: scale the per-pair slope by what the step
    # adds per pair there relative to demo lengths (same batch in both sweeps' reference).
    demo = next(r for r in batches if r["batch"] == longest["batch"])
    per_pair_long = b * longest["step_rss_mb"] / max(demo["step_rss_mb"], 1.0)
    fits = math.floor((BUDGET_MB - a) / b)
    fits_long = math.floor((BUDGET_MB - longest["peak_rss_mb"]) / per_pair_long
                           + longest["batch"])
    return [
        f"- Step time grows linearly with batch: {ta:.2f} s + {tb:.3f} s per pair "
        f"(R² {tr2:.3f}).",
        f"- Peak RSS = {a:.0f} MB + {b:.1f} MB per pair at demo lengths "
        f"({batches[0]['tokens_per_pair']:.0f} tokens per pair; R² {r2:.3f}): **largest batch "
        f"in 24 GB ≈ {fits} pairs**.",
        f"- At {longest['tokens_per_pair']:.0f} tokens per pair the steps add "
        f"{longest['step_rss_mb'] / longest['batch']:.0f} MB per pair (vs "
        f"{demo['step_rss_mb'] / demo['batch']:.0f} at demo lengths, same batch): **largest "
        f"batch in 24 GB ≈ {fits_long} pairs** (extrapolated linearly from batch "
        f"{longest['batch']}).",
    ]


def main() -> None:
    worker_entry({"train": train_worker})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args()
    prompt_lengths = [0, 256] if args.quick else [0, 128, 256, 512]
    batch_sizes = [1, 4, 16] if args.quick else [1, 2, 4, 8, 16, 32]
    steps = 2
    lengths = sweep([{"batch": 4, "prompt_tokens": p} for p in prompt_lengths], steps, args)
    batches = sweep([{"batch": b, "prompt_tokens": 0} for b in batch_sizes], steps, args)
    body = "\n".join([
        "## Scaling with sequence length and batch size (`benchmarks/scaling.py`)\n",
        f"pluralign GDPO (compact head, shared prefix), {MODEL} + LoRA r=8, fp32, demo pairs; "
        "longer sequences put neutral background text before each question (prompt and "
        "shared prefix grow, belief and responses stay). Step time: median of "
        f"{steps} steps after one warm-up step, median over {args.repeats} repeats (fresh "
        "process each). Memory: process RSS sampled every 1 ms (psutil); the 24 GB estimates "
        "are for this CPU process (weights, runtime, activations; a GPU run keeps the "
        "runtime off the device but stores about the same activations). "
        f"{retry_note(*RETRIES)} "
        f"Machine: {machine_line()}. Run on {time.strftime('%Y-%m-%d')}"
        f"{' (--quick)' if args.quick else ''}.\n",
        "**Sequence length** (batch 4 pairs):\n", *length_table(lengths), "",
        "**Batch size** (demo lengths):\n", *batch_table(batches), "",
        *fit_lines(batches, lengths),
    ])
    print(body)
    if not args.no_write:
        write_section("scaling", body)


if __name__ == "__main__":
    main()
