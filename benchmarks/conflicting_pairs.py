"""SFT, then DPO and GDPO from the SFT model, on conflicting pairs with the bundled model.

The data is pluralign's synthetic opinion set (`pluralign.data.toy`): each
question has a group distribution over four stances and its pairs are drawn
as the GDPO paper draws them, so pairs of the same prompt prefer opposite
answers. Eval pairs are held-out pairs of the same questions (same p*).

What to look for in each run's metrics.jsonl (and the table this writes to
BENCHMARKS.md): DPO's minority-belief reward margin falls while GDPO's rises,
and GDPO's eval JSD ends below SFT's.

Usage: .venv/bin/python benchmarks/conflicting_pairs.py [--steps 40] [--out runs/conflicting]
       [--precision fp32|bf16|bf16-base]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import machine_line, write_section

from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.models import ModelConfig
from pluralign.train.api import train
from pluralign.train.config import TrainConfig
from pluralign.train.metrics import read_metrics

#: --precision choices, with the sentence that opens their table.
PRECISIONS = {
    "fp32": "Precision: fp32.",
    "bf16": "Precision: bf16 autocast over fp32 weights.",
    "bf16-base": "Precision: frozen weights stored in bf16, LoRA weights and optimiser state "
                 "in fp32, under bf16 autocast.",
}


def make_data(out: Path, questions: int, train_pairs: int, eval_pairs: int) -> tuple[Path, Path]:
    records = conflicting_opinions(questions, train_pairs + eval_pairs, seed=0)
    per_question = train_pairs + eval_pairs
    train_set = [r for i, r in enumerate(records) if i % per_question < train_pairs]
    eval_set = [r for i, r in enumerate(records) if i % per_question >= train_pairs]
    write_examples(out / "train.jsonl", train_set)
    write_examples(out / "eval.jsonl", eval_set)
    return out / "train.jsonl", out / "eval.jsonl"


def run(method: str, start: str, args: argparse.Namespace, files: tuple[Path, Path],
        lr: float) -> tuple[Path, float]:
    config = TrainConfig(
        method=method, train_file=str(files[0]), eval_file=str(files[1]),
        output_dir=str(args.out / method),
        model=ModelConfig(model=start, lora_r=args.lora_r, lora_alpha=2.0 * args.lora_r,
                          dtype="bfloat16" if args.precision == "bf16-base" else "float32"),
        bf16=args.precision != "fp32",
        max_steps=args.steps, eval_steps=args.eval_every, logging_steps=args.eval_every,
        save_steps=args.steps, per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=16, learning_rate=lr, seed=args.seed, beta=0.1,
        overwrite=True,  # a re-run replaces the benchmark's own earlier run
    )
    started = time.perf_counter()
    result = train(config)
    return result.final_dir, time.perf_counter() - started


def curve(run_dir: Path, key: str) -> list[float]:
    return [r[key] for r in read_metrics(run_dir) if key in r]


def summarise(out: Path, seconds: dict[str, float]) -> list[str]:
    rows = ["| method | eval JSD start -> end | minority margin start -> end | "
            "majority margin start -> end | wall s |", "|---|---|---|---|---|"]
    for method in ("sft", "dpo", "gdpo"):
        jsd = curve(out / method, "eval_belief/jsd")
        minority = curve(out / method, "eval_rewards/margins_minority")
        majority = curve(out / method, "eval_rewards/margins_majority")

        def span(values: list[float]) -> str:
            return f"{values[0]:.3f} -> {values[-1]:.3f}" if values else "n/a (SFT has none)"

        rows.append(f"| {method} | {span(jsd)} | {span(minority)} | {span(majority)} | "
                    f"{seconds[method]:.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/conflicting"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--sft-lr", type=float, default=3e-4)
    parser.add_argument("--pref-lr", type=float, default=1e-4)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32; bf16 (autocast over fp32 weights); bf16-base (frozen "
                             "weights in bf16, LoRA in fp32, under autocast). A precision "
                             "other than fp32 writes its own table.")
    parser.add_argument("--no-write", action="store_true", help="Print, leave BENCHMARKS.md.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = make_data(args.out, args.questions, 8, 4)
    seconds = {}
    sft_final, seconds["sft"] = run("sft", "smollm2-135m", args, files, args.sft_lr)
    for method in ("dpo", "gdpo"):
        _, seconds[method] = run(method, str(sft_final), args, files, args.pref_lr)
    # fp32 keeps the section, title and command it always had; another precision gets its own.
    fp32 = args.precision == "fp32"
    body = (
        f"## Conflicting pairs with the bundled model{'' if fp32 else ', ' + args.precision} "
        f"(`benchmarks/conflicting_pairs.py{'' if fp32 else ' --precision ' + args.precision}`)"
        "\n\n"
        f"{PRECISIONS[args.precision]} "
        f"SmolLM2-135M-Instruct with LoRA r={args.lora_r}; {args.questions} synthetic questions "
        "x 8 training pairs (accepted belief ~ p*, rejected uniform over the others), 4 held-out "
        f"pairs per question for evaluation; {args.steps} steps of batch {args.batch} each for "
        f"SFT (lr {args.sft_lr}) and then DPO and GDPO from the SFT model (lr {args.pref_lr}, "
        f"beta 0.1); seed {args.seed}. Eval JSD: belief distribution from one forward pass "
        "(softmax over the K belief tokens) vs p*. Margins: beta * (log-ratio chosen - "
        "log-ratio rejected) on held-out pairs whose chosen belief is (majority) or is not "
        f"(minority) the question's most likely one. Machine: {machine_line()}. Run on "
        f"{time.strftime('%Y-%m-%d')}.\n\n" + "\n".join(summarise(args.out, seconds))
    )
    print(body)
    if not args.no_write:
        write_section("conflicting-pairs" + ("" if fp32 else f"-{args.precision}"), body)


if __name__ == "__main__":
    main()
