"""One model for many groups, and groups it has never seen (issue 20, item 4).

Data: the six groups of ``../shared/data/globalopinionqa/dev_groups.jsonl``,
``--questions`` rows per group (questions asked of the most groups first, so
that groups share questions: one model must then tell apart the targets of
one wording, and (c) has questions to compare), built into one dataset by
``_opinions.build_group`` as the GlobalOpinionQA reproduction builds one group
(``framed`` writer with the bundled SmolLM2-135M, 3 framings, split by
question 75% / 25%, one framing of each training question held out), so every
group of a question lies in the same split with the same held-out framing.
The chosen rows are written into the work folder as the builder's source;
nothing is copied into the project.

* (a) One group-conditioned model (SFT, then GDPO from it, both with
  ``group_in_prompt``: a ``Group: NAME`` line before the question; recipe of
  ``pluralign.train.recipe`` with ``--steps`` per stage) trained on all six
  groups, against six single-group models (SFT then GDPO on one group each)
  given the same total steps: 1/6 of each stage's steps each, warm-up and
  validation interval scaled alike, so every model is checked on its
  validation split as often. Per-group JSD on held-out framings and held-out
  questions, its mean over groups, the uniform line, and the adapter storage
  (one SFT + GDPO adapter chain against six).
* (b) Leave two groups out (``--unseen``, fixed before any run; nothing is
  tuned per group): SFT + GDPO on the four others with the group line, and a
  second GDPO from the same SFT model with a group context of ``--context``
  other questions of the group with its distribution (the two differ only by
  the context). Evaluated on the unseen groups' held-out
  questions that a training group answered too; the context of an unseen
  group comes from a file of its answers to *training* questions (``pluralign
  eval --group_context_pool``), never the evaluated ones. Against the uniform
  line and the population baseline: the mean of the four training groups'
  targets on the same question.
* (c) The same prompts asked for two groups: JSD between the one model's
  predictions for the two groups next to the JSD between their targets (and
  between the six single-group models' predictions), per pair of groups, on
  the held-out framings and questions of (a).

Time, sized for 30-40 minutes of 2 CPU cores with the bundled model: the
default (24 rows per group, about 50 questions; 8 pairs per row; 48 SFT + 48
GDPO steps per group-conditioned model; context 3) trains 144 SFT and 192
GDPO steps, 48 of them with the context's prompts (3 to 4 times longer), in
17 training runs, and evaluates 16 times: an estimated 30-35 minutes (SFT
about 2 s, GDPO 4-5 s and GDPO with the context 11-15 s a step at 2 threads,
10-15 s of set-up per run; scaled from the --quick run's steps on one
thread), plus 2-3 minutes writing the responses when the LLM cache is
empty. The context model's training peaks at about 10 GB of memory.
``--quick`` (8 rows per group, 6 steps, 4 pairs) is a smoke test of every
part: 8.5 minutes with ``--threads 1``, mostly the set-up of its 17
training runs and 16 evaluations.

Usage:
    .venv/bin/python benchmarks/multigroup.py [--write] [--seed 0] [--threads 2]
    .venv/bin/python benchmarks/multigroup.py --quick --threads 1   # a smoke run; prints only
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _opinions import SHORT, SOURCE, DataSpec, build_group, evaluate_models, train_methods
from _report import publish, run_stamp

from pluralign.beliefs.distances import jsd_per_prompt
from pluralign.data.records import (
    GroupPreferenceExample,
    question_key,
    read_examples,
    write_examples,
)
from pluralign.eval.reference import reference_lines
from pluralign.train.api import train
from pluralign.train.recipe import RECIPE, Recipe

SECTION = "multigroup"
GROUPS = ("United States", "Germany", "Mexico", "Pakistan", "Japan", "S. Africa")
SHORTS = {**SHORT, "Germany": "DE", "Mexico": "MX", "Japan": "JP"}
#: (b)'s unseen groups: chosen before any run (two groups outside the Western majority of
#: the six, so that the population of the other four is not a near copy of them).
UNSEEN = ("Pakistan", "Japan")
SETTINGS = {"framings": "paraphrase", "questions": "questions"}  # (a)/(c) setting -> split
STAGES = ("sft", "gdpo")
#: The context model's sequences: k examples of ~100 tokens each go before the prompt.
CONTEXT_MAX_LENGTH = 1024
#: --quick: every part still runs (the context at its full size, its sequences the longest),
#: on a few questions, one step per stage for each single-group model.
QUICK = {"questions": 8, "steps": 6, "pairs": 4}

#: A question as the population baseline keys it: question id and belief classes.
Key = tuple[str, tuple[int, ...]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    parser.add_argument("--seed", type=int, default=0,
                        help="Seed of training and evaluation (the data is built with seed 0, "
                             "as opinion_repro.py builds it)")
    parser.add_argument("--steps", type=int, default=48,
                        help="SFT and GDPO steps of each group-conditioned model (six "
                             "single-group models share them: 1/6 each)")
    parser.add_argument("--questions", type=int, default=24, help="GlobalOpinionQA rows per group")
    parser.add_argument("--pairs", type=int, default=8, help="Belief pairs per row")
    parser.add_argument("--context", type=int, default=3,
                        help="(b): the group context's other questions (group_context)")
    parser.add_argument("--unseen", nargs=2, default=list(UNSEEN), choices=GROUPS,
                        help="(b): the two groups left out of training")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/multigroup"))
    parser.add_argument("--cache", type=Path, default=DataSpec.cache_dir,
                        help="LLM answer cache (shared with opinion_repro.py)")
    parser.add_argument("--write", action="store_true", help="Replace the BENCHMARKS.md section.")
    args = parser.parse_args(argv)
    if args.unseen[0] == args.unseen[1]:
        parser.error("--unseen: name two different groups")
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    return args


# ------------------------------------------------------------------ data


def select_rows(rows: Iterable[dict[str, Any]], groups: Collection[str], per_group: int
                ) -> list[dict[str, Any]]:
    """Up to ``per_group`` rows of each group, questions asked of the most groups first (in
    file order among equals), so that the groups share as many questions as they can."""
    by_question: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["group"] in groups:
            by_question.setdefault(row["question"], []).append(row)
    order = sorted(by_question, key=lambda q: -len({r["group"] for r in by_question[q]}))
    taken: Counter[str] = Counter()
    chosen = []
    for question in order:
        for row in by_question[question]:
            if taken[row["group"]] < per_group:
                taken[row["group"]] += 1
                chosen.append(row)
    return chosen


@dataclass
class Data:
    """Every file the three parts train and evaluate on."""

    all: dict[str, Path]  #: six groups, split -> file
    by_group: dict[str, dict[str, Path]]  #: group -> split -> file
    seen_train: Path  #: (b): the four training groups' training split
    unseen_questions: Path  #: (b): unseen groups' held-out questions the population answered
    unseen_pool: Path  #: (b): unseen groups' answers to training questions (group context)
    population: dict[Key, list[float]]  #: (b): mean target of the four training groups
    seconds: float


def prepare_data(args: argparse.Namespace) -> Data:
    """Build the six groups into one dataset (cached), then each part's files from it."""
    started = time.perf_counter()
    out = args.out / f"data-q{args.questions}-p{args.pairs}"
    source = out / "source.jsonl"  # the builder reads its rows from a file
    if not source.is_file():
        rows = [json.loads(line) for line in SOURCE.open(encoding="utf-8")]
        chosen = select_rows(rows, GROUPS, args.questions)
        out.mkdir(parents=True, exist_ok=True)
        source.write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    spec = DataSpec(questions=sum(1 for _ in source.open()), pairs=args.pairs, source=source,
                    cache_dir=args.cache)
    files = build_group(list(GROUPS), spec, out / "all")
    records = {split: read_examples(path) for split, path in files.items()}
    by_group = {g: _write_splits(records, out / SHORTS[g], lambda r, g=g: r.group == g)
                for g in GROUPS}
    seen = [g for g in GROUPS if g not in args.unseen]
    population = population_targets(records["questions"], seen)
    unseen = _write_splits(records, out / "unseen", lambda r: r.group in args.unseen)
    asked = [r for r in read_examples(unseen["questions"]) if belief_key(r) in population]
    write_examples(out / "unseen" / "asked.jsonl", asked)
    for group in args.unseen:
        if not any(r.group == group for r in asked):
            raise SystemExit(f"{group}: no held-out question a training group answered too; "
                             "raise --questions")
    seen_files = _write_splits(records, out / "seen", lambda r: r.group in seen)
    return Data(files, by_group, seen_files["train"], out / "unseen" / "asked.jsonl",
                unseen["train"], population, time.perf_counter() - started)


