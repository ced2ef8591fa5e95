"""Reproduce the GDPO paper's opinion finding on real GlobalOpinionQA with the bundled model.

For each group (country): build the data from the shared GlobalOpinionQA dev
file with the bundled SmolLM2-135M as the response writer (split by question),
train SFT, then DPO and GDPO from the SFT model (LoRA), and evaluate all three

* on held-out paraphrases of the training questions (the paper's setting: one
  paraphrase style never seen in training), and
* on held-out questions (the test split: questions never seen in training).

The table goes to BENCHMARKS.md beside the paper's Table 2 (GPT-2 Large and
Pythia-2.8B). Every number comes from the run.

Usage:
    .venv/bin/python benchmarks/opinion_repro.py            # US, PK, SA (about an hour)
    .venv/bin/python benchmarks/opinion_repro.py --quick    # United States only, ~12 min
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from _report import machine_line, write_section

from pluralign.data.builders.opinions import OpinionsConfig, build_opinions
from pluralign.data.builders.writers import RESPONSE_WRITERS
from pluralign.data.records import GroupPreferenceExample, write_examples
from pluralign.eval.evaluate import EvalConfig, evaluate
from pluralign.llm import LLMConfig
from pluralign.models import ModelConfig
from pluralign.train.api import train
from pluralign.train.config import TrainConfig

SOURCE = Path(__file__).resolve().parents[1].parent / "shared/data/globalopinionqa/dev_groups.jsonl"
SHORT = {"United States": "US", "Pakistan": "PK", "S. Africa": "SA"}
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
METRICS = ("jsd", "cbc", "bpc", "rs")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(SHORT))
    parser.add_argument("--questions", type=int, default=40, help="GlobalOpinionQA rows per group")
    parser.add_argument("--styles", type=int, default=3, help="paraphrase styles per question")
    parser.add_argument("--pairs", type=int, default=12, help="pairs per question")
    parser.add_argument("--writer", default="framed", choices=sorted(RESPONSE_WRITERS.names()),
                        help="response writer of the opinions builder (framed: the bundled "
                             "model writes the responses, the styles are fixed framings of "
                             "the question; per-belief: it also paraphrases)")
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--pref-steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--sft-lr", type=float, default=3e-4)
    parser.add_argument("--pref-lr", type=float, default=2e-4)
    parser.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=False,
                        help="render prompts with the model's chat template instead of the "
                             "paper's <Q>{prompt}<A>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/opinion_repro"))
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--quick", action="store_true",
                        help="United States only, 24 questions, 30 steps (about 12 minutes)")
    args = parser.parse_args()
    if args.quick:
        args.groups, args.questions, args.sft_steps, args.pref_steps = ["United States"], 24, 30, 30
    return args


def build_group(group: str, args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Build one group's data; hold out one paraphrase of each training question."""
    result = build_opinions(OpinionsConfig(
        source=str(args.source), groups=[group], max_questions=args.questions,
        n_styles=args.styles, pairs_per_question=args.pairs, split_by="question",
        fractions=[0.75, 0.0, 0.25], writer=args.writer, seed=args.seed,
        # A re-run (other training settings) reads the written data from this cache.
        llm=LLMConfig(cache_dir=str(args.out / "llm-cache")),
    ))
    print(json.dumps(result.report.to_dict(), indent=1, default=str))
    train_split, held = hold_out_paraphrases(result.splits["train"], args.seed)
    files = {
        "train": _write(out / "train.jsonl", train_split),
        "paraphrase": _write(out / "paraphrase.jsonl", held),
        "questions": _write(out / "questions.jsonl", result.splits["test"]),
    }
    counts = {name: sum(1 for _ in path.open()) for name, path in files.items()}
    prompts = {name: len({json.loads(line)["prompt"] for line in path.open()})
               for name, path in files.items()}
    (out / "build.json").write_text(json.dumps(
        {"counts": counts, "prompts": prompts, "held_out_styles": sorted({r.style for r in held}),
         "report": result.report.to_dict()}, indent=2, default=str))
    return files


def hold_out_paraphrases(records: list[GroupPreferenceExample], seed: int
                         ) -> tuple[list[GroupPreferenceExample], list[GroupPreferenceExample]]:
    """(train, held out): per question with a paraphrase and another variant to train on,
    the records of one paraphrase (not the original wording), chosen at random."""
    rng = random.Random(seed)
    by_question: dict[str, list[GroupPreferenceExample]] = {}
    for record in records:
        by_question.setdefault(record.question_id, []).append(record)
    held_prompts = set()
    for question_records in by_question.values():
        prompts = sorted({r.prompt for r in question_records})
        paraphrases = sorted({r.prompt for r in question_records if r.style != "original"})
        if len(prompts) >= 2 and paraphrases:
            held_prompts.add(rng.choice(paraphrases))
    return ([r for r in records if r.prompt not in held_prompts],
            [r for r in records if r.prompt in held_prompts])


def _write(path: Path, records: list[GroupPreferenceExample]) -> Path:
    if not records:
        raise SystemExit(f"{path}: no records for this split; raise --questions")
    write_examples(path, records)
    return path


