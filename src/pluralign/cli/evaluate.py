"""``pluralign eval`` and ``pluralign generate``: command callbacks registered in ``cli.main``.

Heavy imports (torch, transformers, matplotlib) happen inside the commands so
that ``pluralign --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import typer

from pluralign.cli.options import Fields, fail

# --------------------------------------------------------------------------- eval


#: Short letters of ``pluralign eval``.
EVAL_SHORT = {"-m": "models", "-d": "data", "-o": "output_dir"}


def eval_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Evaluate models: JSD (one forward pass and sampled), CBC, BPC, RS, margins, report.

    `pluralign eval [CONFIG.yaml] --field value ...` with the fields of EvalConfig
    (`--fields` lists them). Writes eval.json, predictions.jsonl, report.md and
    report.html (with plots) into --output_dir (-o). Several models (--models,
    -m, repeated) are compared in one report; a model folder of a run
    (runs/NAME/final) also gets its training curves.

    Examples:

        pluralign eval -m runs/gdpo/final --data data/us/test.jsonl

        pluralign eval -m runs/sft/final -m runs/dpo/final -m runs/gdpo/final -d data/test.jsonl

        pluralign eval configs/eval.yaml --output_dir eval/us

        pluralign eval -m runs/gdpo/final -d data/test.jsonl --ref_model runs/sft/final

        pluralign eval -m runs/gdpo/final -d data/test.jsonl --judge llm --judge_model gpt-4o

        pluralign eval -m runs/movies-gdpo/final -d data/movies/test.jsonl --judge rating-llm

        pluralign eval --kshot 3 --kshot_pool data/us/train.jsonl --data data/us/test.jsonl

        pluralign eval -m runs/icf/final -d data/us/test.jsonl
    """
    from pluralign.cli.options import load_from_command_line, print_fields
    from pluralign.eval.config import EvalConfig

    if fields:
        print_fields(EvalConfig)
        return
    from pluralign.eval.evaluate import evaluate

    try:
        cfg = load_from_command_line(EvalConfig, ctx.args, short=EVAL_SHORT)
        result = evaluate(cfg)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    for evaluation in result.evaluations:
        shown = ", ".join(f"{k} {v.value:.3f}" for k, v in evaluation.metrics.items()
                          if v.n and math.isfinite(v.value))
        typer.echo(f"{evaluation.label}: {shown}")
    by_group = result.by_group  # None for a file of one group: nothing more is printed
    for label, per_group in (by_group.jsd.items() if by_group is not None else ()):
        shown = ", ".join(f"{group} {r.value:.3f}" for group, r in per_group.items())
        typer.echo(f"{label} JSD per group: {shown}; mean over groups "
                   f"{by_group.mean_jsd(label):.3f}")
    for name, path in result.files.items():
        typer.echo(f"{name}: {path}")


# ----------------------------------------------------------------------- generate


def parse_beliefs(text: str) -> list[Any]:
    """``"1:Strongly oppose,2:Somewhat oppose"`` -> Beliefs (class id, description)."""
    from pluralign.data.records import Belief

    beliefs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        class_id, sep, description = part.partition(":")
        if not class_id.strip().isdigit():
            raise ValueError(f"belief {part!r}: expected CLASS:DESCRIPTION, e.g. 1:Strongly oppose")
        beliefs.append(Belief(int(class_id), description.strip() if sep else ""))
    if len(beliefs) < 2:
        raise ValueError("--beliefs needs at least two beliefs")
    return beliefs


def parse_target(text: str, k: int) -> list[float]:
    """``"0.1,0.2,0.7"`` -> a distribution over the ``k`` beliefs."""
    values = [float(v) for v in text.split(",") if v.strip()]
    if len(values) != k:
        raise ValueError(f"--target has {len(values)} values but there are {k} beliefs")
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError("--target values must be >= 0 and not all 0")
    return [v / sum(values) for v in values]


