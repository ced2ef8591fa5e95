"""Choose the training recipe on the development groups' validation splits only.

For each candidate setting and each development group (GlobalOpinionQA
United States, Pakistan, S. Africa; seed 0): SFT, then GDPO from it, with
the weights each stage keeps chosen on a validation split carved from the
training questions. The candidates are scored on that validation split
only (belief JSD read in one forward pass; CBC, BPC, RS and marker starts
from two belief-first generations per validation prompt), never on the
held-out framings or questions that `opinion_repro.py` reports.
The setting kept is the one with the lowest mean validation JSD among those
whose GDPO keeps BPC and RS at least at its SFT's; it becomes
`pluralign.train.recipe.RECIPE`.

Usage:
    .venv/bin/python benchmarks/recipe_sweep.py                    # every candidate
    .venv/bin/python benchmarks/recipe_sweep.py --only lora-b0.5   # one of them
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _opinions import SHORT, DataSpec, build_group, evaluate_models, per_prompt_values
from _report import machine_line, write_section

from pluralign.data.records import read_examples, write_examples
from pluralign.runs import FINAL_DIR
from pluralign.train.recipe import RECIPE, Recipe
from pluralign.train.selection import carve_validation

#: name -> (what it changes, the recipe). Every candidate uses the same data and seed.
CANDIDATES: dict[str, tuple[str, Recipe]] = {
    "lora-b0.1": ("LoRA r16 (all linear layers), beta 0.1 (the paper's)",
                  RECIPE.replace(beta=0.1, frame_prompts=False)),
    "lora-b0.5": ("LoRA r16, beta 0.5", RECIPE.replace(beta=0.5, frame_prompts=False)),
    "lora-b0.5-framed": ("LoRA r16, beta 0.5, framed training prompts",
                         RECIPE.replace(beta=0.5, frame_prompts=True)),
    "full-b0.5-framed": ("full fine-tuning (lr 1e-4 / 5e-5), beta 0.5, framed",
                         RECIPE.replace(lora_r=0, sft_learning_rate=1e-4,
                                        preference_learning_rate=5e-5, beta=0.5,
                                        frame_prompts=True)),
    "lora-b0.5-framed-cal2": ("LoRA r16, beta 0.5, framed, calibration and belief-NLL "
                              "weights 2", RECIPE.replace(beta=0.5, frame_prompts=True,
                                                          calibration_weight=2.0,
                                                          belief_nll_weight=2.0)),
    "lora-b0.5-framed-options": ("LoRA r16, beta 0.5, framed, answer options listed before "
                                 "the question (separated-options format)",
                                 RECIPE.replace(beta=0.5, frame_prompts=True,
                                                sequence_format="separated-options")),
    "lora-b0.5-framed-marker-options": ("LoRA r16, beta 0.5, framed, answer options given "
                                        "after the belief marker (marker-options format)",
                                        RECIPE.replace(beta=0.5, frame_prompts=True,
                                                       sequence_format="marker-options")),
}
METRICS = ("jsd", "cbc", "bpc", "rs", "marker_start")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(SHORT))
    parser.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--out", type=Path, default=Path("runs/recipe_sweep"))
    parser.add_argument("--data", type=Path, default=Path("runs/opinion_repro"),
                        help="where the groups' data is built (shared with opinion_repro.py)")
    parser.add_argument("--sft-steps", type=int, default=RECIPE.sft_steps)
    parser.add_argument("--pref-steps", type=int, default=RECIPE.preference_steps)
    return parser.parse_args()


def sft_key(recipe: Recipe) -> str:
    """Candidates that differ only after SFT share one SFT run."""
    return (f"sft-r{recipe.lora_r}-lr{recipe.sft_learning_rate}-s{recipe.sft_steps}"
            f"{'-framed' if recipe.frame_prompts else ''}"
            f"{'' if recipe.sequence_format == 'auto' else '-' + recipe.sequence_format}")


def validation_file(files: dict[str, Path], recipe: Recipe, seed: int, out: Path) -> Path:
    """The validation split training carves (same records, same seed), as a file."""
    carve = carve_validation(read_examples(files["train"]), recipe.validation_fraction, seed)
    path = out / "validation.jsonl"
    write_examples(path, carve.validation)
    return path


def run_candidate(name: str, recipe: Recipe, group: str, args: argparse.Namespace
                  ) -> dict[str, Any]:
    from pluralign.train.api import train

    short = SHORT[group]
    files = build_group(group, DataSpec(cache_dir=args.data / "llm-cache"),
                        args.data / short / "data")
    recipe = recipe.replace(sft_steps=args.sft_steps, preference_steps=args.pref_steps)
    out = args.out / name / short
    started, finals = time.perf_counter(), {}
    for method in ("sft", "gdpo"):
        start = "smollm2-135m" if method == "sft" else str(finals["sft"])
        run_dir = args.out / sft_key(recipe) / short if method == "sft" else out / method
        if method == "sft" and (run_dir / FINAL_DIR).is_dir():
            finals[method] = run_dir / FINAL_DIR  # shared with an earlier candidate
            continue
        finals[method] = train(recipe.train_config(
            method, start=start, train_file=str(files["train"]), output_dir=str(run_dir),
            seed=0, overwrite=True), console_logs=False).final_dir
    seconds = time.perf_counter() - started
    summary = evaluate_models(finals, validation_file(files, recipe, 0, out), out / "eval",
                              seed=0, n_samples=2)
    scores = {method: {m: _mean(per_prompt_values(summary["rows"], method, m))
                       for m in METRICS} for method in finals}
    return {"scores": scores, "train_minutes": seconds / 60}


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else float("nan")


def main() -> None:
    args = parse_args()
    results: dict[str, dict[str, Any]] = {}
    for name in args.only:
        results[name] = {group: run_candidate(name, CANDIDATES[name][1], group, args)
                         for group in args.groups}
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    header = ("| candidate | what changes | GDPO validation JSD (" + " / ".join(
        SHORT[g] for g in args.groups) + ") | mean | SFT JSD (mean) | GDPO CBC | GDPO BPC / "
              "SFT BPC | GDPO RS / SFT RS | marker starts | train min per group |")
    table = [header, "|" + "---|" * 10]
    kept, kept_jsd = None, float("inf")
    for name, per_group in results.items():
        def mean(method: str, metric: str, per_group: dict = per_group) -> float:
            return sum(r["scores"][method][metric] for r in per_group.values()) / len(per_group)

        jsds = " / ".join(f"{r['scores']['gdpo']['jsd']:.3f}" for r in per_group.values())
        minutes = sum(r["train_minutes"] for r in per_group.values()) / len(per_group)
        table.append(
            f"| `{name}` | {CANDIDATES[name][0]} | {jsds} | {mean('gdpo', 'jsd'):.3f} | "
            f"{mean('sft', 'jsd'):.3f} | {mean('gdpo', 'cbc'):.3f} | {mean('gdpo', 'bpc'):.3f} / "
            f"{mean('sft', 'bpc'):.3f} | {mean('gdpo', 'rs'):.3f} / {mean('sft', 'rs'):.3f} | "
            f"{mean('gdpo', 'marker_start'):.3f} | {minutes:.1f} |")
        clean = (mean("gdpo", "bpc") >= mean("sft", "bpc") - 0.02
                 and mean("gdpo", "rs") >= mean("sft", "rs") - 0.02)
        if clean and mean("gdpo", "jsd") < kept_jsd:
            kept, kept_jsd = name, mean("gdpo", "jsd")
    body = (
        "## Recipe sweep on the development groups (`benchmarks/recipe_sweep.py`)\n\n"
        "Every candidate trains SFT then GDPO (seed 0) on each development group's training "
        "questions and is scored on the validation split carved from them (one held-out "
        "framing of some training questions), never on the held-out framings or questions "
        "that the reproduction reports. Rule: the lowest mean validation JSD among the "
        "candidates whose GDPO keeps BPC and RS within 0.02 of its SFT's. "
        f"Kept: `{kept}`. Machine: {machine_line()}. Run on {time.strftime('%Y-%m-%d')}.\n\n"
        + "\n".join(table)
    )
    print(body)
    write_section("recipe-sweep", body)


if __name__ == "__main__":
    main()