def train_all(files: dict[str, Path], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    finals, seconds = {}, {}
    for method, start in (("sft", "smollm2-135m"), ("dpo", None), ("gdpo", None)):
        sft = method == "sft"
        started = time.perf_counter()
        result = train(TrainConfig(
            method=method, train_file=str(files["train"]), eval_file=str(files["paraphrase"]),
            output_dir=str(out / method),
            model=ModelConfig(model=start or str(finals["sft"]), lora_r=args.lora_r,
                              lora_alpha=2.0 * args.lora_r),
            max_steps=args.sft_steps if sft else args.pref_steps,
            learning_rate=args.sft_lr if sft else args.pref_lr,
            per_device_train_batch_size=args.batch, per_device_eval_batch_size=16,
            eval_steps=10, logging_steps=10, save_steps=10_000, seed=args.seed, beta=0.1,
            use_chat_template=args.chat_template,
        ))
        finals[method], seconds[method] = result.final_dir, time.perf_counter() - started
    return {"finals": finals, "seconds": seconds}


def evaluate_all(finals: dict[str, Path], data: Path, out: Path, seed: int) -> dict[str, Any]:
    evaluate(EvalConfig(
        models=[str(finals[m]) for m in ("sft", "dpo", "gdpo")], data=str(data), out=str(out),
        judge="embedding", n_samples=2, max_new_tokens=40, seed=seed, belief_samples=32,
    ))
    return json.loads((out / "eval.json").read_text())


def _cell(metric: dict[str, Any], *, with_interval: bool) -> str:
    if metric.get("value") is None:
        return "n/a"
    if not with_interval:
        return f"{metric['value']:.3f}"
    # Few prompts per split: the interval says how much the mean can be trusted.
    return (f"{metric['value']:.3f} [{metric['ci_low']:.2f}, {metric['ci_high']:.2f}] "
            f"(n={metric['n']})")


def rows_of(short: str, setting: str, evaluation: dict[str, Any]) -> list[str]:
    rows = []
    for label, entry in evaluation["models"].items():
        metrics = entry["metrics"]
        cells = [_cell(metrics.get(m, {}), with_interval=m == "jsd") for m in METRICS]
        paper = PAPER[short]["GPT-2 Large"].get(label), PAPER[short]["Pythia-2.8B"].get(label)
        rows.append(f"| {short} | {setting} | {label} | " + " | ".join(cells)
                    + f" | {paper[0][0]:.3f} / {paper[1][0]:.3f} |")
    lines = evaluation.get("reference_lines", {})
    rows.append(f"| {short} | {setting} | reference lines (JSD) | " + ", ".join(
        f"{name} {line['value']:.3f}" for name, line in lines.items()) + " | | | | |")
    return rows


def main() -> None:
    args = parse_args()
    table = ["| group | evaluated on | method | JSD [95% CI] (prompts) | CBC | BPC | RS | "
             "paper JSD (GPT-2 L / Pythia-2.8B) |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    for group in args.groups:
        short = SHORT.get(group, group)
        out = args.out / short
        started = time.perf_counter()
        files = build_group(group, args, out / "data")
        data_seconds = time.perf_counter() - started
        runs = train_all(files, args, out)
        held = "held-out framings" if args.writer == "framed" else "held-out paraphrases"
        for setting, key in ((held, "paraphrase"), ("held-out questions", "questions")):
            data = files[key]
            table += rows_of(short, setting, evaluate_all(runs["finals"], data,
                                                          out / f"eval-{key}", args.seed))
        build = json.loads((out / "data" / "build.json").read_text())
        notes.append(f"{short}: data {data_seconds / 60:.1f} min (records {build['counts']}, "
                     f"prompts {build['prompts']}); training min "
                     + ", ".join(f"{m} {s / 60:.1f}" for m, s in runs["seconds"].items())
                     + f"; total {(time.perf_counter() - started) / 60:.1f} min")
        print("\n".join(table + notes))
    styles = ("fixed framings around the unchanged question (`framed` writer); of each "
              "training question one framing held out" if args.writer == "framed" else
              "paraphrase styles; of each training question with a paraphrase, one paraphrase "
              "held out (a paraphrase must share more content words with its own question "
              "than with any other, else the original wording is used)")
    body = (
        "## GlobalOpinionQA reproduction (`benchmarks/opinion_repro.py`)\n\n"
        f"Source `../shared/data/globalopinionqa/dev_groups.jsonl`, first {args.questions} rows "
        f"per group; responses written by the bundled SmolLM2-135M-Instruct (one per belief, "
        f"writer `{args.writer}`), {args.styles} {styles}; {args.pairs} pairs per question, "
        f"split by question (75% train / 25% held-out questions). SFT {args.sft_steps} steps "
        f"(lr {args.sft_lr}), then DPO and GDPO {args.pref_steps} steps from the SFT model (lr "
        f"{args.pref_lr}, beta 0.1), batch {args.batch}, LoRA r={args.lora_r}, seed "
        f"{args.seed}. BPC uses the offline embedding judge. Machine: {machine_line()}. Run on "
        f"{time.strftime('%Y-%m-%d')}.\n\n"
        + "\n".join(table) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    )
    write_section("opinion-repro" + ("-quick" if args.quick else ""), body)


if __name__ == "__main__":
    main()
