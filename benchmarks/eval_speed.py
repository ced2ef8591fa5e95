"""Belief distributions for 1,000 prompts: one batched forward vs sampling, time and JSD.

Three ways to get a model's belief distribution for each prompt, on the
bundled model after a short SFT on the demo pairs (trained once and cached;
``--model`` reads another) and the demo questions x groups (cycled to
``--prompts`` prompts, each with its group's p*):

- reading: :func:`pluralign.beliefs.readout.belief_distributions`, one batched
  forward per 16 prompts, softmax over the K belief tokens at the last
  position;
- pluralign's sampled estimate
  (:func:`pluralign.eval.generate.sampled_belief_distribution`): the same
  forward, then ``n`` first tokens drawn from the full-vocabulary softmax and
  the belief markers among them counted;
- sampling by generation: ``model.generate(max_new_tokens=1, do_sample=True,
  num_return_sequences=n)``, what a sampling evaluation without that shortcut
  costs; timed on ``--generate-prompts`` prompts and scaled to all of them.

JSD is against each prompt's p*; the sampled estimate's distance from the
reading shows its sampling noise.

Usage: .venv/bin/python benchmarks/eval_speed.py [--quick] [--repeats 3] [--lock FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _report import machine_line, write_section
from _timing import add_common_args, interleaved, key_median, worker_entry

from pluralign.runs import FINAL_DIR

MODEL = "smollm2-135m"
SAMPLE_SIZES = (16, 64, 256)


def _prompts(count: int, model_ref: str) -> tuple[list[Any], list[Any], list[Any], Any, Any]:
    """Prompt ids, belief marker ids and targets of ``count`` prompts; the model."""
    from pluralign.beliefs.formats import OPINION_FORMAT
    from pluralign.beliefs.tokenize import belief_marker_ids, encode_prompt
    from pluralign.data.demo import demo_records
    from pluralign.eval.evaluate import group_prompts
    from pluralign.models import load_model

    model, tokenizer = load_model(model_ref)
    if hasattr(model, "merge_and_unload"):  # evaluate the SFT adapter at base-model speed
        model = model.merge_and_unload()
    groups = group_prompts(demo_records())
    groups = [groups[i % len(groups)] for i in range(count)]
    ids = [encode_prompt(tokenizer, g.prompt, OPINION_FORMAT) for g in groups]
    markers = [belief_marker_ids(tokenizer, list(g.class_ids), OPINION_FORMAT.marker)
               for g in groups]
    return ids, markers, [g.target for g in groups], model, tokenizer


def eval_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from pluralign.beliefs.readout import belief_distributions
    from pluralign.eval.generate import sampled_belief_distribution
    from pluralign.eval.metrics import jsd

    ids, markers, targets, model, tokenizer = _prompts(spec["prompts"], spec["model"])
    pad = tokenizer.pad_token_id
    out: dict[str, Any] = {"prompts": len(ids), "threads": torch.get_num_threads(),
                           "tokens_per_prompt": sum(map(len, ids)) / len(ids)}
    started = time.perf_counter()
    reading = belief_distributions(model, ids, markers, pad_token_id=pad, batch_size=16)
    out["reading_s"] = time.perf_counter() - started
    out["reading_jsd"] = jsd(reading.probs, targets).value
    for n in SAMPLE_SIZES:
        started = time.perf_counter()
        estimate = sampled_belief_distribution(model, tokenizer, ids, markers, n=n, seed=0,
                                               batch_size=16)
        out[f"sampled{n}_s"] = time.perf_counter() - started
        out[f"sampled{n}_jsd"] = jsd(estimate.probs, targets).value
        out[f"sampled{n}_vs_reading"] = jsd(estimate.probs, reading.probs).value
        out[f"sampled{n}_off"] = sum(estimate.off_belief) / (n * len(ids))
    out["generate_s_per_prompt"] = _generate_seconds(model, tokenizer, ids[:spec["generate"]],
                                                     spec["generate_n"])
    return out


def _generate_seconds(model: Any, tokenizer: Any, ids: list[list[int]], n: int) -> float:
    """Seconds per prompt to draw ``n`` first tokens with ``model.generate``."""
    import torch

    torch.manual_seed(0)
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for prompt in ids:
            model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(
                1, len(prompt), dtype=torch.long), max_new_tokens=1, do_sample=True,
                num_return_sequences=n, top_p=1.0, top_k=0, temperature=1.0,
                pad_token_id=tokenizer.pad_token_id)
    return (time.perf_counter() - started) / len(ids)


def sft_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the short SFT run whose model the evaluation reads (once; reused after)."""
    from pluralign.data.demo import demo_records
    from pluralign.data.records import write_examples
    from pluralign.models import ModelConfig
    from pluralign.train.api import train
    from pluralign.train.config import TrainConfig

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    write_examples(out / "train.jsonl", demo_records(split="train"))
    started = time.perf_counter()
    result = train(TrainConfig(
        method="sft", train_file=str(out / "train.jsonl"), output_dir=str(out / "run"),
        model=ModelConfig(model=MODEL, lora_r=8, lora_alpha=16.0), max_steps=spec["steps"],
        per_device_train_batch_size=8, learning_rate=3e-4, save_steps=spec["steps"],
        logging_steps=spec["steps"], seed=0, overwrite=True))
    return {"final": str(result.final_dir), "seconds": time.perf_counter() - started}


