"""The end-to-end demo: SFT, then DPO and GDPO from the SFT model, evaluation, report.

Everything runs offline on the bundled SmolLM2-135M with LoRA and pluralign's
own demo opinion set (`pluralign.data.demo`). The models train on each
question as asked ("direct" wording) and are evaluated on a held-out casual
paraphrase of the same questions, the GDPO paper's setting. Numbers come from
the run: nothing is fixed in advance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pluralign.beliefs.formats import check_format_name
from pluralign.config import YamlConfig, reject_non_finite
from pluralign.runs import CONFIG_NAME
from pluralign.train.recipe import RECIPE, Recipe, bf16_is_fast, check_base_dtype

if TYPE_CHECKING:
    from pluralign.eval.group_comparison import GroupComparison

STAGES = ("data", "sft", "dpo", "gdpo", "evaluate")
DEMO_SFT_STEPS, DEMO_PREFERENCE_STEPS, DEMO_EVAL_EVERY = 50, RECIPE.preference_steps, 20
#: The demo's casual wordings often do not say which answer scale a question uses, and without
#: the options in view GDPO wrote another scale's description (held-out CBC 0.69-0.77 on seeds
#: 0-2). Written after the belief marker they leave the belief slot's prefix as it was: GDPO's
#: validation JSD over seeds 0-2 was 0.086 against 0.085 without them (0.205 with the options
#: before the question), held-out CBC 1.000 (BENCHMARKS.md, "Demo recipe exploration").
DEMO_SEQUENCE_FORMAT = "marker-options"


@dataclass
class DemoRunConfig(YamlConfig):
    """Settings of `pluralign demo` (the defaults fit in 15 minutes on 2 CPU cores).

    Training follows :data:`pluralign.train.recipe.RECIPE`, the recipe chosen by
    the sweep on the development groups; only the step counts are sized to the
    demo's time budget.
    """

    output_dir: str = field(default="runs/demo", metadata={"help": "Where runs and report go."})
    model: str = field(default="smollm2-135m", metadata={"help": "Base model reference."})
    group: str = field(default="Northvale", metadata={"help": "Demo group whose beliefs to learn."})
    groups: list[str] = field(
        default_factory=list,
        metadata={"help": "Two or more demo groups (repeat the option: --groups Northvale "
                          "--groups Southmere) instead of `group`: each stage trains one "
                          "group-conditioned model on all of them (every prompt names its "
                          "group), evaluation is reported per group, and the same questions' "
                          "GDPO distributions are printed for each group. Empty: `group` only."})
    questions: int = field(default=24, metadata={"help": "Demo questions used (of 48)."})
    pairs_per_question: int = field(default=8, metadata={"help": "Training pairs per question."})
    # Steps are what the demo sizes to its 15-minute budget (2 CPU cores with bf16; 10.0
    # minutes since eager attention and the compact SFT head). GDPO keeps the recipe's 60:
    # at 45 its validation JSD was still falling (0.17 at 30, 0.11 at 45; 0.08 at 60). SFT
    # keeps 50: 100 SFT steps raised SFT's CBC but left GDPO's JSD and BPC worse
    # (BENCHMARKS.md, "Demo recipe exploration").
    sft_steps: int = field(default=DEMO_SFT_STEPS, metadata={"help": "SFT optimiser steps."})
    preference_steps: int = field(
        default=DEMO_PREFERENCE_STEPS, metadata={"help": "DPO and GDPO steps each."})
    batch_size: int = field(default=RECIPE.batch_size, metadata={"help": "Pairs per step."})
    lora_r: int = field(default=RECIPE.lora_r, metadata={"help": "LoRA rank."})
    sft_learning_rate: float = field(
        default=RECIPE.sft_learning_rate, metadata={"help": "SFT learning rate."})
    preference_learning_rate: float = field(
        default=RECIPE.preference_learning_rate, metadata={"help": "DPO/GDPO learning rate."})
    beta: float = field(default=RECIPE.beta, metadata={"help": "DPO/GDPO beta."})
    chosen_nll_weight: float = field(
        default=RECIPE.chosen_nll_weight,
        metadata={"help": "Weight of the chosen sequence's NLL beside GDPO's preference term "
                          "(TRL's 'sft' loss type, RPO); 0: off. DPO stays plain."})
    eval_every: int = field(
        default=DEMO_EVAL_EVERY,
        metadata={"help": "Evaluate on the validation split (carved from the training "
                          "records) every N steps; the best evaluation's weights are kept."})
    sequence_format: str = field(
        default=DEMO_SEQUENCE_FORMAT,
        metadata={"help": "Sequence format of training and evaluation: a registered name "
                          "(pluralign ls sequence-formats) or auto (the format the records "
                          "name, separated where none). The demo's default writes the answer "
                          "options after the belief marker."})
    base_dtype: str = field(
        default=RECIPE.base_dtype,
        metadata={"help": "Frozen base weights' precision under LoRA: float32, bfloat16 (GDPO "
                          "steps 1.1x faster than bf16 autocast alone on CPUs with native "
                          "bf16, JSD about 0.02 worse on the conflicting-pairs check) or auto "
                          "(bfloat16 where bf16 is fast). LoRA weights stay fp32."})
    samples: int = field(default=2, metadata={"help": "Belief-first generations per question."})
    max_new_tokens: int = field(default=40, metadata={"help": "Tokens per generated answer."})
    seed: int = field(default=0, metadata={"help": "Seed of data, LoRA init and sampling."})

    def __post_init__(self) -> None:
        reject_non_finite(self)
        for name in ("questions", "pairs_per_question", "sft_steps", "preference_steps",
                     "batch_size", "lora_r", "eval_every", "samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        if self.chosen_nll_weight < 0:
            raise ValueError(f"chosen_nll_weight: must be >= 0, got {self.chosen_nll_weight}")
        check_format_name(self.sequence_format)
        check_base_dtype(self.base_dtype)
        self._check_groups()

    def _check_groups(self) -> None:
        from pluralign.data.demo import DEMO_GROUPS

        if not self.groups:
            return
        unknown = [g for g in self.groups if g not in DEMO_GROUPS]
        if unknown:
            raise ValueError(f"groups: unknown demo group {unknown[0]!r}; known: "
                             f"{', '.join(DEMO_GROUPS)}")
        if len(set(self.groups)) != len(self.groups) or len(self.groups) < 2:
            raise ValueError(f"groups: needs two or more different groups, got {self.groups}; "
                             "for one group set `group`")

    @property
    def trained_groups(self) -> list[str]:
        """The groups whose pairs are trained and evaluated."""
        return list(self.groups) if self.groups else [self.group]

    @classmethod
    def quick(cls, **overrides: Any) -> DemoRunConfig:
        """A run of under 3 minutes: fewer questions and steps, same pipeline."""
        settings = dict(questions=12, pairs_per_question=4, sft_steps=10, preference_steps=12,
                        batch_size=6, eval_every=6, samples=1, max_new_tokens=24)
        settings.update(overrides)
        return cls(**settings)

    def recipe(self) -> Recipe:
        """The shared recipe with this run's steps, rates, rank and beta."""
        return RECIPE.replace(
            sft_steps=self.sft_steps, preference_steps=self.preference_steps,
            batch_size=self.batch_size, lora_r=self.lora_r,
            sft_learning_rate=self.sft_learning_rate,
            preference_learning_rate=self.preference_learning_rate, beta=self.beta,
            chosen_nll_weight=self.chosen_nll_weight,
            eval_every=self.eval_every, sequence_format=self.sequence_format,
            base_dtype=self.base_dtype)