def _write_splits(records: dict[str, list[GroupPreferenceExample]], out: Path,
                  keep: Any) -> dict[str, Path]:
    """The records ``keep`` accepts, split by split; a split left empty stops the run (a
    model cannot train or be evaluated on nothing)."""
    files = {}
    for split, split_records in records.items():
        kept = [r for r in split_records if keep(r)]
        if not kept:
            raise SystemExit(f"{out.name}: no records in the {split} split; raise --questions")
        files[split] = out / f"{split}.jsonl"
        write_examples(files[split], kept)
    return files


def belief_key(record: Any) -> Key:
    """A record's (or prediction row's) question and belief classes: two groups' targets
    are averaged only where they are distributions over the same classes."""
    if isinstance(record, dict):
        return (record["question_id"] or record["prompt"],
                tuple(b["class_id"] for b in record["beliefs"]))
    return question_key(record), record.class_ids


def population_targets(records: Iterable[GroupPreferenceExample], groups: Collection[str]
                       ) -> dict[Key, list[float]]:
    """The population baseline: per question, the mean of ``groups``' targets, each group
    counted once whatever its number of records."""
    targets: dict[Key, dict[str, Sequence[float]]] = {}
    for record in records:
        if record.group in groups:
            targets.setdefault(belief_key(record), {}).setdefault(
                record.group, record.target_distribution)
    return {key: np.mean(list(by_group.values()), axis=0).tolist()
            for key, by_group in targets.items()}


