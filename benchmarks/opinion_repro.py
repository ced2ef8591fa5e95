"""Reproduce the GDPO paper's opinion finding on real GlobalOpinionQA with the bundled model.

For each group (country): build the data from the shared GlobalOpinionQA dev
file with the bundled SmolLM2-135M as the response writer (split by question;
one framing of each training question held out), then for each seed train
SFT, then DPO and GDPO from the SFT model, with the recipe of
`pluralign.train.recipe` (its docstring says where the settings come from).
Every model is evaluated

* on the held-out framings of the training questions (the paper's setting):
  JSD, CBC, BPC (offline embedding judge), RS, responses opening with a marker;
* on held-out questions (never trained on): JSD only, reported with no target.

Means are over seeds and prompts, with a 95% two-level bootstrap interval
(seeds, then prompts). The table goes to BENCHMARKS.md beside the paper's
Table 2 (GPT-2 Large and Pythia-2.8B). Every number comes from the run.

The stages (a group's data; per seed SFT, then DPO and GDPO side by side,
then the evaluation) run two at a time on a CPU, each on one core
(``--workers``): a one-thread training of this size does about as much per
minute as a two-thread one, so two side by side nearly halve the wall time. LoRA sits on
the last 10 layers (``--lora-top-layers``; the demo trains every layer): that is
what fits 3 groups x 3 seeds in an hour on 2 cores.

Usage:
    .venv/bin/python benchmarks/opinion_repro.py            # US, PK, SA, 3 seeds
    .venv/bin/python benchmarks/opinion_repro.py --quick    # United States, 1 seed
    .venv/bin/python benchmarks/opinion_repro.py --workers 1 --lora-top-layers 0
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from _opinions import (
    METHODS,
    REPRO_LORA_TOP_LAYERS,
    REPRO_SEQUENCE_FORMAT,
    SHORT,
    build_data,
    evaluate_models,
    method_values,
    seed_prompt_interval,
)
from _report import machine_line, write_section
from _stages import Task, default_workers, run_tasks, worker_threads

from pluralign.train.recipe import BASE_DTYPES, RECIPE, Recipe

# Table 2 of the GDPO paper (JSD, CBC, BPC, RS) for SFT / DPO / GDPO.
PAPER = {
    "US": {"GPT-2 Large": {"sft": (0.261, 0.854, 0.404, 0.426), "dpo": (0.385, 0.773, 0.441, 0.467),
                           "gdpo": (0.188, 0.860, 0.627, 0.479)},
           "Pythia-2.8B": {"sft": (0.122, 0.987, 0.471, 0.520), "dpo": (0.352, 0.899, 0.469, 0.527),
                           "gdpo": (0.068, 0.989, 0.582, 0.554)}},
    "PK": {"GPT-2 Large": {"sft": (0.263, 0.869, 0.395, 0.450), "dpo": (0.370, 0.609, 0.390, 0.465),
                           "gdpo": (0.187, 0.904, 0.465, 0.469)},
           "Pythia-2.8B": {"sft": (0.126, 0.990, 0.435, 0.539), "dpo": (0.328, 0.950, 0.387, 0.540),
                           "gdpo": (0.083, 0.991, 0.571, 0.582)}},
    "SA": {"GPT-2 Large": {"sft": (0.295, 0.836, 0.350, 0.417), "dpo": (0.482, 0.742, 0.362, 0.402),
                           "gdpo": (0.185, 0.905, 0.537, 0.465)},
           "Pythia-2.8B": {"sft": (0.137, 0.987, 0.439, 0.524), "dpo": (0.386, 0.930, 0.469, 0.511),
                           "gdpo": (0.087, 0.990, 0.588, 0.536)}},
}
FRAMING_METRICS = ("jsd", "cbc", "bpc", "rs", "marker_start")
#: The issue's targets on held-out framings (GDPO), checked and printed, never tuned against.
JSD_TARGET, JSD_STRETCH, CBC_TARGET = 0.12, 0.10, 0.9


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(SHORT))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--questions", type=int, default=40, help="GlobalOpinionQA rows per group")
    parser.add_argument("--samples", type=int, default=2,
                        help="belief-first generations per held-out framing prompt")
    parser.add_argument("--sft-steps", type=int, default=RECIPE.sft_steps)
    parser.add_argument("--pref-steps", type=int, default=RECIPE.preference_steps)
    parser.add_argument("--sequence-format", default=REPRO_SEQUENCE_FORMAT,
                        help="sequence format of every stage (default "
                             f"{REPRO_SEQUENCE_FORMAT}, kept by recipe_sweep.py; auto: the "
                             "records' own)")
    parser.add_argument("--lora-top-layers", type=int, default=REPRO_LORA_TOP_LAYERS,
                        help="LoRA on the last N layers only (default: "
                             f"{REPRO_LORA_TOP_LAYERS}; 0: all, as the demo trains)")
    parser.add_argument("--base-dtype", default=RECIPE.base_dtype,
                        choices=BASE_DTYPES,
                        help="frozen base weights' precision under LoRA (default "
                             f"{RECIPE.base_dtype}; auto: bfloat16 where bf16 is fast)")
    parser.add_argument("--out", type=Path, default=Path("runs/opinion_repro"))
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true",
                        help="United States only, one seed")
    parser.add_argument("--workers", type=int, default=None,
                        help="stages run at once, each on its share of the cores "
                             "(default: 2 on a CPU of 2 or more cores, else 1)")
    args = parser.parse_args()
    if args.quick:
        args.groups, args.seeds = ["United States"], [0]
    if args.workers is None:
        args.workers = default_workers()
    if args.workers < 1:
        parser.error(f"--workers: must be >= 1, got {args.workers}")
    return args


def run_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe with this run's steps, sequence format and LoRA layers."""
    return RECIPE.replace(sft_steps=args.sft_steps, preference_steps=args.pref_steps,
                          sequence_format=args.sequence_format,
                          lora_top_layers=args.lora_top_layers, base_dtype=args.base_dtype)