def _question(prompt: str | None, beliefs: str | None, target: str | None,
              data: Path | None, index: int) -> tuple[Any, list[Any], list[float] | None]:
    """(the question as a shot target: prompt, question_id, context; its beliefs; p*)."""
    from pluralign.beliefs.formats import DEFAULT_CLASS_IDS
    from pluralign.data.records import Belief, read_examples
    from pluralign.eval.evaluate import PromptGroup

    if data is not None:
        records = read_examples(data)
        if not 0 <= index < len(records):
            raise ValueError(f"--index {index} is outside {data} ({len(records)} records)")
        record = records[index]
        target_p = list(record.target_distribution)
        # A prompt typed beside --data is another wording: the record's context is not its own.
        question = PromptGroup(prompt or record.prompt, record.group, record.question_id,
                               record.beliefs, target_p,
                               context=None if prompt else record.context)
        return question, list(record.beliefs), target_p
    if not prompt:
        raise ValueError("give a question (or --data FILE --index I)")
    belief_list = (parse_beliefs(beliefs) if beliefs
                   else [Belief(c, "") for c in DEFAULT_CLASS_IDS])
    target_p = parse_target(target, len(belief_list)) if target else None
    return (PromptGroup(prompt, "", None, tuple(belief_list), target_p or []), belief_list,
            target_p)


def _with_training_contexts(question: Any, model: str, fmt: Any, config: Any) -> Any:
    """The question as the model trained: the group its format's group line names checked,
    and in-context shots (icf) or the group's example answers (group_context) before it,
    drawn as evaluation draws them (from the config's pool, else the training file the run
    recorded); unchanged for other models."""
    from pluralign.eval.prompting import group_context_prompts, in_context_prompts
    from pluralign.runs import read_format_info

    fmt.question_text(question.prompt, question.group)  # a group-line model needs --group
    info = read_format_info(model)
    groups, _ = in_context_prompts([question], [], info, fmt.marker,
                                   pool_file=config.kshot_pool, seed=config.seed)
    groups, _ = group_context_prompts(groups, [], info, pool_file=config.group_context_pool,
                                      seed=config.seed)
    return groups[0]


def _histogram(beliefs: list[Any], classes: list[int | None], reading: list[float],
               target: list[float] | None) -> list[str]:
    from pluralign.eval.metrics import jsd

    n = len(classes)
    counts = [classes.count(b.class_id) for b in beliefs]
    lines = [f"{'class':>5}  {'description':<24} {'count':>5} {'sampled':>8} {'model p':>8}"
             + (f" {'target':>7}" if target else "")]
    for b, c, p, t in zip(beliefs, counts, reading, target or [None] * len(beliefs),
                          strict=True):
        bar = "#" * round(20 * c / n)
        row = f"{b.class_id:>5}  {b.description[:24]:<24} {c:>5} {c / n:>8.2f} {p:>8.3f}"
        lines.append(row + (f" {t:>7.3f}" if t is not None else "") + f"  {bar}")
    if target:
        sampled = jsd([c / n for c in counts], target).value if sum(counts) else float("nan")
        model_p = jsd(reading, target).value
        lines.append(f"JSD to target: sampled {sampled:.3f}, model p {model_p:.3f}")
    return lines


def _print_histogram(lm: Any, tokenizer: Any, fmt: Any, asked: Any, markers: list[int],
                     gens: list[Any], target: list[float] | None) -> None:
    """The drawn beliefs' histogram beside the model's reading and the target, then a few
    of the answers."""
    from pluralign.beliefs.readout import belief_distributions
    from pluralign.beliefs.tokenize import encode_prompt

    beliefs = list(asked.beliefs)
    prompt_ids = encode_prompt(tokenizer, asked.prompt, fmt, context=asked.context,
                               beliefs=beliefs, group=asked.group)
    reading = belief_distributions(lm, [prompt_ids], [markers],
                                   pad_token_id=tokenizer.pad_token_id).probs[0]
    typer.echo(f"question: {asked.prompt}")
    for line in _histogram(beliefs, [g.class_id for g in gens], reading, target):
        typer.echo(line)
    for g in gens[:5]:
        typer.echo(f"[{g.class_id}] <{g.description or ''}> {g.response}")