@dataclass
class DemoResult:
    """Where the demo put its outputs, and its summary table."""

    output_dir: Path
    report: Path
    rows: list[dict[str, Any]]
    reference_lines: dict[str, float]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)  #: measured, per stage
    #: With ``groups``: per-group JSD and the same questions answered for each group.
    by_group: GroupComparison | None = None


class StageClock:
    """Stage announcements with an estimate of the time left.

    Each stage has a prior cost (in relative units); once a stage has run, the
    measured seconds per unit rescale the estimate of the remaining stages.
    """

    def __init__(self, costs: dict[str, float], echo: Callable[[str], None]) -> None:
        self.costs, self.echo = costs, echo
        self.started = time.perf_counter()
        self.done_units = 0.0
        self.seconds: dict[str, float] = {}  #: measured wall time of each finished stage

    def start(self, index: int, stage: str, what: str) -> None:
        elapsed = time.perf_counter() - self.started
        left_units = sum(list(self.costs.values())[index:])
        if self.done_units >= 1:  # the tiny data stage alone says nothing about speed
            estimate = f"about {left_units * elapsed / self.done_units / 60:.1f} min left"
        else:
            estimate = "estimating time left after this stage"
        self.echo(f"[{index + 1}/{len(self.costs)}] {what} ({elapsed / 60:.1f} min so far, "
                  f"{estimate})")
        self._current, self._stage_started = stage, time.perf_counter()

    def finish(self) -> None:
        self.done_units += self.costs[self._current]
        self.seconds[self._current] = time.perf_counter() - self._stage_started


def write_demo_data(config: DemoRunConfig, out: Path) -> tuple[Path, Path]:
    """The demo's training file (each question as asked) and held-out file (a casual
    paraphrase of each), under ``out/data``."""
    from pluralign.data.demo import demo_pairs, demo_questions
    from pluralign.data.records import write_examples

    questions = demo_questions()[: config.questions]
    train = demo_pairs(config.trained_groups, pairs_per_question=config.pairs_per_question,
                       seed=config.seed, styles=["direct"], questions=questions)
    held_out = demo_pairs(config.trained_groups, pairs_per_question=2, seed=config.seed + 1,
                          styles=["casual"], questions=questions)
    write_examples(out / "data" / "train.jsonl", train)
    write_examples(out / "data" / "eval.jsonl", held_out)
    return out / "data" / "train.jsonl", out / "data" / "eval.jsonl"