# ------------------------------------------------------------------ training


def scaled(recipe: Recipe, steps: int, *, parts: int = 1) -> Recipe:
    """The recipe with ``steps`` per stage shared by ``parts`` models: warm-up and validation
    interval scale with the steps, so every model has the recipe's share of warm-up and is
    checked on its validation split as often (the recipe: 3 times per stage)."""
    own = max(1, round(steps / parts))
    ratio = own / RECIPE.preference_steps
    return recipe.replace(sft_steps=own, preference_steps=own,
                          warmup_steps=max(1, round(RECIPE.warmup_steps * ratio)),
                          eval_every=max(1, round(RECIPE.eval_every * ratio)))


def adapter_bytes(final_dirs: Iterable[Path]) -> int:
    """Bytes of the LoRA adapter weights of ``final_dirs`` (a GDPO model is its SFT adapter
    folded into the base plus its own adapter: both are stored)."""
    return sum(f.stat().st_size for d in final_dirs for f in Path(d).glob("adapter_model*"))


def _progress(started: float, text: str) -> None:
    print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {text}", flush=True)


def train_part_a(args: argparse.Namespace, data: Data, started: float) -> dict[str, Any]:
    """The six-group model and the six single-group models (same total steps)."""
    out = args.out / "a"
    recipe = scaled(RECIPE, args.steps)
    _progress(started, f"(a) one model, six groups: SFT + GDPO {recipe.preference_steps} steps")
    one = train_methods(data.all, recipe, args.seed, out / "one", STAGES, group_in_prompt=True)
    single = scaled(RECIPE, args.steps, parts=len(GROUPS))
    six = {}
    for group in GROUPS:
        _progress(started, f"(a) single-group model {group}: SFT + GDPO "
                           f"{single.preference_steps} steps")
        six[group] = train_methods(data.by_group[group], single, args.seed,
                                   out / SHORTS[group], STAGES)
    return {"one": one, "six": six}


def train_part_b(args: argparse.Namespace, data: Data, started: float) -> dict[str, Path]:
    """Four groups: SFT + GDPO with the group line, and a second GDPO from the same SFT model
    with the group context too, so the two models differ only by the context (an SFT on
    the context's long prompts would also cost about three times the plain one)."""
    out = args.out / "b"
    recipe = scaled(RECIPE, args.steps)
    _progress(started, f"(b) four groups: SFT + GDPO {recipe.preference_steps} steps")
    plain = train_methods({"train": data.seen_train}, recipe, args.seed, out / "no-context",
                          STAGES, group_in_prompt=True)
    _progress(started, f"(b) four groups: GDPO {recipe.preference_steps} steps with a group "
                       f"context of {args.context} questions")
    context = train(recipe.train_config(
        "gdpo", start=str(plain.finals["sft"]), train_file=str(data.seen_train),
        output_dir=str(out / "context"), seed=args.seed, overwrite=True, group_in_prompt=True,
        group_context=args.context, max_length=CONTEXT_MAX_LENGTH), console_logs=False)
    return {"no context": plain.finals["gdpo"], "context": context.final_dir}


