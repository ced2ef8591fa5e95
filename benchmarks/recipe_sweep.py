"""Choose the training recipe on the development groups' validation splits only.

For each candidate setting and each development group (GlobalOpinionQA
United States, Pakistan, S. Africa; seed 0): SFT, then GDPO from it, with
the weights each stage keeps chosen on a validation split carved from the
training questions. The candidates are scored on that validation split
only (belief JSD read in one forward pass; CBC, BPC, RS and marker starts
from belief-first generations), never on the held-out framings or questions
that `opinion_repro.py` reports. Every candidate is today's recipe at the
reproduction's size (LoRA on the last 10 layers) with one thing changed, and
candidates that differ only after SFT share one SFT run. Stages run two at a
time on a CPU, one thread each (``--workers``), as in `opinion_repro.py`.

Rule, fixed before the run: among the candidates whose GDPO keeps BPC and RS
within 0.02 of its SFT's, those whose GDPO CBC is at least 0.9 if any, the
lowest mean validation JSD is kept. Nothing is chosen per group.

Usage:
    .venv/bin/python benchmarks/recipe_sweep.py                  # every candidate
    .venv/bin/python benchmarks/recipe_sweep.py --only base beta-0.1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _opinions import (
    REPRO_LORA_TOP_LAYERS,
    SHORT,
    DataSpec,
    build_group,
    evaluate_models,
    method_values,
    write_validation,
)
from _report import machine_line, write_section

from pluralign.runs import FINAL_DIR
from pluralign.train.recipe import RECIPE, Recipe

#: Today's recipe at the reproduction's size: what every candidate changes one thing of.
BASE = RECIPE.replace(lora_top_layers=REPRO_LORA_TOP_LAYERS)
#: name -> (what it changes, the recipe). Every candidate uses the same data and seed.
CANDIDATES: dict[str, tuple[str, Recipe]] = {
    "base": (f"today's recipe: lr {BASE.preference_learning_rate}, beta {BASE.beta}, "
             f"calibration / belief-NLL weights {BASE.calibration_weight:g}, LoRA "
             f"r{BASE.lora_r} on the last {BASE.lora_top_layers} layers", BASE),
    "beta-0.1": ("beta 0.1 (the paper's)", BASE.replace(beta=0.1)),
    "weights-2": ("calibration and belief-NLL weights 2",
                  BASE.replace(calibration_weight=2.0, belief_nll_weight=2.0)),
    "lr-1e-3": ("DPO / GDPO learning rate 1e-3", BASE.replace(preference_learning_rate=1e-3)),
    "lora-r4": ("LoRA rank 4 (SFT too)", BASE.replace(lora_r=4)),
    "options": ("answer options listed before the question (`separated-options`, SFT too)",
                BASE.replace(sequence_format="separated-options")),
    "marked-options": ("answer options listed before the question, each written as a belief "
                       "is after the slot (`1<Oppose>`; `separated-marked-options`, SFT too)",
                       BASE.replace(sequence_format="separated-marked-options")),
}
CBC_BAR = 0.9
METRICS = ("jsd", "cbc", "bpc", "rs", "marker_start")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(SHORT))
    parser.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--out", type=Path, default=Path("runs/recipe_sweep"))
    parser.add_argument("--data", type=Path, default=Path("runs/opinion_repro"),
                        help="where the groups' data is built (shared with opinion_repro.py)")
    parser.add_argument("--samples", type=int, default=4, help="generations per prompt")
    parser.add_argument("--workers", type=int, default=2, help="stages run at once")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    parser.add_argument("--table-only", action="store_true",
                        help="rebuild the table from a finished run's folders (--out)")
    parser.add_argument("--sft-steps", type=int, default=RECIPE.sft_steps)
    parser.add_argument("--pref-steps", type=int, default=RECIPE.preference_steps)
    return parser.parse_args()


def sft_key(recipe: Recipe) -> str:
    """Candidates that differ only after SFT share one SFT run."""
    return (f"sft-r{recipe.lora_r}-top{recipe.lora_top_layers}-lr{recipe.sft_learning_rate}"
            f"-s{recipe.sft_steps}{'-framed' if recipe.frame_prompts else ''}"
            f"{'' if recipe.sequence_format == 'auto' else '-' + recipe.sequence_format}")


def group_files(group: str, args: argparse.Namespace) -> dict[str, Path]:
    """The group's data, built as `opinion_repro.py` builds it (reused when there)."""
    short = SHORT[group]
    return build_group(group, DataSpec(cache_dir=args.data / "llm-cache" / short),
                       args.data / short / "data")