def evaluate_seed(files: dict[str, Path], finals: dict[str, Path], seed: int, seed_dir: Path,
                  samples: int) -> dict[str, Any]:
    """Every model of a seed on held-out framings and held-out questions: per-prompt values
    and the reference lines."""
    values: dict[tuple[str, str, str], dict[str, float]] = {}
    lines: dict[str, dict[str, float]] = {}
    for setting, key, n_samples in (("framings", "paraphrase", samples),
                                    ("questions", "questions", 0)):
        summary = evaluate_models(finals, files[key], seed_dir / f"eval-{key}", seed,
                                  n_samples)
        lines[setting] = {k: v["value"] for k, v in summary["reference_lines"].items()}
        metrics = FRAMING_METRICS if setting == "framings" else ("jsd",)
        for (method, metric), per_prompt in method_values(summary, list(finals),
                                                          metrics).items():
            values[(setting, method, metric)] = per_prompt
    return {"values": values, "lines": lines}


def run_groups(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every group's data and (group, seed) stages, ``args.workers`` processes at a time, each
    with its share of the cores: on a small CPU two one-thread trainings do more per minute
    than one two-thread training (a one-thread quick run took 20.3 min, the two-thread one
    21.1). Per group: the per-prompt values of each seed in seed order."""
    tasks = [Task(SHORT.get(group, group), partial(build_data, group, args),
                  {"sft": "base", "dpo": "sft", "gdpo": "sft"},
                  partial(evaluate_seed, samples=args.samples)) for group in args.groups]
    graph = run_tasks(tasks, args.seeds, run_recipe(args), args.out, args.workers)
    return [_group_result(task.name, graph.built[task.name][1],
                          [graph.done[(task.name, s)] for s in args.seeds], args)
            for task in tasks]


def _group_result(short: str, data_seconds: float, seed_results: list[dict[str, Any]],
                  args: argparse.Namespace) -> dict[str, Any]:
    """One group's seeds merged: per metric a list of per-prompt values (one per seed)."""
    values: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    seconds = {m: 0.0 for m in METHODS}
    for job in seed_results:
        for key, per_prompt in job["values"].items():
            values.setdefault(key, []).append(per_prompt)
        for method, s in job["seconds"].items():
            seconds[method] += s
    return {"short": short, "values": values, "lines": seed_results[-1]["lines"],
            "seconds": seconds, "data_seconds": data_seconds,
            "build": json.loads((args.out / short / "data" / "build.json").read_text())}


def _cell(values: list[dict[str, float]], *, interval: bool) -> tuple[str, float]:
    mean, low, high = seed_prompt_interval(values)
    if mean != mean:  # NaN: nothing measured
        return "n/a", mean
    text = f"{mean:.3f} [{low:.2f}, {high:.2f}]" if interval else f"{mean:.3f}"
    return text, mean


def group_rows(result: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Table rows of one group and the means behind them (for the target checks)."""
    short, values = result["short"], result["values"]
    rows, means = [], {}
    for setting in ("framings", "questions"):
        metrics = FRAMING_METRICS if setting == "framings" else ("jsd",)
        for method in METHODS:
            cells = []
            for metric in FRAMING_METRICS:
                if metric not in metrics:
                    cells.append("–")
                    continue
                text, mean = _cell(values[(setting, method, metric)],
                                   interval=metric in ("jsd", "bpc", "rs"))
                cells.append(text)
                means.setdefault(f"{setting}/{method}", {})[metric] = mean
            paper = PAPER.get(short, {})
            ref = (f"{paper['GPT-2 Large'][method][0]:.3f} / {paper['Pythia-2.8B'][method][0]:.3f}"
                   if paper else "–")
            rows.append(f"| {short} | held-out {setting} | {method} | " + " | ".join(cells)
                        + f" | {ref} |")
        lines = result["lines"][setting]
        rows.append(f"| {short} | held-out {setting} | reference lines (JSD) | " + ", ".join(
            f"{name} {value:.3f}" for name, value in lines.items()) + " | | | | | |")
    return rows, means


def target_checks(short: str, means: dict[str, dict[str, float]]) -> str:
    """The issue's targets on held-out framings, each marked met or missed."""
    sft, dpo, gdpo = (means[f"framings/{m}"] for m in METHODS)
    checks = [
        ("GDPO < SFT < DPO (JSD)", gdpo["jsd"] < sft["jsd"] < dpo["jsd"]),
        (f"GDPO JSD <= {JSD_TARGET}", gdpo["jsd"] <= JSD_TARGET),
        (f"stretch <= {JSD_STRETCH}", gdpo["jsd"] <= JSD_STRETCH),
        (f"GDPO CBC >= {CBC_TARGET}", gdpo["cbc"] >= CBC_TARGET),
        ("no GDPO response opens with a marker", gdpo["marker_start"] == 0),
        ("GDPO BPC >= SFT", gdpo["bpc"] >= sft["bpc"]),
        ("GDPO RS >= SFT", gdpo["rs"] >= sft["rs"]),
    ]
    return f"{short} targets: " + "; ".join(f"{name} {'met' if ok else 'MISSED'}"
                                             for name, ok in checks)


def main() -> None:
    args = parse_args()
    table = ["| group | evaluated on | method | JSD [95% CI] | CBC | BPC [95% CI] | RS [95% CI] "
             "| marker starts | paper JSD (GPT-2 L / Pythia-2.8B) |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes, checks = [], []
    started = time.perf_counter()
    for result in run_groups(args):
        rows, means = group_rows(result)
        table += rows
        checks.append(target_checks(result["short"], means))
        build = result["build"]
        notes.append(
            f"{result['short']}: records {build['counts']}, prompts {build['prompts']}; data "
            f"{result['data_seconds'] / 60:.1f} min, training min (all seeds) "
            + ", ".join(f"{m} {s / 60:.1f}" for m, s in result["seconds"].items()))
        print("\n".join(table + checks + notes), flush=True)
    recipe = run_recipe(args)
    fmt = ("default sequence format (`<|belief|>` separator)" if recipe.sequence_format == "auto"
           else f"sequence format `{recipe.sequence_format}`")
    layers = (f" on the last {recipe.lora_top_layers} layers" if recipe.lora_top_layers else "")
    body = (
        "## GlobalOpinionQA reproduction (`benchmarks/opinion_repro.py`)\n\n"
        f"Source `../shared/data/globalopinionqa/dev_groups.jsonl`, first {args.questions} rows "
        "per group; responses written by the bundled SmolLM2-135M-Instruct (`framed` writer: "
        "3 fixed framings around the unchanged question, one response per belief), 12 pairs "
        "per question, split by question (75% train / 25% held-out questions), one framing of "
        f"each training question held out; {fmt}. "
        f"Recipe (`pluralign.train.recipe`): SFT {recipe.sft_steps} steps lr "
        f"{recipe.sft_learning_rate}, then DPO and GDPO {recipe.preference_steps} steps lr "
        f"{recipe.preference_learning_rate} beta {recipe.beta} from the SFT model; batch "
        f"{recipe.batch_size}, LoRA r={recipe.lora_r}{layers} on {recipe.resolved_base_dtype()} "
        "base weights; each stage keeps the weights "
        "that did best on a validation split carved from the training questions (belief JSD "
        "for GDPO, the validation loss for SFT and DPO). Seeds "
        f"{', '.join(map(str, args.seeds))}: mean over seeds and prompts with a 95% two-level "
        "bootstrap interval. Generations draw the belief at temperature 1 and write the text "
        "after it greedily (`pluralign eval`'s default, chosen on validation splits: "
        "\"Temperature after the drawn belief\"). BPC (offline embedding judge) and RS count "
        "every generation. "
        f"Held-out questions: JSD only. Machine: {machine_line()}; {args.workers} stages at a "
        f"time, {worker_threads(args.workers)} thread(s) each. Run on "
        f"{time.strftime('%Y-%m-%d')}; total {(time.perf_counter() - started) / 60:.1f} min.\n\n"
        + "\n".join(table) + "\n\n" + "\n".join(f"- {c}" for c in checks + notes)
    )
    if not args.no_write:
        write_section("opinion-repro" + ("-quick" if args.quick else ""), body)


if __name__ == "__main__":
    main()
