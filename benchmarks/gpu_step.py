"""Training steps on a GPU: pluralign's DPO and GDPO against TRL's DPOTrainer, fp32 and bf16.

The step benchmark of ``vs_trl.py`` on a CUDA device: the same trainers (``_timing``), the
same demo pairs and LoRA, SDPA attention for every trainer (PyTorch's flash kernel under
bf16), step time between ``torch.cuda.synchronize()`` calls, peak GPU memory from
``torch.cuda.max_memory_allocated``. Configurations run in one process, interleaved within
each repeat (on a GPU another process's import costs more than the steps; memory is reset
between runs). Never run in CI.

Precision rows: ``fp32``; ``bf16 autocast`` (fp32 weights, the Trainer's ``bf16=True``);
``bf16 base`` (frozen weights stored in bf16, LoRA weights and optimiser state in fp32, under
autocast).

``--random-init CONFIG_DIR`` builds the model from a config and tokenizer folder with random
weights: step time does not depend on the weights' values, and the bundled GGUF file is
larger than what can be sent to a rented GPU machine here.

Usage:
  python benchmarks/gpu_step.py --measure OUT.json [--random-init DIR] [--repeats 3]
  python benchmarks/gpu_step.py --table OUT.json [MORE.json]  # writes BENCHMARKS.md's section
  python benchmarks/gpu_step.py --profile DIR [--random-init DIR]  # operator tables of one step
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from _report import publish
from _timing import TRAINERS, key_median, ratio_median, timed_training

TRL_DPO = {"impl": "trl", "method": "dpo", "pairing": "dpo"}
DPO = {"impl": "pluralign", "method": "dpo"}
GDPO = {"impl": "pluralign", "method": "gdpo"}
FP32: dict[str, Any] = {"bf16": False}
AUTOCAST: dict[str, Any] = {"bf16": True}
BF16_BASE: dict[str, Any] = {"bf16": True, "dtype": "bfloat16"}
NO_SHARING: dict[str, Any] = {"flags": {"share_prefix": False}}

#: (title, batch, rows: (label, spec fields)); the first row of each is the ratios' base.
SETTINGS: list[tuple[str, int, list[tuple[str, dict[str, Any]]]]] = [
    ("demo prompts, batch 8 pairs", 8, [
        ("TRL DPOTrainer, fp32", {**TRL_DPO, **FP32}),
        ("pluralign DPO, fp32", {**DPO, **FP32}),
        ("pluralign GDPO, fp32", {**GDPO, **FP32}),
        ("TRL DPOTrainer, bf16 autocast", {**TRL_DPO, **AUTOCAST}),
        ("pluralign GDPO, bf16 autocast", {**GDPO, **AUTOCAST}),
        ("pluralign GDPO, bf16 base", {**GDPO, **BF16_BASE}),
    ]),
    ("demo prompts, batch 64 pairs", 64, [
        ("TRL DPOTrainer, bf16 autocast", {**TRL_DPO, **AUTOCAST}),
        ("pluralign GDPO, bf16 autocast", {**GDPO, **AUTOCAST}),
        ("pluralign GDPO, bf16 base", {**GDPO, **BF16_BASE}),
    ]),
    ("demo prompts, batch 8 pairs, bf16 autocast: prefix sharing and attention kernel", 8, [
        ("TRL DPOTrainer", {**TRL_DPO, **AUTOCAST}),
        ("pluralign GDPO", {**GDPO, **AUTOCAST}),
        ("pluralign GDPO, no prefix sharing", {**GDPO, **AUTOCAST, **NO_SHARING}),
        ("pluralign GDPO, no prefix sharing, cuDNN attention off",
         {**GDPO, **AUTOCAST, **NO_SHARING, "cudnn_sdp": False}),
    ]),
]


def random_model_dir(config_dir: Path, out: Path) -> Path:
    """A model folder with ``config_dir``'s config and tokenizer and random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for path in config_dir.iterdir():
        if path.name != "config.json":
            shutil.copy(path, out / path.name)
    return out