#: What ``pluralign generate`` prints for a model pluralign did not train (no format file).
UNTRAINED_WARNING = (
    "warning: {model} was not trained by pluralign with belief markers (no "
    "pluralign_format.json), so the belief and response above are not meaningful; train it "
    "with `pluralign train`, or evaluate it as a baseline with `pluralign eval`.")


def generate_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Answer a question belief first: print the belief and the response.

    An in-context fine-tuned model (method icf) gets shots of other questions
    before the question, as it trained and as `pluralign eval` prompts it. A
    group-conditioned model (trained with --group_in_prompt) answers for
    --group (default with --data: the record's group), after a few of that
    group's answers where it trained with --group_context.

    With --n > 1, prints the histogram of sampled beliefs beside the model's
    one-forward-pass distribution and the target (--target, or a record via
    --data/--index).

    Examples:

        pluralign generate "What do you think about nuclear power?" --model runs/gdpo/final

        pluralign generate "Nuclear power?" --n 20 --beliefs "1:Oppose,2:Support" --target 0.3,0.7

        pluralign generate --model runs/gdpo/final --n 20 --data data/us/test.jsonl --index 3

        pluralign generate "Is the EU good?" --model runs/groups/final --group Japan --n 20

    The fields of GenerateConfig are the options (`--fields`); the question may
    come first as a plain word, or as `--prompt`.
    """
    from pluralign.beliefs.tokenize import belief_marker_ids
    from pluralign.cli.options import load_from_command_line, print_fields
    from pluralign.eval.config import GenerateConfig
    from pluralign.eval.generate import (
        SamplingOptions,
        generate_beliefs_first,
        load_sequence_format,
    )
    from pluralign.models import ModelLoadError, load_model
    from pluralign.runs import read_format_info

    if fields:
        print_fields(GenerateConfig)
        return
    try:
        config = load_from_command_line(GenerateConfig, ctx.args, short={"-m": "model"},
                                        operand="prompt")
        model, n = config.model, config.n
        asked, belief_list, target_p = _question(
            config.prompt, config.beliefs, config.target,
            Path(config.data) if config.data else None, config.index)
        lm, tokenizer = load_model(model, device=config.device,
                                   trust_remote_code=config.trust_remote_code)
        fmt = load_sequence_format(model)
        asked = _with_training_contexts(
            dataclasses.replace(asked, group=config.group or asked.group), model, fmt,
            config)
        markers = belief_marker_ids(tokenizer, [b.class_id for b in belief_list], fmt.marker)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    options = SamplingOptions(temperature=config.effective_temperature(), top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, seed=config.seed)
    if asked.context is not None:
        typer.echo("in-context shots go before the question, as the model trained with them")
    gens = generate_beliefs_first(lm, tokenizer, [asked.prompt], [belief_list], fmt=fmt, n=n,
                                  options=options, contexts=[asked.context],
                                  groups=[asked.group])[0]
    if n == 1:
        g = gens[0]
        typer.echo(f"belief: {g.class_id} <{g.description or ''}>")
        typer.echo(f"response: {g.response}")
    else:
        _print_histogram(lm, tokenizer, fmt, asked, markers, gens, target_p)
    if not read_format_info(model):
        # A model without pluralign's format file never learnt the belief slot: its
        # "belief" is the marker it happens to rank first and its text is free-running, so
        # say so. After the output, on stderr: stdout's first lines stay belief/response.
        typer.secho(UNTRAINED_WARNING.format(model=model), fg=typer.colors.YELLOW, err=True)
