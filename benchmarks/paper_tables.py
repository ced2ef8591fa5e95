"""Every row of the GDPO paper's opinion table (Table 2 and its baselines) and the review task.

Opinions (GlobalOpinionQA US / PK / SA, data as in `opinion_repro.py`): SFT,
Uniform SFT and ICF from the bundled SmolLM2-135M; DPO, GDPO, both GDPO
ablations, KTO and GDPO-KTO from the SFT model; 3-shot and 5-shot prompting of
the bundled model (shots from the training split, never from the evaluated
question). All with the reproduction's recipe (`pluralign.train.recipe` with
`opinion_repro.py`'s LoRA layers and sequence format), evaluated on the
held-out framings: JSD, CBC, BPC (offline embedding judge), RS, as mean over
seeds and prompts with a 95% two-level bootstrap interval, beside the paper's
Table 2 where it has the row.

Reviews (the shared Amazon movie-review sample, `{rating}{review}` format):
SFT, DPO and GDPO, JSD and BPC (offline nearest-review rating judge) on
held-out movies, and the reward margins of DPO and GDPO against the SFT model
split into majority / lowest-minority / other pairs (the paper's Figures 2
and 3; `margins.png` of the evaluation folder).

Stages run as the reproduction runs them (`_stages.py`): two at a time on a
CPU, one thread each, each as soon as the weights it starts from exist.

Usage:
    .venv/bin/python benchmarks/paper_tables.py            # 3 groups, 3 seeds, reviews
    .venv/bin/python benchmarks/paper_tables.py --quick    # US and reviews, 1 seed
    .venv/bin/python benchmarks/paper_tables.py --quick --steps 2 --no-write   # wiring check
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path
from typing import Any

from _opinions import (
    REPRO_LORA_TOP_LAYERS,
    REPRO_SEQUENCE_FORMAT,
    SHORT,
    build_data,
    evaluate_models,
    method_values,
    seed_prompt_interval,
)
from _report import machine_line, publish
from _stages import StageGraph, Task, default_workers, run_tasks, worker_threads

from pluralign.data.builders.reviews import ReviewsConfig, build_reviews
from pluralign.data.records import write_examples
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
REVIEW_METRICS = ("jsd", "bpc")
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
    parser.add_argument("--groups", nargs="*", default=list(SHORT),
                        help="opinion groups (none: the review task only)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--questions", type=int, default=40, help="GlobalOpinionQA rows per group")
    parser.add_argument("--movies", type=int, default=None,
                        help="keep the first N movies of the review sample (default: all)")
    parser.add_argument("--samples", type=int, default=2, help="generations per prompt")
    parser.add_argument("--margin-pairs", type=int, default=32,
                        help="held-out review pairs of the margins, spread over the movies "
                             "(each costs four forward passes of a whole review per model)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of every stage (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=Path("runs/paper_tables"))
    parser.add_argument("--quick", action="store_true", help="United States and reviews, seed 0")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    parser.add_argument("--no-reviews", action="store_true",
                        help="leave the review task out (its whole reviews make it the "
                             "longest part of a run)")
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


def paper_recipe(steps: int | None) -> Recipe:
    """The reproduction's recipe (its LoRA layers and sequence format; `opinion_repro.py`),
    with ``steps`` per stage where given (a wiring check)."""
    recipe = RECIPE.replace(lora_top_layers=REPRO_LORA_TOP_LAYERS,
                            sequence_format=REPRO_SEQUENCE_FORMAT)
    if steps is None:
        return recipe
    return recipe.replace(sft_steps=steps, preference_steps=steps, eval_every=max(1, steps))


def evaluate_opinions(files: dict[str, Path], finals: dict[str, Path], seed: int,
                      seed_dir: Path, *, samples: int) -> dict[str, Any]:
    """Every trained model, then k-shot prompting of the bundled model (shots from the
    training split), on the held-out framings: per (method, metric) per-prompt values."""
    summary = evaluate_models(finals, files["paraphrase"], seed_dir / "eval", seed, samples)
    values = method_values(summary, list(finals), OPINION_METRICS)
    for k in KSHOTS:
        summary = evaluate_models({}, files["paraphrase"], seed_dir / f"eval-{k}shot", seed,
                                  samples, kshot=k, kshot_pool=str(files["train"]))
        values.update(method_values(summary, [f"{k}-shot"], OPINION_METRICS))
    return {"values": values}


def build_reviews_data(args: argparse.Namespace) -> tuple[dict[str, Path], float]:
    """The review data, built once: train (validation is carved from it) and held-out
    movies."""
    started = time.perf_counter()
    out = args.out / "reviews" / "data"
    files = {"train": out / "train.jsonl", "test": out / "test.jsonl"}
    if all(path.is_file() for path in files.values()):
        return files, 0.0
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
    return files, time.perf_counter() - started


def evaluate_reviews(files: dict[str, Path], finals: dict[str, Path], seed: int,
                     seed_dir: Path, *, samples: int, beta: float, margin_pairs: int
                     ) -> dict[str, Any]:
    """SFT / DPO / GDPO on held-out movies (rating judge) and the margins against SFT."""
    summary = evaluate_models(finals, files["test"], seed_dir / "eval", seed, samples,
                              judge="rating", ref_model=str(finals["sft"]), beta=beta,
                              max_pairs=margin_pairs)
    labels = dict(zip(finals, summary["models"], strict=True))
    return {"values": method_values(summary, list(finals), REVIEW_METRICS),
            "margins": {m: summary["models"][label]["margins"] or {}
                        for m, label in labels.items()}}


def tasks_of(args: argparse.Namespace, recipe: Recipe) -> list[Task]:
    """One task per opinion group (every method of Table 2), and the review task."""
    tasks = [Task(SHORT.get(group, group), partial(build_data, group, args),
                  OPINION_METHODS, partial(evaluate_opinions, samples=args.samples))
             for group in args.groups]
    if args.no_reviews:
        return tasks
    # Reviews train in the format their records name (`{rating}{review}`), and a review
    # longer than max_length is left out and counted in run.json, never trained on cut.
    tasks.append(Task("reviews", partial(build_reviews_data, args), REVIEW_METHODS,
                      partial(evaluate_reviews, samples=args.samples, beta=recipe.beta,
                              margin_pairs=args.margin_pairs),
                      overrides={"sequence_format": "auto", "too_long": "drop"}))
    return tasks


def _interval_cell(values: list[dict[str, float]]) -> str:
    mean, low, high = seed_prompt_interval(values)
    return "n/a" if mean != mean else f"{mean:.3f} [{low:.2f}, {high:.2f}]"


def _merged(graph: StageGraph, task: str, seeds: list[int]
            ) -> tuple[dict[tuple[str, str], list[dict[str, float]]], dict[str, float]]:
    """A task's per-(method, metric) values, one dict per seed, and training seconds summed
    over seeds."""
    values: dict[tuple[str, str], list[dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    for seed in seeds:
        done = graph.done[(task, seed)]
        for key, per_prompt in done["values"].items():
            values.setdefault(key, []).append(per_prompt)
        for method, spent in done["seconds"].items():
            seconds[method] = seconds.get(method, 0.0) + spent
    return values, seconds


def opinion_rows(graph: StageGraph, short: str, seeds: list[int]) -> list[str]:
    """One group's rows: every method and both k-shot baselines, mean over seeds."""
    values, seconds = _merged(graph, short, seeds)
    rows = []
    for method in [*OPINION_METHODS, *(f"{k}-shot" for k in KSHOTS)]:
        cells = [_interval_cell(values[(method, metric)]) for metric in OPINION_METRICS]
        paper = PAPER_JSD.get(short, {}).get("k-shot" if "shot" in method else method)
        ref = f"{paper[0]:.3f} / {paper[1]:.3f}" if paper else "–"
        minutes = f"{seconds[method] / 60:.1f}" if method in seconds else "–"
        rows.append(f"| {short} | {method} | " + " | ".join(cells) + f" | {ref} | {minutes} |")
    return rows


