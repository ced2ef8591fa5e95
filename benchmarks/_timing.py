"""Helpers shared by the speed benchmarks: isolated runs, step timing, peak memory, trainers.

How the benchmarks measure (each script's section of BENCHMARKS.md repeats it):

- every measured configuration runs in a fresh Python process
  (:func:`run_isolated`), so its peak memory is its own;
- configurations that are compared run interleaved, repeat by repeat, on the
  same machine in the same invocation (:func:`interleaved`); with ``--lock
  PATH`` each repeat holds that file's ``flock`` so that other jobs sharing the
  CPU cannot run in the middle of a comparison;
- step time: wall time of a Trainer step (``on_step_begin`` to ``on_step_end``:
  forward, backward, optimiser), after warm-up steps that are not counted;
- a repeat in which a run got less than 75% of its threads' CPU time (another
  process competed for the cores) is run again, at most twice;
- peak memory: the process's resident set size (RSS), sampled every
  millisecond by a psutil thread during the training steps; reported as the
  peak and as the peak above the RSS just before the first step (activations,
  gradients and optimiser state: what the step itself adds).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

RESULT_PREFIX = "BENCHMARK-RESULT "
MB = 2**20

#: A short neutral text repeated to lengthen prompts (prefix-sharing measurements).
CONTEXT_SENTENCE = ("Background for the question: residents of the region were surveyed about "
                    "local services, transport, schools, housing and the economy. ")


# ----------------------------------------------------------------- command line, processes


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="A short variant (fewer points).")
    parser.add_argument("--repeats", type=int, default=3, help="Repeats per configuration.")
    parser.add_argument("--lock", default=os.environ.get("PLURALIGN_CPU_LOCK"),
                        help="flock this file during each repeat (shared machines).")
    parser.add_argument("--no-write", action="store_true", help="Print, do not edit BENCHMARKS.md.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def worker_entry(handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """In a worker process (``--worker SPEC``): run the spec's handler, print its result, exit."""
    if "--worker" not in sys.argv:
        return
    spec = json.loads(sys.argv[sys.argv.index("--worker") + 1])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
    result = handlers[spec["kind"]](spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.exit(0)


def _quiet_libraries() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "trl", "datasets", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()


def run_isolated(script: str | Path, spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run ``script --worker spec`` in a fresh interpreter and return its result dict."""
    done = subprocess.run([sys.executable, str(script), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"benchmark worker failed (exit {done.returncode}) for {spec}:\n"
                       f"{done.stderr[-3000:]}")


@contextlib.contextmanager
def cpu_lock(path: str | None) -> Iterator[None]:
    """Hold ``flock(path)`` (no-op without a path)."""
    if not path:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: A run that got less than this share of its threads' CPU time shared the cores with another
#: process (about 0.86-0.97 when alone); its repeat is run again.
MIN_CPU_SHARE = 0.75
#: How many times one repeat is run again before its numbers are kept anyway.
MAX_RETRIES = 2


def interleaved(script: str | Path, specs: list[dict[str, Any]], repeats: int,
                lock: str | None) -> list[list[dict[str, Any]]]:
    """``results[i][r]``: spec ``i`` in repeat ``r``; every repeat runs all specs in turn.

    A repeat in which some run got less than :data:`MIN_CPU_SHARE` of the CPU is run
    again (at most :data:`MAX_RETRIES` times); each result records ``retries``.
    """
    results: list[list[dict[str, Any]]] = [[] for _ in specs]
    for repeat in range(repeats):
        for attempt in range(MAX_RETRIES + 1):
            runs = _one_repeat(script, specs, lock, f"repeat {repeat + 1}/{repeats}")
            shares = [run.get("cpu_share", 1.0) for run in runs]
            if min(shares) >= MIN_CPU_SHARE or attempt == MAX_RETRIES:
                break
            print(f"  repeat {repeat + 1}: a run got {min(shares):.2f} of the CPU; running it "
                  "again", file=sys.stderr, flush=True)
        for i, run in enumerate(runs):
            results[i].append({**run, "retries": attempt})
    save_raw(script, specs, results)
    return results


def retry_note(*result_sets: list[list[dict[str, Any]]]) -> str:
    """One sentence on repeats redone because another process took CPU time."""
    redone = sum(runs[r].get("retries", 0) for results in result_sets
                 for runs in results[:1] for r in range(len(runs)))
    return (f"Repeats are redone when a run got under {MIN_CPU_SHARE:.0%} of its threads' CPU "
            f"time (another process on the cores); redone here: {redone}.")


def _one_repeat(script: str | Path, specs: list[dict[str, Any]], lock: str | None,
                name: str) -> list[dict[str, Any]]:
    runs = []
    with cpu_lock(lock):
        for spec in specs:
            started = time.perf_counter()
            load = os.getloadavg()[0]
            runs.append({**run_isolated(script, spec), "loadavg_before": load})
            print(f"  {name} {spec.get('label', spec['kind'])}: "
                  f"{time.perf_counter() - started:.0f} s (load before {load:.2f}, CPU share "
                  f"{runs[-1].get('cpu_share', float('nan')):.2f})", file=sys.stderr, flush=True)
    return runs


def save_raw(script: str | Path, specs: list[dict[str, Any]], results: list[Any]) -> Path:
    """Keep every run's numbers (``runs/benchmarks/<script>-<time>.json``) for inspection."""
    folder = Path("runs") / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Path(script).stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"specs": specs, "results": results}, indent=1))
    return path


