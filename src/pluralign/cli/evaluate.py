"""``pluralign eval`` and ``pluralign generate``: command callbacks registered in ``cli.main``.

Heavy imports (torch, transformers, matplotlib) happen inside the commands so
that ``pluralign --help`` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


# --------------------------------------------------------------------------- eval


def eval_command(
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Model to evaluate; repeat to compare several side by side.")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", "-d", help="JSONL record file to evaluate on.")] = None,
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help="Output folder (default: eval).")] = None,
    judge: Annotated[str | None, typer.Option(
        help="BPC judge: embedding (offline, default), llm, rating (reviews, offline) or "
        "rating-llm (reviews: the paper's appendix-H three-class rating prompt through "
        "--judge-model / --judge-base-url).")] = None,
    n: Annotated[int | None, typer.Option(
        "--n", min=0, help="Belief-first generations per prompt (default 4; 0 reads the belief "
        "distributions only).")] = None,
    belief_samples: Annotated[int | None, typer.Option(
        min=0, help="First-token samples per prompt for the sampled estimate (default 64).")
    ] = None,
    temperature: Annotated[float | None, typer.Option(
        min=0.0, help="Sampling temperature (default 1.0; 0 is greedy).")] = None,
    response_temperature: Annotated[float | None, typer.Option(
        min=0.0, help="Temperature of the text written after the drawn belief (default: "
        "--temperature; 0 is greedy). Beliefs are still drawn at --temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass (default 1.0).")
                     ] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        min=1, help="Tokens generated after the belief marker (default 64).")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling and bootstrap seed (default 0).")
                    ] = None,
    max_prompts: Annotated[int | None, typer.Option(
        min=1, help="Evaluate only the first N distinct prompts.")] = None,
    ref_model: Annotated[str | None, typer.Option(
        help="Reference model (e.g. runs/sft/final) for majority/minority reward margins.")
    ] = None,
    beta: Annotated[float | None, typer.Option(help="beta of the reward margins (0.1).")] = None,
    kshot: Annotated[int | None, typer.Option(
        min=0, help="Add a k-shot prompting baseline with this many shots.")] = None,
    kshot_model: Annotated[str | None, typer.Option(
        help="k-shot baseline model (local reference, or server model with --kshot-base-url).")
    ] = None,
    kshot_base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible server for the k-shot baseline.")] = None,
    kshot_pool: Annotated[str | None, typer.Option(
        help="Training split (JSONL) the shots come from: required with --kshot; for icf "
        "models it replaces the training file their run recorded.")] = None,
    judge_model: Annotated[str | None, typer.Option(
        help="llm / rating-llm judge model name (gpt-4o).")] = None,
    judge_base_url: Annotated[str | None, typer.Option(
        help="llm / rating-llm judge: OpenAI-compatible server URL.")] = None,
    device: Annotated[str | None, typer.Option(help="Device (auto, cpu, cuda:0).")] = None,
    bf16: Annotated[bool | None, typer.Option(
        "--bf16", help="bfloat16 autocast: faster on GPUs and CPUs with native bf16.")] = None,
    trust_remote_code: Annotated[bool | None, typer.Option(
        "--trust-remote-code", help="Allow a model folder's own modelling code (auto_map) to "
        "run; off by default, and such a model then fails to load.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="EvalConfig YAML file; options given here override it.")] = None,
) -> None:
    """Evaluate models: JSD (one forward pass and sampled), CBC, BPC, RS, margins, report.

    Writes eval.json, predictions.jsonl, report.md and report.html (with plots)
    into --out. Several --model options are compared in one report; a model
    folder of a run (runs/NAME/final) also gets its training curves.

    Examples:

        pluralign eval --model runs/gdpo/final --data data/us/test.jsonl

        pluralign eval -m runs/sft/final -m runs/dpo/final -m runs/gdpo/final -d data/test.jsonl

        pluralign eval --config configs/eval.yaml --out eval/us

        pluralign eval -m runs/gdpo/final -d data/test.jsonl --ref-model runs/sft/final

        pluralign eval -m runs/gdpo/final -d data/test.jsonl --judge llm --judge-model gpt-4o

        pluralign eval -m runs/movies-gdpo/final -d data/movies/test.jsonl --judge rating-llm

        pluralign eval --kshot 3 --kshot-pool data/us/train.jsonl --data data/us/test.jsonl

        pluralign eval -m runs/icf/final -d data/us/test.jsonl
    """
    from pluralign.config.core import ConfigError
    from pluralign.eval.evaluate import EvalConfig, evaluate

    given = {
        "models": model, "data": data, "out": out, "judge": judge, "n_samples": n,
        "belief_samples": belief_samples, "temperature": temperature, "top_p": top_p,
        "response_temperature": response_temperature,
        "max_new_tokens": max_new_tokens, "seed": seed, "max_prompts": max_prompts,
        "ref_model": ref_model, "beta": beta, "kshot": kshot, "kshot_model": kshot_model,
        "kshot_base_url": kshot_base_url, "kshot_pool": kshot_pool, "judge_model": judge_model,
        "judge_base_url": judge_base_url, "device": device, "bf16": bf16,
        "trust_remote_code": trust_remote_code,
    }
    try:
        cfg = EvalConfig.load(config, {k: v for k, v in given.items() if v is not None})
        result = evaluate(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    for evaluation in result.evaluations:
        shown = ", ".join(f"{k} {v.value:.3f}" for k, v in evaluation.metrics.items()
                          if v.n and math.isfinite(v.value))
        typer.echo(f"{evaluation.label}: {shown}")
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


def _with_training_shots(question: Any, model: str, marker: Any, pool: Path | None,
                         seed: int) -> Any:
    """An in-context fine-tuned model's question with shots before it, drawn as evaluation
    draws them (from ``pool``, else the training file the run recorded); others unchanged."""
    from pluralign.eval.prompting import in_context_prompts
    from pluralign.runs import read_format_info

    groups, _ = in_context_prompts([question], [], read_format_info(model), marker,
                                   pool_file=str(pool) if pool else None, seed=seed)
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


#: What ``pluralign generate`` prints for a model pluralign did not train (no format file).
UNTRAINED_WARNING = (
    "warning: {model} was not trained by pluralign with belief markers (no "
    "pluralign_format.json), so the belief and response above are not meaningful; train it "
    "with `pluralign train`, or evaluate it as a baseline with `pluralign eval`.")


def generate_command(
    prompt: Annotated[str | None, typer.Argument(help="The question to answer.")] = None,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Model reference (run folder, keyword, local folder).")
    ] = "smollm2-135m",
    n: Annotated[int, typer.Option("--n", min=1, help="Number of belief-first generations.")] = 1,
    beliefs: Annotated[str | None, typer.Option(
        help='Belief set "1:Strongly oppose,2:Somewhat oppose,..." (default: classes 0-5).')
    ] = None,
    target: Annotated[str | None, typer.Option(
        help="Target distribution over the beliefs, e.g. 0.1,0.2,0.3,0.4.")] = None,
    data: Annotated[Path | None, typer.Option(
        help="Take prompt, beliefs and target from a record of this JSONL file.")] = None,
    index: Annotated[int, typer.Option(help="Record index in --data.")] = 0,
    temperature: Annotated[float | None, typer.Option(
        min=0.0, help="Sampling temperature (default: 0 for --n 1, else 1.0).")] = None,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass.")
                     ] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens after the marker.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed for sampling.")] = 0,
    device: Annotated[str, typer.Option(help="Device (auto, cpu, cuda:0).")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="Allow a model folder's own modelling code (auto_map) to "
        "run; off by default, and such a model then fails to load.")] = False,
    kshot_pool: Annotated[Path | None, typer.Option(
        "--kshot-pool", help="In-context fine-tuned (icf) models: draw the shots from this "
        "file instead of the training file the run recorded.")] = None,
) -> None:
    """Answer a question belief first: print the belief and the response.

    An in-context fine-tuned model (method icf) gets shots of other questions
    before the question, as it trained and as `pluralign eval` prompts it.

    With --n > 1, prints the histogram of sampled beliefs beside the model's
    one-forward-pass distribution and the target (--target, or a record via
    --data/--index).

    Examples:

        pluralign generate --model runs/gdpo/final "What do you think about nuclear power?"

        pluralign generate --n 20 --beliefs "1:Oppose,2:Support" --target 0.3,0.7 "Nuclear power?"

        pluralign generate --model runs/gdpo/final --n 20 --data data/us/test.jsonl --index 3
    """
    from pluralign.beliefs.readout import belief_distributions
    from pluralign.beliefs.tokenize import belief_marker_ids, encode_prompt
    from pluralign.eval.generate import (
        SamplingOptions,
        generate_beliefs_first,
        load_sequence_format,
    )
    from pluralign.models import ModelLoadError, load_model
    from pluralign.runs import read_format_info

    try:
        asked, belief_list, target_p = _question(prompt, beliefs, target, data, index)
        lm, tokenizer = load_model(model, device=device, trust_remote_code=trust_remote_code)
        fmt = load_sequence_format(model)
        asked = _with_training_shots(asked, model, fmt.marker, kshot_pool, seed)
        markers = belief_marker_ids(tokenizer, [b.class_id for b in belief_list], fmt.marker)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    temp = temperature if temperature is not None else (0.0 if n == 1 else 1.0)
    options = SamplingOptions(temperature=temp, top_p=top_p, max_new_tokens=max_new_tokens,
                              seed=seed)
    question, context = asked.prompt, asked.context
    if context is not None:
        typer.echo("in-context shots go before the question, as the model trained with them")
    gens = generate_beliefs_first(lm, tokenizer, [question], [belief_list], fmt=fmt, n=n,
                                  options=options, contexts=[context])[0]
    if n == 1:
        g = gens[0]
        typer.echo(f"belief: {g.class_id} <{g.description or ''}>")
        typer.echo(f"response: {g.response}")
    else:
        prompt_ids = encode_prompt(tokenizer, question, fmt, context=context,
                                   beliefs=belief_list)
        reading = belief_distributions(lm, [prompt_ids], [markers],
                                       pad_token_id=tokenizer.pad_token_id).probs[0]
        typer.echo(f"question: {question}")
        for line in _histogram(belief_list, [g.class_id for g in gens], reading, target_p):
            typer.echo(line)
        for g in gens[:5]:
            typer.echo(f"[{g.class_id}] <{g.description or ''}> {g.response}")
    if not read_format_info(model):
        # A model without pluralign's format file never learnt the belief slot: its
        # "belief" is the marker it happens to rank first and its text is free-running, so
        # say so. After the output, on stderr: stdout's first lines stay belief/response.
        typer.secho(UNTRAINED_WARNING.format(model=model), fg=typer.colors.YELLOW, err=True)