def evaluated_model(args: argparse.Namespace) -> tuple[str, str]:
    """(model reference, how it was made): ``--model`` or the cached short SFT run."""
    from _timing import cpu_lock, run_isolated

    if args.model:
        return args.model, f"`{args.model}`"
    final = args.sft_dir / "run" / FINAL_DIR
    if not (final / "adapter_config.json").is_file():
        with cpu_lock(args.lock):
            run_isolated(Path(__file__), {"kind": "sft", "out": str(args.sft_dir),
                                          "steps": args.sft_steps})
    return str(final), (f"{MODEL} after {args.sft_steps} steps of SFT (LoRA r=8, batch 8, lr "
                        "3e-4) on the demo training pairs, so that it answers with belief "
                        "markers; cached in " + f"`{args.sft_dir}`, merged for evaluation")


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    count = results[0]["prompts"]
    reading = key_median(results, "reading_s")
    generate = key_median(results, "generate_s_per_prompt") * count
    rows = ["| method | forwards | seconds for all prompts | vs reading | JSD to p* | "
            "JSD to the reading | samples that were no belief marker |",
            "|---|---|---|---|---|---|---|",
            f"| reading (one forward, softmax over the K belief tokens) | {count} prompts in "
            f"batches of 16 | {reading:.1f} | 1.00x | {key_median(results, 'reading_jsd'):.4f} "
            "| 0 | - |"]
    for n in SAMPLE_SIZES:
        seconds = key_median(results, f"sampled{n}_s")
        rows.append(
            f"| pluralign sampled estimate, n={n} first tokens | same forward + sampling | "
            f"{seconds:.1f} | {seconds / reading:.2f}x | "
            f"{key_median(results, f'sampled{n}_jsd'):.4f} | "
            f"{key_median(results, f'sampled{n}_vs_reading'):.4f} | "
            f"{100 * key_median(results, f'sampled{n}_off'):.1f}% |")
    rows.append(
        f"| sampling by `generate`, n={args.generate_n} (timed on {args.generate} prompts, "
        f"scaled) | {args.generate_n} sequences per prompt | {generate:.0f} | "
        f"{generate / reading:.0f}x | as the estimate with n={args.generate_n} "
        "(same distribution) | - | - |")
    return rows


def main() -> None:
    worker_entry({"eval": eval_worker, "sft": sft_worker})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--generate", type=int, default=8, help="Prompts timed with generate.")
    parser.add_argument("--generate-n", type=int, default=64)
    parser.add_argument("--model", help="Model to read (default: a cached short SFT run).")
    parser.add_argument("--sft-dir", type=Path, default=Path("runs/bench-eval-sft"))
    parser.add_argument("--sft-steps", type=int, default=40)
    args = parser.parse_args()
    model_ref, model_text = evaluated_model(args)
    if args.quick:
        args.prompts, args.generate = min(args.prompts, 200), min(args.generate, 4)
    spec = {"kind": "eval", "prompts": args.prompts, "generate": args.generate,
            "generate_n": args.generate_n, "model": model_ref, "label": "eval"}
    results = interleaved(Path(__file__), [spec], args.repeats, args.lock)[0]
    body = "\n".join([
        "## Belief distributions: one forward vs sampling (`benchmarks/eval_speed.py`)\n",
        f"Model: {model_text}; fp32, {results[0]['threads']} threads. {args.prompts} prompts: "
        "the bundled demo questions x groups cycled (each with its group's p*; "
        f"{results[0]['tokens_per_prompt']:.0f} tokens per prompt on average). Seconds: "
        f"median of {args.repeats} repeats (fresh process each); JSD: Jensen-Shannon "
        "distance (natural log), mean over prompts. The sampled estimate draws its samples "
        "from the same forward's full-vocabulary softmax, which is exactly the distribution "
        "of `generate`'s first token at temperature 1, so its JSD is also what sampling by "
        "generation gives, at the generation's cost; its distance to the reading is sampling "
        f"noise. Machine: {machine_line()}. Run on {time.strftime('%Y-%m-%d')}"
        f"{' (--quick)' if args.quick else ''}.\n",
        *table(results, args),
    ])
    print(body)
    if not args.no_write:
        write_section("eval-speed", body)


if __name__ == "__main__":
    main()