def ratio_median(top: list[dict[str, Any]], bottom: list[dict[str, Any]], key: str,
                 floor: float = 0.0) -> float:
    """Median over repeats of ``top[r][key] / bottom[r][key]`` (runs of the same repeat)."""
    import statistics

    return statistics.median(t[key] / max(b[key], floor)
                             for t, b in zip(top, bottom, strict=True))


def key_median(runs: list[dict[str, Any]], key: str) -> float:
    import statistics

    return statistics.median(r[key] for r in runs)


# ----------------------------------------------------------------------- measurement


class RssSampler:
    """Peak resident set size of this process, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self._process = psutil.Process()
        self.baseline = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def step_timer(synchronize: Callable[[], None] | None = None) -> Any:
    """A TrainerCallback whose ``times`` lists each optimiser step's wall time.

    ``synchronize`` (``torch.cuda.synchronize`` on a GPU) runs at both ends of a step: GPU
    kernels run asynchronously, and without it the timer would measure kernel launches."""
    from transformers import TrainerCallback

    sync = synchronize or (lambda: None)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._started = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            sync()
            self._started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            sync()
            self.times.append(time.perf_counter() - self._started)

    return StepTimer()


def timed_training(trainer: Any, warmup: int,
                   synchronize: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``trainer`` to its ``max_steps``; step times after ``warmup`` and RSS peaks
    (``synchronize``: see :func:`step_timer`)."""
    import statistics

    import torch

    timer = step_timer(synchronize)
    trainer.add_callback(timer)
    process = psutil.Process()
    cpu_before, wall_before = sum(process.cpu_times()[:2]), time.perf_counter()
    with RssSampler() as rss:
        trainer.train()
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    timed = timer.times[warmup:]
    return {
        "step_s": statistics.median(timed), "steps_s": timed,
        "peak_rss_mb": rss.peak / MB, "step_rss_mb": (rss.peak - rss.baseline) / MB,
        # Share of its threads' wall time this process got on the CPU while training: far
        # below its usual value means another process competed for the cores.
        "cpu_share": cpu / ((time.perf_counter() - wall_before) * torch.get_num_threads()),
    }


# ------------------------------------------------------------------------ data, trainers