# ------------------------------------------------------------------ evaluation


def readings(final: Path, data: Path, out: Path, seed: int, **options: Any
             ) -> list[dict[str, Any]]:
    """Per-prompt rows of one model's belief distributions on ``data`` (no generations)."""
    return evaluate_models({"model": final}, data, out, seed, 0, **options)["rows"]


def by_group(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per group: prompts, mean JSD (prompts the model read) and the uniform line's JSD."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["group"], []).append(row)
    summary = {}
    for group, own in grouped.items():
        read = [r["jsd"] for r in own if r["jsd"] is not None]
        uniform = reference_lines([r["target"] for r in own], names=["uniform"])["uniform"]
        summary[group] = {"prompts": len(own), "jsd": float(np.mean(read)) if read else np.nan,
                          "uniform": uniform.value}
    return summary


def evaluate_part_a(args: argparse.Namespace, data: Data, runs: dict[str, Any]
                    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Rows of the one model (all groups' file) and of the six (each its group's file)."""
    out = args.out / "a" / "eval"
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for setting, split in SETTINGS.items():
        print(f"(a) evaluating the seven models on the held-out {setting}", flush=True)
        one = readings(runs["one"].finals["gdpo"], data.all[split], out / f"one-{split}",
                       args.seed)
        six = [row for group in GROUPS for row in readings(
            runs["six"][group].finals["gdpo"], data.by_group[group][split],
            out / f"{SHORTS[group]}-{split}", args.seed)]
        rows[setting] = {"one": one, "six": six}
    return rows


def part_a_result(rows: dict[str, dict[str, list[dict[str, Any]]]], runs: dict[str, Any]
                  ) -> dict[str, Any]:
    """Table (a)'s numbers: per setting and group, both models' JSD and the uniform line."""
    result: dict[str, Any] = {}
    for setting, models in rows.items():
        one, six = by_group(models["one"]), by_group(models["six"])
        result[setting] = {g: {"prompts": one[g]["prompts"], "one": one[g]["jsd"],
                               "six": six[g]["jsd"], "uniform": one[g]["uniform"]}
                           for g in GROUPS if g in one and g in six}
    result["storage"] = {
        "one": adapter_bytes(runs["one"].finals.values()),
        "six": adapter_bytes(d for run in runs["six"].values() for d in run.finals.values())}
    return result


def evaluate_part_b(args: argparse.Namespace, data: Data, finals: dict[str, Path]
                    ) -> dict[str, Any]:
    """Both four-group models on the unseen groups, the context from their training
    questions; the population baseline on the same prompts."""
    out = args.out / "b" / "eval"
    plain = readings(finals["no context"], data.unseen_questions, out / "plain", args.seed)
    context = readings(finals["context"], data.unseen_questions, out / "context", args.seed,
                       group_context_pool=str(data.unseen_pool))
    population = population_jsd(plain, data.population)
    plain_groups, context_groups = by_group(plain), by_group(context)
    return {g: {"prompts": plain_groups[g]["prompts"], "no context": plain_groups[g]["jsd"],
                "context": context_groups[g]["jsd"], "uniform": plain_groups[g]["uniform"],
                "population": population[g]}
            for g in args.unseen}


def population_jsd(rows: Iterable[dict[str, Any]], population: dict[Key, list[float]]
                   ) -> dict[str, float]:
    """Per group, the mean JSD of the population baseline against the group's target over
    the prompts (rows) whose question the population answered."""
    values: dict[str, list[float]] = {}
    for row in rows:
        key = belief_key(row)
        if key in population:
            values.setdefault(row["group"], []).append(
                float(jsd_per_prompt([population[key]], [row["target"]])[0]))
    return {group: float(np.mean(v)) for group, v in values.items()}


def between_groups(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list]]:
    """Per pair of groups asked the same prompt: the JSD between their targets and between
    the predictions for them, one value per shared prompt (rows: one per group and prompt,
    from one model or from one model per group)."""
    asked: dict[tuple[Key, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["predicted"] is not None:
            asked.setdefault((belief_key(row), row["prompt"]), {})[row["group"]] = row
    pairs: dict[tuple[str, str], dict[str, list]] = {}
    for by_name in asked.values():
        for a, b in itertools.combinations(sorted(by_name), 2):
            pair = pairs.setdefault((a, b), {"targets": [], "predictions": []})
            for name, field in (("targets", "target"), ("predictions", "predicted")):
                pair[name].append(float(jsd_per_prompt([by_name[a][field]],
                                                       [by_name[b][field]])[0]))
    return dict(sorted(pairs.items()))


def part_c_result(rows: dict[str, dict[str, list[dict[str, Any]]]]
                  ) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """Table (c)'s numbers per setting and pair: prompts, mean target JSD, mean JSD between
    the one model's and between the six models' predictions, and the one model's values
    per prompt (for the correlation)."""
    result = {}
    for setting, models in rows.items():
        one, six = between_groups(models["one"]), between_groups(models["six"])
        result[setting] = {pair: {"prompts": len(v["targets"]),
                                  "targets": float(np.mean(v["targets"])),
                                  "one": float(np.mean(v["predictions"])),
                                  "six": float(np.mean(six[pair]["predictions"]))
                                  if pair in six else np.nan,
                                  "per_prompt": (v["targets"], v["predictions"])}
                           for pair, v in one.items()}
    return result


# ------------------------------------------------------------------ tables


def _f(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"  # NaN: nothing read


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def table_a(result: dict[str, Any]) -> list[str]:
    """Per group and the mean over groups: JSD of the one model, of the six, uniform line."""
    lines = ["| group | framings: prompts | one model | six models | uniform "
             "| questions: prompts | one model | six models | uniform |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups = list(dict.fromkeys(g for s in SETTINGS for g in result[s]))
    for group in [*groups, "mean"]:
        cells = []
        for setting in SETTINGS:
            values = result[setting]
            own = (values[group] if group != "mean" else
                   {k: _mean(v[k] for v in values.values()) for k in ("one", "six", "uniform")}
                   | {"prompts": sum(v["prompts"] for v in values.values())})
            cells += [str(own["prompts"]), *(_f(own[k]) for k in ("one", "six", "uniform"))]
        lines.append(f"| {SHORTS.get(group, group)} | " + " | ".join(cells) + " |")
    return lines


def table_b(result: dict[str, dict[str, float]], context: int) -> list[str]:
    """Per unseen group and their mean: both models, the uniform and population lines."""
    columns = ("no context", "context", "uniform", "population")
    lines = [f"| unseen group | prompts | no context | group context (k={context}) | uniform "
             "| population (mean of the 4 training groups) |", "|---|---|---|---|---|---|"]
    mean = {k: _mean(v[k] for v in result.values()) for k in columns}
    mean["prompts"] = sum(v["prompts"] for v in result.values())
    for group, values in [*result.items(), ("mean", mean)]:
        lines.append(f"| {SHORTS.get(group, group)} | {values['prompts']} | "
                     + " | ".join(_f(values[k]) for k in columns) + " |")
    return lines


def table_c(result: dict[str, dict[tuple[str, str], dict[str, Any]]]) -> list[str]:
    """Per pair of groups and the mean over pairs, per setting: the JSD between the targets
    and between the predictions of the one model and of the six."""
    lines = ["| groups | framings: prompts | targets | one model | six models "
             "| questions: prompts | targets | one model | six models |",
             "|---|---|---|---|---|---|---|---|---|"]
    pairs = sorted({p for s in SETTINGS for p in result[s]})
    empty = {"prompts": 0, "targets": np.nan, "one": np.nan, "six": np.nan}
    for pair in [*pairs, "mean"]:
        cells = []
        for setting in SETTINGS:
            values = result[setting]
            own = (values.get(pair, empty) if pair != "mean" else
                   {k: _mean(v[k] for v in values.values()) for k in ("targets", "one", "six")}
                   | {"prompts": sum(v["prompts"] for v in values.values())})
            cells += [str(own["prompts"]), *(_f(own[k]) for k in ("targets", "one", "six"))]
        name = pair if pair == "mean" else " / ".join(SHORTS.get(g, g) for g in pair)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def correlation(result: dict[tuple[str, str], dict[str, Any]]) -> float:
    """Pearson r over every shared prompt of every pair: target JSD against the one model's
    prediction JSD (NaN with fewer than 3 prompts or no spread)."""
    targets = [t for v in result.values() for t in v["per_prompt"][0]]
    predicted = [p for v in result.values() for p in v["per_prompt"][1]]
    if len(targets) < 3 or np.std(targets) == 0 or np.std(predicted) == 0:
        return float("nan")
    return float(np.corrcoef(targets, predicted)[0, 1])


def section(results: dict[str, Any], args: argparse.Namespace, minutes: dict[str, float]
            ) -> str:
    """The BENCHMARKS.md section: the setup, tables (a), (b), (c) and the run time."""
    a, b, c = results["a"], results["b"], results["c"]
    one_mb, six_mb = a["storage"]["one"] / 2**20, a["storage"]["six"] / 2**20
    recipe, single = scaled(RECIPE, args.steps), scaled(RECIPE, args.steps, parts=len(GROUPS))
    unseen = ", ".join(SHORTS[g] for g in args.unseen)
    rs = ", ".join(f"{s} {_f(correlation(c[s]))}" for s in SETTINGS)
    timing = ", ".join(f"{name} {value:.1f}" for name, value in minutes.items())
    return "\n".join([
        "## One model for many groups (`benchmarks/multigroup.py`)", "",
        f"`../shared/data/globalopinionqa/dev_groups.jsonl`, six groups, {args.questions} rows "
        f"per group (questions asked of the most groups first), {args.pairs} pairs per row; "
        "built into one dataset as `opinion_repro.py` builds one group (framed writer, "
        "split by question 75/25, one framing of each training question held out). JSD: "
        "belief distribution read from the model against the group's target, mean over "
        f"prompts, then over groups. Recipe `pluralign.train.recipe`, SFT then GDPO: "
        f"{recipe.sft_steps} + {recipe.preference_steps} steps per group-conditioned model "
        f"(`group_in_prompt`), {single.sft_steps} + {single.preference_steps} per "
        f"single-group model. Seed {args.seed}. Run time in minutes (`--threads "
        f"{args.threads}`): {timing}. {run_stamp(args.quick)}", "",
        "### (a) One group-conditioned model against six single-group models", "",
        *table_a(a), "",
        f"Adapters stored: one model {one_mb:.1f} MB (SFT + GDPO adapter), six models "
        f"{six_mb:.1f} MB.", "",
        f"### (b) Groups never trained on ({unseen}): four groups trained", "",
        "SFT + GDPO on the other four groups, and a second GDPO from the same SFT model "
        f"with {args.context} other questions of the group and its answer shares before "
        "each prompt. Evaluated on the unseen groups' held-out questions that a training "
        "group answered too; their group context comes from their answers to training "
        "questions, never the evaluated ones. Population: the four training groups' mean "
        "target on the same question.", "",
        *table_b(b, args.context), "",
        "### (c) The same prompts for two groups: JSD between the groups", "",
        "Mean over the prompts both groups were asked: between their targets, between the "
        "one model's predictions for each, and between the six single-group models' "
        "predictions.", "",
        *table_c(c), "",
        f"Pearson r of target JSD and the one model's prediction JSD over prompt pairs: {rs}.",
    ])


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    minutes: dict[str, float] = {}
    data = prepare_data(args)
    minutes["data"] = data.seconds / 60
    _progress(started, f"data ready in {args.out}")
    mark = time.perf_counter()
    runs_a = train_part_a(args, data, started)
    rows_a = evaluate_part_a(args, data, runs_a)
    minutes["(a)"] = (time.perf_counter() - mark) / 60
    mark = time.perf_counter()
    runs_b = train_part_b(args, data, started)
    _progress(started, "(b) evaluating on the unseen groups")
    result_b = evaluate_part_b(args, data, runs_b)
    minutes["(b)"] = (time.perf_counter() - mark) / 60
    minutes["total"] = (time.perf_counter() - started) / 60
    results = {"a": part_a_result(rows_a, runs_a), "b": result_b, "c": part_c_result(rows_a)}
    publish(SECTION, section(results, args, minutes), write=args.write)


if __name__ == "__main__":
    main()