def measure_one(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        # SDPA's cuDNN kernel (its first choice under bf16 on Hopper) or the others.
        torch.backends.cuda.enable_cudnn_sdp(spec.get("cudnn_sdp", True))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = TRAINERS[spec["impl"]](spec, Path(tmp))
        result = timed_training(trainer, spec["warmup"],
                                torch.cuda.synchronize if cuda else None)
        params = list(trainer.model.parameters())
        result["device"] = str(params[0].device)
        # What each precision row really trains: frozen and trainable weights' dtypes.
        result["dtypes"] = {kind: sorted({str(p.dtype) for p in params
                                          if p.requires_grad == trainable})
                            for kind, trainable in (("frozen", False), ("trainable", True))}
        del trainer
    gc.collect()
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.empty_cache()
    return result


def measure(args: argparse.Namespace) -> None:
    import torch

    work = Path(tempfile.mkdtemp())  # the random-weights model, removed when done
    try:
        model = (str(random_model_dir(Path(args.random_init), work / "model"))
                 if args.random_init else args.model)
        _measure_settings(args, model, torch)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure_settings(args: argparse.Namespace, model: str, torch: Any) -> None:
    """Every setting ``args.repeats`` times; the JSON is rewritten after each row."""
    runs: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    settings = [s for s in SETTINGS if args.only is None or args.only in s[0]]
    for repeat in range(args.repeats):
        for title, batch, rows in settings:
            for label, fields in rows:
                spec = {"model": model, "lora_r": 8, "batch": batch, "prompt_tokens": 0,
                        "steps": args.steps + args.warmup, "warmup": args.warmup, **fields}
                key = f"{title}: {label}"
                try:
                    result = measure_one(spec)
                except Exception as error:  # one failed row must not lose the others
                    traceback.print_exc()
                    result = {"error": f"{type(error).__name__}: {error}"}
                runs.setdefault(key, []).append(result)
                print(f"[repeat {repeat + 1}] {key}: "
                      f"{result.get('step_s', result.get('error'))}", flush=True)
                Path(args.measure).write_text(json.dumps(_meta(args, torch, started, runs)))


def profile(args: argparse.Namespace) -> None:
    """One profiled step (after warm-up) of TRL's DPO and pluralign's GDPO, batch 8, bf16
    autocast: operator tables by self CPU and self CUDA time, written to ``args.profile``."""
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())  # the random-weights model, removed when done
    try:
        model = (str(random_model_dir(Path(args.random_init), work / "m")) if args.random_init
                 else args.model)
        _profile_trainers(model, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _profile_trainers(model: str, out: Path) -> None:
    """The profiled step of each trainer on ``model``, tables written into ``out``."""
    import torch
    from torch.profiler import ProfilerActivity
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]

    class Profiled(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 3:
                sync()
                self.profiler = torch.profiler.profile(activities=activities, with_stack=True)
                self.profiler.__enter__()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 4:
                sync()
                self.profiler.__exit__(None, None, None)

    for name, fields in (("trl_dpo", TRL_DPO), ("gdpo", GDPO)):
        spec = {"model": model, "lora_r": 8, "batch": 8, "prompt_tokens": 0, "steps": 5,
                "warmup": 3, **fields, **AUTOCAST}
        with tempfile.TemporaryDirectory() as tmp:
            trainer = TRAINERS[spec["impl"]](spec, Path(tmp))
            probe = Profiled()
            trainer.add_callback(probe)
            trainer.train()
        averages = probe.profiler.key_averages()
        text = [averages.table(sort_by="self_cpu_time_total", row_limit=40),
                averages.table(sort_by="self_cuda_time_total" if cuda else "cpu_time_total",
                               row_limit=25),
                probe.profiler.key_averages(group_by_stack_n=6).table(
                    sort_by="self_cpu_time_total", row_limit=25)]
        (out / f"{name}.txt").write_text("\n\n".join(text))
        print(name, "written", flush=True)


def _meta(args: argparse.Namespace, torch: Any, started: float,
          runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    import transformers
    import trl

    cuda = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name(0) if cuda else "none (CPU)",
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "trl": trl.__version__,
            "random_init": bool(args.random_init), "steps": args.steps, "warmup": args.warmup,
            "repeats": args.repeats, "wall_s": time.perf_counter() - started,
            "date": time.strftime("%Y-%m-%d"), "runs": runs}


def _setting_rows(title: str, batch: int, rows: list[tuple[str, dict[str, Any]]],
                  data: dict[str, Any]) -> list[str]:
    lines = [f"**{title}** (median of {data['steps']} steps after {data['warmup']} warm-up "
             f"steps, {data['repeats']} repeats):", "",
             "| trainer | step ms | pairs/s | vs first row (speed) | peak GPU MB |",
             "|---|---|---|---|---|"]
    base = data["runs"][f"{title}: {rows[0][0]}"]
    for label, _ in rows:
        runs = data["runs"][f"{title}: {label}"]
        failed = [r["error"] for r in runs if "error" in r]
        if failed:
            lines.append(f"| {label} | failed: {failed[0][:120]} | | | |")
            continue
        step = key_median(runs, "step_s")
        peak = f"{key_median(runs, 'peak_gpu_mb'):.0f}" if "peak_gpu_mb" in runs[0] else "–"
        lines.append(f"| {label} | {1000 * step:.1f} | {batch / step:.0f} | "
                     f"{ratio_median(base, runs, 'step_s'):.2f}x | {peak} |")
    return [*lines, ""]


def table(paths: list[Path]) -> str:
    """BENCHMARKS.md's section from one or more results files (each setting from the file
    that measured it)."""
    files = [json.loads(path.read_text()) for path in paths]
    data = files[0]
    lines = [
        "## Training steps on a GPU (`benchmarks/gpu_step.py`)", "",
        f"{data['gpu']}, torch {data['torch']} (CUDA {data['cuda']}), transformers "
        f"{data['transformers']}, TRL {data['trl']}; run {data['date']} on a rented machine, "
        "never in CI. SmolLM2-135M's architecture and tokenizer"
        + (" with random weights (step time does not depend on their values; the bundled "
           "GGUF is too large to send to the machine)" if data["random_init"] else "")
        + ", LoRA r=8 on q_proj and v_proj, bundled demo pairs, SDPA attention for every "
        "trainer. TRL's DPOTrainer with precomputed reference log-probs (its fastest "
        "setting; the precomputing pass is not in its step time); pluralign's trainers with "
        "their defaults (a row's reference log-probs are computed in the step that first "
        "uses it, so here in every step). Step time between CUDA synchronisations, median "
        "over the repeats, interleaved in one process; ratios are medians of per-repeat "
        "ratios against the first row of each table. bf16 autocast: fp32 weights under "
        "autocast; bf16 base: frozen weights in bf16, LoRA weights and optimiser state in "
        "fp32. Raw results: `benchmarks/gpu_results/`.", "",
        "Commands (on the GPU machine, with this repository and its dependencies): "
        "`python benchmarks/gpu_step.py --measure gpu_step.json --random-init "
        "<folder with SmolLM2-135M's config.json and tokenizer files>` (add `--only "
        "'prefix sharing' --repeats 2 --steps 6 --warmup 2` for the last table), then "
        "`python benchmarks/gpu_step.py --table gpu_step.json [more.json]` here.", "",
    ]
    for title, batch, rows in SETTINGS:
        measured = [f for f in files if f"{title}: {rows[0][0]}" in f["runs"]]
        if measured:
            lines += _setting_rows(title, batch, rows, measured[-1])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", help="Run the steps and write their results to this file.")
    parser.add_argument("--table", nargs="+", help="Write BENCHMARKS.md's section from these "
                        "results files.")
    parser.add_argument("--model", default="smollm2-135m", help="Model reference.")
    parser.add_argument("--random-init", help="Config and tokenizer folder; random weights.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per run.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps per run.")
    parser.add_argument("--only", help="Measure only the settings whose title has this text.")
    parser.add_argument("--profile", help="Profile one step of each trainer into this folder.")
    parser.add_argument("--no-write", action="store_true", help="Print, don't write.")
    args = parser.parse_args()
    if args.measure:
        measure(args)
    if args.profile:
        profile(args)
    if args.table:
        publish("gpu-step", table([Path(p) for p in args.table]), write=not args.no_write)


if __name__ == "__main__":
    main()
