"""Sequence formats of the demo across seeds: is GDPO's belief fit a matter of format or seed?

For each seed and format: the demo's data for that seed, SFT then GDPO with the
demo's settings (`pluralign.demo.DemoRunConfig`, DPO skipped: it does not feed
GDPO), each keeping the weights chosen on the validation split carved from the
training records. The comparison that chooses is GDPO's validation JSD (what
checkpoint selection reads); the held-out paraphrases are evaluated only to
report them beside it, never to choose.

Usage:
    .venv/bin/python benchmarks/demo_format_seeds.py --seeds 1 2
    .venv/bin/python benchmarks/demo_format_seeds.py --formats separated separated-options
    .venv/bin/python benchmarks/demo_format_seeds.py --reuse --formats marker-options
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from _opinions import best_validation_jsd
from _report import publish, run_stamp

from pluralign.demo import DemoRunConfig, write_demo_data
from pluralign.eval.evaluate import EvalConfig, evaluate
from pluralign.train.api import train
from pluralign.train.recipe import bf16_is_fast

METRICS = ("jsd", "cbc", "bpc", "rs")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--formats", nargs="+", default=["separated", "separated-options"])
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/demo_format_seeds"))
    parser.add_argument("--no-write", action="store_true", help="Print the table only.")
    parser.add_argument("--reuse", action="store_true",
                        help="Take a (format, seed) whose folder under --out holds a finished "
                             "row.json from that earlier run instead of training it again.")
    return parser.parse_args()


def run_one(fmt: str, seed: int, out: Path) -> dict[str, Any]:
    """SFT and GDPO of one (format, seed); validation and held-out readings."""
    config = DemoRunConfig(sequence_format=fmt, seed=seed, output_dir=str(out))
    train_file, eval_file = write_demo_data(config, out)
    started = time.perf_counter()
    finals: dict[str, Path] = {}
    for method, start in (("sft", config.model), ("gdpo", None)):
        result = train(config.recipe().train_config(
            method, start=start or str(finals["sft"]), train_file=str(train_file),
            output_dir=str(out / method), seed=seed, overwrite=True),  # the benchmark's folder
            console_logs=False)
        finals[method] = result.final_dir
    minutes = (time.perf_counter() - started) / 60
    evaluate(EvalConfig(models=[str(finals["sft"]), str(finals["gdpo"])], data=str(eval_file),
                        output_dir=str(out / "eval"), judge="embedding", n_samples=config.samples,
                        max_new_tokens=config.max_new_tokens, seed=seed, belief_samples=0,
                        bf16=bf16_is_fast(), progress=False))
    models = json.loads((out / "eval" / "eval.json").read_text())["models"]
    validation_jsd = best_validation_jsd(out / "gdpo", result.selected_step)
    row: dict[str, Any] = {"format": fmt, "seed": seed, "train_minutes": minutes,
                           "validation_jsd": validation_jsd}
    for label in ("sft", "gdpo"):
        for name in METRICS:
            row[f"{label}_{name}"] = models[label]["metrics"][name]["value"]
    (out / "row.json").write_text(json.dumps(row))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| format | seed | GDPO validation JSD (selection) | GDPO JSD / CBC / BPC / RS "
             "(held-out) | SFT JSD / CBC / BPC / RS | SFT + GDPO training min |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        gdpo = " / ".join(f"{r[f'gdpo_{m}']:.3f}" for m in METRICS)
        sft = " / ".join(f"{r[f'sft_{m}']:.3f}" for m in METRICS)
        lines.append(f"| `{r['format']}` | {r['seed']} | {r['validation_jsd']:.3f} | {gdpo} | "
                     f"{sft} | {r['train_minutes']:.1f} |")
    for fmt in dict.fromkeys(r["format"] for r in rows):
        mine = [r for r in rows if r["format"] == fmt]
        mean = {k: statistics.fmean(r[k] for r in mine)
                for k in ("validation_jsd", *(f"gdpo_{m}" for m in METRICS))}
        lines.append(f"| `{fmt}` | mean of {len(mine)} | {mean['validation_jsd']:.3f} | "
                     + " / ".join(f"{mean[f'gdpo_{m}']:.3f}" for m in METRICS) + " | | |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    rows = []
    for seed in args.seeds:
        for fmt in args.formats:
            folder = args.out / f"{fmt}-seed{seed}"
            done = folder / "row.json"
            rows.append(json.loads(done.read_text()) if args.reuse and done.is_file()
                        else run_one(fmt, seed, folder))
            print(json.dumps(rows[-1]), flush=True)
    body = (
        "## Demo sequence formats across seeds (`benchmarks/demo_format_seeds.py`)\n\n"
        "The demo's settings (SFT 50 steps, GDPO 60, LoRA r16, beta 0.5; DPO skipped), "
        f"seeds {', '.join(map(str, args.seeds))}, each seed's own demo data. GDPO's "
        "validation JSD is what selection reads and what the formats are compared by; the "
        "held-out casual paraphrases (two generations per prompt) are reported, never "
        f"used to choose. {run_stamp(False)}\n\n{table(rows)}\n")
    publish("demo-format-seeds", body, write=not args.no_write)


if __name__ == "__main__":
    main()
