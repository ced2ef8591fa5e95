"""GlobalOpinionQA pieces shared by `opinion_repro.py` and `recipe_sweep.py`.

Data: the shared GlobalOpinionQA dev file, responses written by the bundled
SmolLM2-135M (`framed` writer: fixed framings around the unchanged question),
split by question; of each training question one framing is held out (the
paper's setting) and never trained on. Training: SFT, then DPO and GDPO from
the SFT model, with the recipe of `pluralign.train.recipe`; each stage keeps
the weights that did best on a validation split carved from the training
questions (another framing of some of them), never on a reported prompt.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pluralign.data.builders.opinions import OpinionsConfig, build_opinions
from pluralign.data.records import GroupPreferenceExample, read_examples, write_examples
from pluralign.eval.evaluate import EvalConfig, evaluate
from pluralign.llm import LLMConfig
from pluralign.train.api import train
from pluralign.train.recipe import Recipe, bf16_is_fast
from pluralign.train.selection import carve_validation

SOURCE = Path(__file__).resolve().parents[1].parent / "shared/data/globalopinionqa/dev_groups.jsonl"
SHORT = {"United States": "US", "Pakistan": "PK", "S. Africa": "SA"}
METHODS = ("sft", "dpo", "gdpo")
#: LoRA on the last 10 of the model's 30 layers: what fits three groups x three seeds in an
#: hour on 2 cores. Like the step counts it sizes the run to its time budget, and it is the
#: same for every group. On US seed 0 (one thread): 12.5 min per (group, seed) against 20.3
#: with LoRA on every layer, GDPO held-out-framing JSD 0.086 against 0.061, both below the
#: 0.10 stretch line (BENCHMARKS.md, "GlobalOpinionQA reproduction: reading the tables").
REPRO_LORA_TOP_LAYERS = 10
#: The reproduction's sequence format: the answer options listed before the question. Kept
#: by `recipe_sweep.py` on the development groups' validation splits (seed 0): GDPO JSD
#: 0.067 against 0.101 for the records' default format, CBC 0.812 against 0.778 (the
#: question's wording does not say which option a class digit is; listed, it is copied).
REPRO_SEQUENCE_FORMAT = "separated-options"


@dataclass
class DataSpec:
    """How a group's data is built (the same for every seed and every recipe)."""

    questions: int = 40
    styles: int = 3
    pairs: int = 12
    writer: str = "framed"
    source: Path = SOURCE
    cache_dir: Path = Path("runs/opinion_repro/llm-cache")


def build_group(group: str | list[str], spec: DataSpec, out: Path) -> dict[str, Path]:
    """Build one group's data (seed 0, cached LLM answers); files train / paraphrase /
    questions. Rebuilt only when missing. A list of groups builds them into one dataset
    (every group of a question in the same split, with the same held-out framing)."""
    files = {name: out / f"{name}.jsonl" for name in ("train", "paraphrase", "questions")}
    if all(path.is_file() for path in files.values()):
        return files
    result = build_opinions(OpinionsConfig(
        source=str(spec.source), groups=[group] if isinstance(group, str) else list(group),
        max_questions=spec.questions,
        n_styles=spec.styles, pairs_per_question=spec.pairs, split_by="question",
        fractions=[0.75, 0.0, 0.25], writer=spec.writer, seed=0,
        llm=LLMConfig(cache_dir=str(spec.cache_dir)),
    ))
    train_split, held = hold_out_paraphrases(result.splits["train"], seed=0)
    for name, records in (("train", train_split), ("paraphrase", held),
                          ("questions", result.splits["test"])):
        if not records:
            raise SystemExit(f"{group}: no records for the {name} split; raise --questions")
        write_examples(files[name], records)
    counts = {name: sum(1 for _ in path.open()) for name, path in files.items()}
    prompts = {name: len({json.loads(line)["prompt"] for line in path.open()})
               for name, path in files.items()}
    (out / "build.json").write_text(json.dumps(
        {"counts": counts, "prompts": prompts, "report": result.report.to_dict()},
        indent=2, default=str))
    return files


def build_data(group: str, args: Any) -> tuple[dict[str, Path], float]:
    """One group's data files for a run with ``args.questions`` rows per group under
    ``args.out`` (LLM answers cached per group, so parallel builds never share a cache file)
    and the seconds the build took."""
    started = time.perf_counter()
    short = SHORT.get(group, group)
    files = build_group(group, DataSpec(questions=args.questions,
                                        cache_dir=args.out / "llm-cache" / short),
                        args.out / short / "data")
    return files, time.perf_counter() - started


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


@dataclass
class SeedRun:
    """One seed's three models and what their training chose."""

    finals: dict[str, Path]
    seconds: dict[str, float]
    selected_steps: dict[str, int | None]
    validation_jsd: dict[str, float | None] = field(default_factory=dict)

    def add(self, method: str, stage: StageResult) -> None:
        self.finals[method] = stage.final
        self.seconds[method] = stage.seconds
        self.selected_steps[method] = stage.selected_step
        self.validation_jsd[method] = stage.validation_jsd