def candidate_recipe(name: str, args: argparse.Namespace) -> Recipe:
    return CANDIDATES[name][1].replace(sft_steps=args.sft_steps,
                                       preference_steps=args.pref_steps)


def sft_folder(recipe: Recipe, group: str, args: argparse.Namespace) -> Path:
    return args.out / sft_key(recipe) / SHORT[group]


def train_sft(job: tuple[Recipe, str, argparse.Namespace]) -> float:
    """One shared SFT run; its wall seconds."""
    from pluralign.train.api import train

    recipe, group, args = job
    started = time.perf_counter()
    train(recipe.train_config("sft", start="smollm2-135m", train_file=str(
        group_files(group, args)["train"]), output_dir=str(sft_folder(recipe, group, args)),
        seed=0, overwrite=True), console_logs=False)
    return time.perf_counter() - started


def run_candidate(job: tuple[str, str, argparse.Namespace]) -> dict[str, Any]:
    """GDPO of one candidate for one group from its SFT, then both scored on validation."""
    from pluralign.train.api import train

    name, group, args = job
    recipe, files = candidate_recipe(name, args), group_files(group, args)
    out = args.out / name / SHORT[group]
    finals = {"sft": sft_folder(recipe, group, args) / FINAL_DIR}
    started = time.perf_counter()
    finals["gdpo"] = train(recipe.train_config(
        "gdpo", start=str(finals["sft"]), train_file=str(files["train"]),
        output_dir=str(out / "gdpo"), seed=0, overwrite=True), console_logs=False).final_dir
    seconds = time.perf_counter() - started
    validation = write_validation(files["train"], recipe.validation_fraction, 0,
                                  out / "validation.jsonl")
    summary = evaluate_models(finals, validation, out / "eval", seed=0, n_samples=args.samples)
    return {"scores": scores_of(summary, list(finals)), "gdpo_minutes": seconds / 60}


def scores_of(summary: dict[str, Any], methods: list[str]) -> dict[str, dict[str, float]]:
    """Mean validation metrics per method of one evaluation of ``methods``."""
    values = method_values(summary, methods, METRICS)
    return {method: {m: _mean(values[(method, m)]) for m in METRICS} for method in methods}


def rescore(name: str, group: str, args: argparse.Namespace) -> dict[str, Any]:
    """A finished (candidate, group) read back from its folders (``--table-only``)."""
    out = args.out / name / SHORT[group]
    summary = json.loads((out / "eval" / "eval.json").read_text())
    summary["rows"] = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").open()]
    return {"scores": scores_of(summary, ["sft", "gdpo"]),
            "gdpo_minutes": runtime_minutes(out / "gdpo")}


