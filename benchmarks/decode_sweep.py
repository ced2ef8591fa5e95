"""Choose the temperature of what follows a drawn belief, on validation prompts only.

A belief-first generation draws the belief marker from the model's belief
distribution (that draw is what CBC, BPC and RS are conditioned on, and the
JSD reading never depends on decoding), then writes the description and the
response. This script measures CBC, BPC and RS of SFT, DPO and GDPO at several
``response_temperature`` values, on the validation split each training run
carved from its training questions (held-out wordings of trained questions,
the split that already selects checkpoints), never on a reported prompt. It
reuses the models of a finished ``benchmarks/opinion_repro.py`` run (its
``--out`` folder) and needs no training. One setting is chosen for every group
and method; nothing is tuned per group.

Usage:
    .venv/bin/python benchmarks/decode_sweep.py --runs runs/opinion_repro
    .venv/bin/python benchmarks/decode_sweep.py --runs /tmp/repro3x3 --temperatures 1 0.7 0
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml
from _opinions import (
    METHODS,
    SHORT,
    evaluate_models,
    method_values,
    seed_prompt_interval,
    write_validation,
)
from _report import machine_line, publish

METRICS = ("cbc", "bpc", "rs")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True,
                        help="output folder of a finished opinion_repro.py run")
    parser.add_argument("--groups", nargs="+", default=list(SHORT.values()))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--temperatures", nargs="+", type=float, default=[1.0, 0.7, 0.3, 0.0])
    parser.add_argument("--samples", type=int, default=4, help="generations per prompt")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    return parser.parse_args()


def sweep_seed(job: tuple[Path, str, int, list[float], int]) -> dict[tuple, dict[str, float]]:
    """Per-prompt CBC / BPC / RS of every method at every temperature for one seed."""
    import torch

    torch.set_num_threads(1)
    runs, group, seed, temperatures, samples = job
    seed_dir = runs / group / f"seed{seed}"
    work = runs / "decode-sweep" / group / f"seed{seed}"
    config = yaml.safe_load((seed_dir / "gdpo" / "config.yaml").read_text())
    data = write_validation(config["train_file"], config["validation_fraction"],
                            config["seed"], work / "validation.jsonl")
    finals = {m: seed_dir / m / "final" for m in METHODS}
    values: dict[tuple, dict[str, float]] = {}
    for temperature in temperatures:
        summary = evaluate_models(finals, data, work / f"t{temperature:g}", seed, samples,
                                  response_temperature=temperature)
        for (method, metric), per_prompt in method_values(summary, list(finals),
                                                          METRICS).items():
            values[(group, temperature, method, metric)] = per_prompt
    return values


def merge(values: list[dict[tuple, dict[str, float]]]) -> dict[tuple, list[dict[str, float]]]:
    """Per (group, temperature, method, metric): the per-prompt values of each seed."""
    merged: dict[tuple, list[dict[str, float]]] = {}
    for seed_values in values:
        for key, per_prompt in seed_values.items():
            merged.setdefault(key, []).append(per_prompt)
    return merged


def kept_temperature(merged: dict[tuple, list[dict[str, float]]],
                     args: argparse.Namespace) -> tuple[float, dict[float, float]]:
    """The temperature with the highest GDPO CBC averaged over the groups (the issue's
    target that decoding moves), and that mean for every temperature."""
    means = {t: sum(seed_prompt_interval(merged[(g, t, "gdpo", "cbc")])[0]
                    for g in args.groups) / len(args.groups) for t in args.temperatures}
    return max(means, key=lambda t: means[t]), means


def table(merged: dict[tuple, list[dict[str, float]]], args: argparse.Namespace) -> str:
    lines = ["| group | response temperature | method | CBC | BPC | RS |",
             "|---|---|---|---|---|---|"]
    for group in args.groups:
        for temperature in args.temperatures:
            for method in METHODS:
                cells = []
                for metric in METRICS:
                    mean, low, high = seed_prompt_interval(merged[(group, temperature, method,
                                                                   metric)])
                    cells.append(f"{mean:.3f} [{low:.2f}, {high:.2f}]")
                lines.append(f"| {group} | {temperature:g} | {method} | "
                             + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    jobs = [(args.runs, g, s, args.temperatures, args.samples)
            for g in args.groups for s in args.seeds]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        merged = merge(list(pool.map(sweep_seed, jobs)))
    kept, means = kept_temperature(merged, args)
    minutes = (time.perf_counter() - started) / 60
    body = (
        "## Temperature after the drawn belief (`benchmarks/decode_sweep.py`)\n\n"
        f"The models of the 3 groups x 3 seeds reproduction ({', '.join(args.groups)}; seeds "
        f"{', '.join(map(str, args.seeds))}), each evaluated on the validation split its "
        "training carved from the training questions (held-out wordings of trained questions, "
        "never a reported prompt). The belief marker is always drawn at temperature 1 from the "
        "model's distribution; the description and the response after it are decoded at the "
        f"temperature in the table (0: greedy), top_p 1, {args.samples} generations per prompt, "
        "at most 40 new tokens. Mean over seeds and prompts with a 95% two-level bootstrap "
        f"interval. Rule: the temperature with the highest GDPO CBC averaged over the groups; "
        f"**kept: {kept:g}** (" + ", ".join(f"{t:g}: {m:.3f}" for t, m in means.items())
        + f"). {machine_line()}; {args.workers} seeds at a time; total {minutes:.1f} min.\n\n"
        + table(merged, args) + "\n")
    publish("decode-sweep", body, write=not args.no_write)


if __name__ == "__main__":
    main()