def train_methods(files: dict[str, Path], recipe: Recipe, seed: int, out: Path,
                  methods: tuple[str, ...] = METHODS, **overrides: Any) -> SeedRun:
    """SFT from the bundled model, then every other method from the SFT model; ``overrides``
    are TrainConfig fields of every stage (e.g. ``group_in_prompt``)."""
    run = SeedRun({}, {}, {})
    for method in methods:
        start = "smollm2-135m" if method == "sft" else str(run.finals["sft"])
        run.add(method, train_stage(files, recipe, seed, out, method, start, **overrides))
    return run


@dataclass
class StageResult:
    """One trained stage: its final weights, wall seconds and what selection chose."""

    final: Path
    seconds: float
    selected_step: int | None
    validation_jsd: float | None


def train_stage(files: dict[str, Path], recipe: Recipe, seed: int, out: Path, method: str,
                start: str, **overrides: Any) -> StageResult:
    """One stage of ``method`` from ``start`` into ``out / method``."""
    started = time.perf_counter()
    # overwrite: the benchmark owns its folders
    result = train(recipe.train_config(
        method, start=start, train_file=str(files["train"]), output_dir=str(out / method),
        seed=seed, overwrite=True, **overrides), console_logs=False)
    return StageResult(result.final_dir, time.perf_counter() - started, result.selected_step,
                       best_validation_jsd(out / method, result.selected_step))


def best_validation_jsd(run_dir: Path, step: int | None) -> float | None:
    """Validation belief JSD at the selected step (the last evaluation without selection)."""
    from pluralign.train.metrics import read_metrics

    values = [(r["step"], r["eval_belief/jsd"]) for r in read_metrics(run_dir)
              if "eval_belief/jsd" in r]
    if not values:
        return None
    chosen = [v for s, v in values if s == step] if step is not None else []
    return chosen[0] if chosen else values[-1][1]


def evaluate_models(finals: dict[str, Path], data: Path, out: Path, seed: int,
                    n_samples: int, *, judge: str = "embedding", **options: Any
                    ) -> dict[str, Any]:
    """eval.json of ``finals`` on ``data`` plus per-prompt rows (predictions.jsonl);
    ``options`` are further EvalConfig fields (e.g. ``group_context_pool``)."""
    evaluate(EvalConfig(
        models=[str(finals[m]) for m in finals], data=str(data), output_dir=str(out),
        judge=judge, n_samples=n_samples, max_new_tokens=40, seed=seed,
        belief_samples=0, progress=False, bf16=bf16_is_fast(), **options,
    ))
    summary = json.loads((out / "eval.json").read_text())
    summary["rows"] = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    return summary


def method_values(summary: dict[str, Any], methods: list[str], metrics: tuple[str, ...],
                  ) -> dict[tuple[str, str], dict[str, float]]:
    """Per (method, metric) the per-prompt values of one evaluation of ``methods``. The
    evaluation labels its models in the order given, by run folder name, which is not the
    method's name for a shared SFT folder."""
    labels = dict(zip(methods, summary["models"], strict=True))
    return {(method, metric): per_prompt_values(summary["rows"], label, metric)
            for method, label in labels.items() for metric in metrics}


def write_validation(train_file: str | Path, fraction: float, seed: int, path: Path) -> Path:
    """The validation split training carves from ``train_file`` (same records, fraction and
    seed, so the same prompts), written to ``path``."""
    carve = carve_validation(read_examples(train_file), fraction, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_examples(path, carve.validation)
    return path


def per_prompt_values(rows: list[dict[str, Any]], model: str, metric: str) -> dict[str, float]:
    """One value per prompt: JSD, or the mean of CBC / BPC / RS / marker starts over the
    prompt's generations (BPC and RS over every generation, empty ones as failures)."""
    from pluralign.eval.generate import starts_with_marker

    out = {}
    for row in rows:
        if row["model"] != model:
            continue
        gens = row["generations"]
        if metric == "jsd":
            value = row["jsd"]
        elif not gens:
            continue
        elif metric == "cbc":
            value = np.mean([g["class_id"] is not None and g["class_id"] == g["description_class"]
                             for g in gens])
        elif metric == "bpc":
            value = np.mean([g["verdict"] == "yes" for g in gens])
        elif metric == "rs":
            scored = [g["rs"] for g in gens if g["rs"] is not None]
            if not scored:
                continue
            value = float(np.mean(scored))
        elif metric == "marker_start":
            value = np.mean([starts_with_marker(g["response"],
                                                has_description=g.get("has_description", True))
                             for g in gens])
        else:
            raise ValueError(metric)
        if value is not None:
            out[row["prompt"]] = float(value)
    return out


def seed_prompt_interval(values: list[dict[str, float]], *, resamples: int = 2000,
                         seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds and prompts with a 95% two-level bootstrap interval (seeds, then
    prompts resampled with replacement)."""
    rng = np.random.default_rng(seed)
    per_seed = [np.asarray(list(v.values())) for v in values if v]
    if not per_seed:
        return (float("nan"),) * 3
    mean = float(np.mean([x.mean() for x in per_seed]))
    means = np.empty(resamples)
    for i in range(resamples):
        picked = [per_seed[j] for j in rng.integers(0, len(per_seed), len(per_seed))]
        means[i] = np.mean([x[rng.integers(0, x.size, x.size)].mean() for x in picked])
    low, high = np.quantile(means, [0.025, 0.975])
    return mean, float(low), float(high)
