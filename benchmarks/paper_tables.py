"""Every row of the GDPO paper's opinion table (Table 2 and its baselines) and the review task.

Opinions (GlobalOpinionQA US / PK / SA, data as in `opinion_repro.py`): SFT,
Uniform SFT and ICF from the bundled SmolLM2-135M; DPO, GDPO, both GDPO
ablations, KTO and GDPO-KTO from the SFT model; 3-shot and 5-shot prompting of
the bundled model (shots from the training split, never from the evaluated
question). All with the recipe of `pluralign.train.recipe`, evaluated on the
held-out framings: JSD, CBC, BPC (offline embedding judge), RS, as mean over
seeds and prompts with a 95% two-level bootstrap interval, beside the paper's
Table 2 where it has the row.

Reviews (the shared Amazon movie-review sample, `{rating}{review}` format):
SFT, DPO and GDPO, JSD and BPC (offline nearest-review rating judge) on
held-out movies, and the reward margins of DPO and GDPO against the SFT model
split into majority / lowest-minority / other pairs (the paper's Figures 2
and 3; `margins.png` of the evaluation folder).

Usage:
    .venv/bin/python benchmarks/paper_tables.py            # 3 groups, 3 seeds, reviews
    .venv/bin/python benchmarks/paper_tables.py --quick    # US and reviews, 1 seed
    .venv/bin/python benchmarks/paper_tables.py --quick --steps 2 --no-write   # wiring check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _opinions import (
    SHORT,
    DataSpec,
    build_group,
    per_prompt_values,
    seed_prompt_interval,
)
from _report import machine_line, publish

from pluralign.data.builders.reviews import ReviewsConfig, build_reviews
from pluralign.data.records import write_examples
from pluralign.eval.evaluate import EvalConfig, evaluate
from pluralign.train.api import train
from pluralign.train.recipe import RECIPE, Recipe

REVIEWS = Path(__file__).resolve().parents[1].parent / (
    "shared/data/movie_reviews/movies_and_tv_5core_sample.jsonl")
#: Trained methods and the model each starts from ("base": the bundled model).
OPINION_METHODS = {"sft": "base", "uniform-sft": "base", "icf": "base", "dpo": "sft",
                   "gdpo": "sft", "gdpo-calibration": "sft", "gdpo-conditioned": "sft",
                   "kto": "sft", "gdpo-kto": "sft"}
REVIEW_METHODS = {"sft": "base", "dpo": "sft", "gdpo": "sft"}
KSHOTS = (3, 5)
OPINION_METRICS = ("jsd", "cbc", "bpc", "rs")
#: The paper's Table 2 JSD (GPT-2 Large / Pythia-2.8B; k-shot: 3-shot GPT-2 L / 5-shot Pythia).
PAPER_JSD = {
    "US": {"k-shot": (0.513, 0.477), "icf": (0.269, 0.134), "sft": (0.261, 0.122),
           "dpo": (0.385, 0.352), "gdpo": (0.188, 0.068)},
    "PK": {"k-shot": (0.530, 0.480), "icf": (0.307, 0.140), "sft": (0.263, 0.126),
           "dpo": (0.370, 0.328), "gdpo": (0.187, 0.083)},
    "SA": {"k-shot": (0.523, 0.499), "icf": (0.318, 0.211), "sft": (0.295, 0.137),
           "dpo": (0.482, 0.386), "gdpo": (0.185, 0.087)},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(SHORT))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--questions", type=int, default=40, help="GlobalOpinionQA rows per group")
    parser.add_argument("--movies", type=int, default=None,
                        help="keep the first N movies of the review sample (default: all)")
    parser.add_argument("--samples", type=int, default=2, help="generations per prompt")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of every stage (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=Path("runs/paper_tables"))
    parser.add_argument("--quick", action="store_true", help="United States and reviews, seed 0")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args()
    if args.quick:
        args.groups, args.seeds = ["United States"], [0]
    return args


def train_all(methods: dict[str, str], recipe: Recipe, train_file: Path, seed: int,
              out: Path, **overrides: Any) -> tuple[dict[str, Path], dict[str, float]]:
    """Train ``methods`` in order (each from the bundled model or the SFT model)."""
    finals: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    for method, start_from in methods.items():
        start = "smollm2-135m" if start_from == "base" else str(finals[start_from])
        started = time.perf_counter()
        result = train(recipe.train_config(
            method, start=start, train_file=str(train_file), output_dir=str(out / method),
            seed=seed, overwrite=True, **overrides),  # the benchmark owns its folders
            console_logs=False)
        finals[method] = result.final_dir
        seconds[method] = time.perf_counter() - started
    return finals, seconds


def run_eval(out: Path, data: Path, seed: int, samples: int, **settings: Any) -> dict[str, Any]:
    """eval.json of one evaluation plus its per-prompt rows."""
    evaluate(EvalConfig(data=str(data), output_dir=str(out), n_samples=samples, max_new_tokens=40,
                        seed=seed, belief_samples=0, progress=False, **settings))
    summary = json.loads((out / "eval.json").read_text())
    summary["rows"] = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    return summary


def opinion_group(group: str, args: argparse.Namespace, recipe: Recipe) -> list[str]:
    """Table rows of one group: every method and both k-shot baselines, mean over seeds."""
    short = SHORT.get(group, group)
    out = args.out / short
    files = build_group(group, DataSpec(questions=args.questions,
                                        cache_dir=args.out / "llm-cache"), out / "data")
    values: dict[str, dict[str, list[dict[str, float]]]] = {}
    seconds: dict[str, float] = {}
    for seed in args.seeds:
        seed_dir = out / f"seed{seed}"
        finals, spent = train_all(OPINION_METHODS, recipe, files["train"], seed, seed_dir)
        for method, s in spent.items():
            seconds[method] = seconds.get(method, 0.0) + s
        summaries = [run_eval(seed_dir / "eval", files["paraphrase"], seed, args.samples,
                              models=[str(p) for p in finals.values()], judge="embedding")]
        labels = dict(zip(finals, summaries[0]["models"], strict=True))
        for k in KSHOTS:
            summary = run_eval(seed_dir / f"eval-{k}shot", files["paraphrase"], seed,
                               args.samples, kshot=k, kshot_pool=str(files["train"]),
                               judge="embedding")
            summaries.append(summary)
            labels[f"{k}-shot"] = next(iter(summary["models"]))
        rows = [row for summary in summaries for row in summary["rows"]]
        for method, label in labels.items():
            for metric in OPINION_METRICS:
                values.setdefault(method, {}).setdefault(metric, []).append(
                    per_prompt_values(rows, label, metric))
    table = []
    for method, metrics in values.items():
        cells = []
        for metric in OPINION_METRICS:
            mean, low, high = seed_prompt_interval(metrics[metric])
            cells.append("n/a" if mean != mean else f"{mean:.3f} [{low:.2f}, {high:.2f}]")
        paper = PAPER_JSD.get(short, {}).get("k-shot" if "shot" in method else method)
        ref = f"{paper[0]:.3f} / {paper[1]:.3f}" if paper else "–"
        minutes = f"{seconds[method] / 60:.1f}" if method in seconds else "–"
        table.append(f"| {short} | {method} | " + " | ".join(cells) + f" | {ref} | {minutes} |")
    return table


def review_files(args: argparse.Namespace) -> dict[str, Path]:
    """Build the review data once: train (+ eval, for validation) and held-out movies."""
    out = args.out / "reviews" / "data"
    files = {"train": out / "train.jsonl", "test": out / "test.jsonl"}
    if all(path.is_file() for path in files.values()):
        return files
    result = build_reviews(ReviewsConfig(reviews=str(REVIEWS), fractions=[0.75, 0.0, 0.25],
                                         seed=0))
    for name, path in files.items():
        records = result.splits[name]
        if args.movies is not None:
            keep = sorted({r.question_id for r in records})[:args.movies]
            records = [r for r in records if r.question_id in keep]
        if not records:
            raise SystemExit(f"reviews: no records for the {name} split")
        write_examples(path, records)
    return files


def reviews_table(args: argparse.Namespace, recipe: Recipe) -> list[str]:
    """JSD and BPC of SFT / DPO / GDPO on held-out movies, and their margins vs SFT."""
    files = review_files(args)
    values: dict[str, dict[str, list[dict[str, float]]]] = {}
    margins: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        seed_dir = args.out / "reviews" / f"seed{seed}"
        # Long reviews are left out and counted in run.json, never trained on cut.
        finals, _ = train_all(REVIEW_METHODS, recipe, files["train"], seed, seed_dir,
                              too_long="drop")
        summary = run_eval(seed_dir / "eval", files["test"], seed, args.samples,
                           models=[str(p) for p in finals.values()], judge="rating",
                           ref_model=str(finals["sft"]), beta=recipe.beta)
        for method, label in zip(finals, summary["models"], strict=True):
            for metric in ("jsd", "bpc"):
                values.setdefault(method, {}).setdefault(metric, []).append(
                    per_prompt_values(summary["rows"], label, metric))
            margins.setdefault(method, []).append(summary["models"][label]["margins"] or {})
    table = []
    for method, metrics in values.items():
        cells = []
        for metric in ("jsd", "bpc"):
            mean, low, high = seed_prompt_interval(metrics[metric])
            cells.append("n/a" if mean != mean else f"{mean:.3f} [{low:.2f}, {high:.2f}]")
        for group in ("majority", "lowest_minority", "others"):
            seen = [m[group]["value"] for m in margins[method] if m.get(group)]
            cells.append(f"{sum(seen) / len(seen):.3f}" if seen and method != "sft" else "–")
        table.append(f"| reviews | {method} | " + " | ".join(cells) + " |")
    return table


def main() -> None:
    args = parse_args()
    recipe = RECIPE if args.steps is None else RECIPE.replace(
        sft_steps=args.steps, preference_steps=args.steps, eval_every=max(1, args.steps))
    started = time.perf_counter()
    opinions = ["| group | method | JSD [95% CI] | CBC [95% CI] | BPC [95% CI] | RS [95% CI] "
                "| paper JSD (GPT-2 L / Pythia-2.8B) | training min |",
                "|---|---|---|---|---|---|---|---|"]
    for group in args.groups:
        opinions += opinion_group(group, args, recipe)
        print("\n".join(opinions), flush=True)
    reviews = ["| task | method | JSD [95% CI] | BPC [95% CI] | margin majority "
               "| margin lowest minority | margin others |", "|---|---|---|---|---|---|---|"]
    reviews += reviews_table(args, recipe)
    body = (
        "## The paper's tables (`benchmarks/paper_tables.py`)\n\n"
        f"Opinions: data as in the reproduction above ({args.questions} GlobalOpinionQA rows "
        "per group, held-out framings reported); reviews: the shared 5-core movie-review "
        "sample, `reviews` format, 75% of movies trained, 25% held out; margins vs the SFT "
        f"model (beta {recipe.beta}). Recipe `pluralign.train.recipe` ({recipe.sft_steps} / "
        f"{recipe.preference_steps} steps), seeds {', '.join(map(str, args.seeds))}; mean "
        "over seeds and prompts with a 95% two-level bootstrap interval; k-shot rows prompt "
        "the bundled model with shots from the training split. Machine: "
        f"{machine_line()}. Run on {time.strftime('%Y-%m-%d')}"
        f"{' (--quick)' if args.quick else ''}; total "
        f"{(time.perf_counter() - started) / 60:.1f} min.\n\n"
        + "\n".join(opinions) + "\n\n" + "\n".join(reviews))
    publish("paper-tables" + ("-quick" if args.quick else ""), body, write=not args.no_write)


if __name__ == "__main__":
    main()