def _train(config: DemoRunConfig, method: str, start: str, files: tuple[Path, Path],
           out: Path) -> Path:
    from pluralign.train.api import train

    run_dir = out / method
    # The held-out file is only watched for the report's curves; the weights kept are
    # chosen on the validation split carved from the training records.
    result = train(config.recipe().train_config(
        method, start=start, train_file=str(files[0]), eval_file=str(files[1]),
        output_dir=str(run_dir), seed=config.seed, overwrite=True,  # the demo starts fresh
        group_in_prompt=bool(config.groups)), console_logs=False)
    return result.final_dir


def _evaluate(config: DemoRunConfig, finals: dict[str, Path], eval_file: Path,
              out: Path) -> Any:
    from pluralign.eval.evaluate import EvalConfig, evaluate

    return evaluate(EvalConfig(
        models=[str(finals[m]) for m in ("sft", "dpo", "gdpo")], data=str(eval_file),
        output_dir=str(out / "eval"), judge="embedding", n_samples=config.samples,
        max_new_tokens=config.max_new_tokens, seed=config.seed, belief_samples=32,
        bf16=bf16_is_fast(),
    ))


def _final_minority_margin(run_dir: Path) -> float | None:
    """The last held-out margin of all non-majority pairs (``minority``: lowest minority and
    others together). Not the paper's lowest-minority split: the demo's held-out pairs draw
    the chosen belief from p*, and with 2 pairs per question the lowest belief is almost
    never drawn (none of the 48 held-out pairs of the default demo), so that column would
    stay empty."""
    from pluralign.train.metrics import read_metrics

    values = [r["eval_rewards/margins_minority"] for r in read_metrics(run_dir)
              if "eval_rewards/margins_minority" in r]
    return values[-1] if values else None


def summary_rows(out: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Method x metrics from the demo's eval.json and its runs' metrics.jsonl."""
    data = json.loads((out / "eval" / "eval.json").read_text())
    rows = []
    for label, entry in data["models"].items():
        metrics = entry["metrics"]
        row = {"method": label}
        for name in ("jsd", "cbc", "bpc", "rs", "marker_start"):
            row[name] = metrics.get(name, {}).get("value")
        row["minority_margin"] = _final_minority_margin(out / label)
        rows.append(row)
    lines = {name: line["value"] for name, line in data.get("reference_lines", {}).items()}
    return rows, lines


def _check_demo_folder(out: Path) -> None:
    """Refuse a non-empty folder that is not an earlier demo's: the demo rewrites its
    data/, runs and eval/ there, and must never do so over a user's files."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        DemoRunConfig.load(out / CONFIG_NAME)
    except Exception:
        raise ValueError(
            f"output_dir {out} is not empty and holds no earlier demo (no demo config.yaml); "
            "choose a new or empty folder") from None


def run_demo(config: DemoRunConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Run the whole demo and return its table and report path."""
    out = Path(config.output_dir)
    _check_demo_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_NAME)
    pref = config.preference_steps * 2.2  # a preference step costs about 2 SFT steps
    groups = config.trained_groups
    clock = StageClock({"data": 0.5, "sft": config.sft_steps, "dpo": pref, "gdpo": pref,
                        "evaluate": 3.0 * config.samples * config.questions * len(groups) / 4},
                       echo)
    clock.start(0, "data", f"demo data: {config.questions} questions of {' and '.join(groups)}")
    files = write_demo_data(config, out)
    clock.finish()
    finals: dict[str, Path] = {}
    clock.start(1, "sft", f"SFT of {config.model} with LoRA r={config.lora_r}")
    finals["sft"] = _train(config, "sft", config.model, files, out)
    clock.finish()
    for index, method in ((2, "dpo"), (3, "gdpo")):
        clock.start(index, method, f"{method.upper()} from the SFT model")
        finals[method] = _train(config, method, str(finals["sft"]), files, out)
        clock.finish()
    clock.start(4, "evaluate", "evaluation of SFT, DPO and GDPO on held-out paraphrases")
    result = _evaluate(config, finals, files[1], out)
    clock.finish()
    rows, lines = summary_rows(out)
    report = Path(result.files.get("report_html", out / "eval" / "report.html"))
    by_group = None
    if config.groups:
        from pluralign.eval.group_comparison import compare_groups

        by_group = compare_groups(out / "eval", model="gdpo")
    return DemoResult(out, report, rows, lines, time.perf_counter() - clock.started,
                      dict(clock.seconds), by_group)