def runtime_minutes(run_dir: Path) -> float:
    """The trainer's own train_runtime of a finished run, in minutes."""
    from pluralign.train.metrics import read_metrics

    runtime = [r["train_runtime"] for r in read_metrics(run_dir) if "train_runtime" in r]
    return runtime[-1] / 60 if runtime else float("nan")


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else float("nan")


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_all(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Shared SFT runs first, then every (candidate, group) GDPO and its scoring, on
    ``args.workers`` one-thread processes. Returns the results and SFT minutes per key."""
    for group in args.groups:  # built once, before the workers read it
        group_files(group, args)
    sft_jobs: dict[tuple[str, str], tuple[Recipe, str, argparse.Namespace]] = {}
    for name in args.only:
        recipe = candidate_recipe(name, args)
        for group in args.groups:
            if not (sft_folder(recipe, group, args) / FINAL_DIR).is_dir():
                sft_jobs.setdefault((sft_key(recipe), group), (recipe, group, args))
    jobs = [(name, group, args) for name in args.only for group in args.groups]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        sft_seconds = dict(zip(sft_jobs, pool.map(train_sft, sft_jobs.values()), strict=True))
        outcomes = list(pool.map(run_candidate, jobs))
    results: dict[str, dict[str, Any]] = {}
    for (name, group, _), outcome in zip(jobs, outcomes, strict=True):
        results.setdefault(name, {})[group] = outcome
    sft_minutes = {f"{key[0]}/{SHORT[key[1]]}": s / 60 for key, s in sft_seconds.items()}
    return results, sft_minutes


def group_mean(per_group: dict[str, Any], method: str, metric: str) -> float:
    """A candidate's validation metric averaged over the groups (each counted once)."""
    return sum(r["scores"][method][metric] for r in per_group.values()) / len(per_group)


def kept_candidate(results: dict[str, dict[str, Any]]) -> str | None:
    """The rule of the module docstring."""
    clean = {name: per_group for name, per_group in results.items()
             if group_mean(per_group, "gdpo", "bpc") >= group_mean(per_group, "sft", "bpc") - 0.02
             and group_mean(per_group, "gdpo", "rs") >= group_mean(per_group, "sft", "rs") - 0.02}
    calibrated = {n: g for n, g in clean.items() if group_mean(g, "gdpo", "cbc") >= CBC_BAR}
    pool = calibrated or clean
    return min(pool, key=lambda n: group_mean(pool[n], "gdpo", "jsd")) if pool else None


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    if args.table_only:
        results = {name: {group: rescore(name, group, args) for group in args.groups}
                   for name in args.only}
        sft_minutes = {f"{sft_key(recipe)}/{SHORT[group]}": runtime_minutes(
            sft_folder(recipe, group, args)) for name in args.only
            for recipe in [candidate_recipe(name, args)] for group in args.groups}
    else:
        results, sft_minutes = run_all(args)
    (args.out / "results.json").write_text(json.dumps(
        {"results": results, "sft_minutes": sft_minutes}, indent=1))
    header = ("| candidate | what changes | GDPO validation JSD (" + " / ".join(
        SHORT[g] for g in args.groups) + ") | mean | SFT JSD (mean) | GDPO CBC / SFT CBC | "
              "GDPO BPC / SFT BPC | GDPO RS / SFT RS | marker starts | GDPO min per group |")
    table = [header, "|" + "---|" * 10]
    for name, per_group in results.items():
        def value(method: str, metric: str, per_group: dict = per_group) -> str:
            return f"{group_mean(per_group, method, metric):.3f}"

        jsds = " / ".join(f"{r['scores']['gdpo']['jsd']:.3f}" for r in per_group.values())
        minutes = sum(r["gdpo_minutes"] for r in per_group.values()) / len(per_group)
        pairs = " | ".join(f"{value('gdpo', m)} / {value('sft', m)}" for m in ("cbc", "bpc", "rs"))
        table.append(
            f"| `{name}` | {CANDIDATES[name][0]} | {jsds} | {value('gdpo', 'jsd')} | "
            f"{value('sft', 'jsd')} | {pairs} | {value('gdpo', 'marker_start')} | {minutes:.1f} |")
    sft = ", ".join(f"{key} {minutes:.1f}" for key, minutes in sft_minutes.items())
    done = ("table rebuilt from the run's folders (--table-only)" if args.table_only
            else f"total {(time.perf_counter() - started) / 60:.1f} min")
    body = (
        "## Recipe sweep on the development groups (`benchmarks/recipe_sweep.py`)\n\n"
        "Every candidate is today's recipe at the reproduction's size with one thing changed; "
        "it trains SFT (shared by candidates that differ only after it) then GDPO, seed 0, on "
        "each development group's training questions, and is scored on the validation split "
        "carved from them (held-out wordings of some training questions), never on the "
        "held-out framings or questions that the reproduction reports. "
        f"{args.samples} generations per validation prompt; text after the drawn belief "
        "decoded as `pluralign eval` does by default. Rule, fixed before the run: among the "
        "candidates whose GDPO keeps BPC and RS within 0.02 of its SFT's, those with GDPO CBC "
        f"at least {CBC_BAR} if any, the lowest mean validation JSD. "
        f"**Kept: `{kept_candidate(results)}`.** SFT minutes: {sft or 'not timed'}. "
        f"Machine: {machine_line()}; {args.workers} stages at a time, one thread each. Run on "
        f"{time.strftime('%Y-%m-%d')}; {done}.\n\n" + "\n".join(table)
    )
    print(body)
    if not args.no_write:
        write_section("recipe-sweep", body)


if __name__ == "__main__":
    main()