def review_rows(graph: StageGraph, seeds: list[int]) -> list[str]:
    """JSD and BPC of SFT / DPO / GDPO on held-out movies, and their margins vs SFT split
    majority / lowest-proportion minority / others (mean over seeds)."""
    values, _ = _merged(graph, "reviews", seeds)
    rows = []
    for method in REVIEW_METHODS:
        cells = [_interval_cell(values[(method, metric)]) for metric in REVIEW_METRICS]
        for part in ("majority", "lowest_minority", "others"):
            seen = [graph.done[("reviews", s)]["margins"][method].get(part) for s in seeds]
            seen = [m["value"] for m in seen if m and m["value"] is not None]  # None: no pair
            cells.append(f"{sum(seen) / len(seen):.3f}" if seen and method != "sft" else "–")
        rows.append(f"| reviews | {method} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    args = parse_args()
    recipe = paper_recipe(args.steps)
    started = time.perf_counter()
    graph = run_tasks(tasks_of(args, recipe), args.seeds, recipe, args.out, args.workers)
    opinions = ["| group | method | JSD [95% CI] | CBC [95% CI] | BPC [95% CI] | RS [95% CI] "
                "| paper JSD (GPT-2 L / Pythia-2.8B) | training min (all seeds) |",
                "|---|---|---|---|---|---|---|---|"]
    for group in args.groups:
        opinions += opinion_rows(graph, SHORT.get(group, group), args.seeds)
    reviews = ["| task | method | JSD [95% CI] | BPC [95% CI] | margin majority "
               "| margin lowest minority | margin others |", "|---|---|---|---|---|---|---|"]
    reviews = (["Reviews: not run (`--no-reviews`)."] if args.no_reviews
               else reviews + review_rows(graph, args.seeds))
    body = (
        "## The paper's tables (`benchmarks/paper_tables.py`)\n\n"
        f"Opinions: data as in the reproduction ({args.questions} GlobalOpinionQA rows per "
        "group, held-out framings reported); reviews: the shared 5-core movie-review sample, "
        "`reviews` format, 75% of movies trained, 25% held out; margins vs the SFT model "
        f"(beta {recipe.beta}) on {args.margin_pairs} held-out pairs spread over the movies. "
        f"The reproduction's recipe: {recipe.sft_steps} / "
        f"{recipe.preference_steps} steps, LoRA r={recipe.lora_r} on the last "
        f"{recipe.lora_top_layers} layers on {recipe.resolved_base_dtype()} base weights, "
        f"opinions in `{recipe.sequence_format}`; seeds {', '.join(map(str, args.seeds))}; "
        "mean over seeds and prompts with a 95% two-level bootstrap interval; k-shot rows "
        "prompt the bundled model with shots from the training split. Machine: "
        f"{machine_line()}; {args.workers} stages at a time, "
        f"{worker_threads(args.workers)} thread(s) each. Run on {time.strftime('%Y-%m-%d')}"
        f"{' (--quick)' if args.quick else ''}; total "
        f"{(time.perf_counter() - started) / 60:.1f} min.\n\n"
        + "\n".join(opinions) + "\n\n" + "\n".join(reviews))
    publish("paper-tables" + ("-quick" if args.quick else ""), body, write=not args.no_write)


if __name__ == "__main__":
    main()