def demo_pair_records(n: int, prompt_tokens: int = 0, tokenizer: Any = None) -> list[Any]:
    """``n`` demo training pairs (cycled); ``prompt_tokens > 0`` prepends background text so
    that every prompt is ``prompt_tokens`` tokens long under ``tokenizer`` (give one then)."""
    from pluralign.data.demo import demo_records

    pool = demo_records(split="train", seed=0)
    records = [pool[i % len(pool)] for i in range(n)]
    if prompt_tokens <= 0:
        return records
    context = tokenizer.encode(CONTEXT_SENTENCE * (1 + prompt_tokens // 10),
                               add_special_tokens=False)
    out = []
    for record in records:
        # One token fewer for the newline that separates the background from the question.
        need = max(0, prompt_tokens - 1 - len(tokenizer.encode(record.prompt,
                                                               add_special_tokens=False)))
        background = tokenizer.decode(context[:need]).rstrip()
        out.append(dataclasses.replace(record, prompt=f"{background}\n{record.prompt}"))
    return out


def _train_config(spec: dict[str, Any], out: Path) -> Any:
    from pluralign.models import ModelConfig
    from pluralign.train.config import TrainConfig

    return TrainConfig(
        method=spec.get("method", "gdpo"), train_file="(in memory)", output_dir=str(out),
        # SDPA, the model's own kernel, for every trainer (TRL's too): under bf16 on a CPU
        # `auto` would give pluralign's trainer eager attention and TRL's not.
        model=ModelConfig(model=spec["model"], lora_r=spec["lora_r"],
                          lora_alpha=2.0 * spec["lora_r"],
                          attn_implementation=spec.get("attn", "sdpa"),
                          # bfloat16: a bf16 frozen base; peft keeps the LoRA weights in fp32.
                          dtype=spec.get("dtype", "float32")),
        max_steps=spec["steps"], per_device_train_batch_size=spec["batch"],
        logging_steps=10**6, save_steps=10**6, learning_rate=1e-4, seed=0, beta=0.1,
        bf16=spec.get("bf16", False), max_length=spec.get("max_length", 1024),
    )


def pluralign_trainer(spec: dict[str, Any], out: Path) -> Any:
    """pluralign's trainer for the spec's method as ``pluralign.train`` builds it, on demo
    records, with ``spec['flags']`` over its TRL config's arguments."""
    from pluralign.train.api import build_trainer, load_policy

    config = _train_config(spec, out)
    # The tokenizer first: long prompts are cut to a token count.
    model, tokenizer = load_policy(config)
    records = demo_pair_records(spec["batch"] * spec["steps"], spec.get("prompt_tokens", 0),
                                tokenizer)
    return build_trainer(config, train_records=records, policy=(model, tokenizer),
                         trainer_options=spec.get("flags", {}))


def trl_trainer(spec: dict[str, Any], out: Path) -> Any:
    """TRL's own DPOTrainer on the same token ids (DPO pairs), precomputed reference log-probs."""
    from trl import DPOConfig, DPOTrainer

    from pluralign.train.api import load_policy, sequence_format
    from pluralign.train.arguments import training_arguments
    from pluralign.train.dataset import preference_dataset

    class PretokenizedDPOTrainer(DPOTrainer):
        # The rows already hold prompt_ids/chosen_ids/rejected_ids (pluralign's tokenisation),
        # so both trainers see identical tokens; everything else is TRL's.
        def _prepare_dataset(self, dataset: Any, *args: Any) -> Any:
            return dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])

    config = _train_config(spec, out)
    # The model and tokenizer pluralign trains (with the sequence format's tokens).
    model, tokenizer = load_policy(config)
    records = demo_pair_records(spec["batch"] * spec["steps"], spec.get("prompt_tokens", 0),
                                tokenizer)
    data = preference_dataset(records, tokenizer, sequence_format(config),
                              pairing=spec.get("pairing", "dpo"))
    common = training_arguments(config, has_eval=False)
    args = DPOConfig(**common, beta=0.1, precompute_ref_log_probs=True)
    return PretokenizedDPOTrainer(model=model, args=args, processing_class=tokenizer,
                                  train_dataset=data)


TRAINERS: dict[str, Callable[[dict[str, Any], Path], Any]] = {
    "pluralign": pluralign_trainer,
    "trl": trl_trainer,
}


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: build the spec's trainer, time its steps, report times and memory."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = TRAINERS[spec["impl"]](spec, Path(tmp))
        result = timed_training(trainer, spec.get("warmup", 1))
        columns = ["prompt_ids", "chosen_ids", "rejected_ids"]
        rows = list(trainer.train_dataset.select_columns(columns))
    prompts = sum(len(r["prompt_ids"]) for r in rows)
    tokens = 2 * prompts + sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    result["pairs_per_s"] = spec["batch"] / result["step_s"]
    result["tokens_per_pair"] = tokens / len(rows)
    result["prompt_tokens_mean"] = prompts / len(rows)
    result["threads"] = torch.get_num_threads()
    return result
