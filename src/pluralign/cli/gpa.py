"""``pluralign gpa ...``: Group Preference Alignment from conversation logs.

The lead app mounts this with ``app.add_typer(gpa_app, name="gpa")``. Every stage
command speaks the one dialect (:mod:`pluralign.cli.options`):
``pluralign gpa STAGE [CONFIG.yaml] --field value ...`` with the fields of
:class:`~pluralign.gpa.GPAConfig` (``--fields`` lists them). The work folder every
stage reads and writes is ``--output_dir`` (``-o``; the older ``--work``, ``-w``):
the field ``work_dir``. Without a YAML file, the ``gpa_config.yaml`` a previous stage
saved in the work folder is read first; ``--set key=value`` (``-s``) is the older
spelling of ``--key value`` (dotted keys, e.g. ``--llm.max_tokens 64``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from pluralign.cli.options import CONFIG_COMMAND, DIALECT_HELP, Fields, fail

gpa_app = typer.Typer(
    name="gpa",
    help="Group Preference Alignment: mine group rubrics from conversation logs, answer with "
         "them in context (GPA-CT), fine-tune on rubric pairs (GPA-FT) and evaluate.\n\n"
         "Every stage writes its own file into the work folder (--output_dir, -o; or the "
         "older --work, -w), so a stage can be re-run or inspected alone; `run` does them "
         "all. Every GPAConfig field is an option (`pluralign gpa fields`).\n\n"
         "Examples:\n\n"
         "    pluralign gpa run ../shared/data/conversations/wildchat_50_sample.json "
         "-o gpa/wc --quick\n\n"
         "    pluralign gpa rubrics -o gpa/wc --rubric_phrasing template\n\n"
         "    pluralign gpa answer -o gpa/wc -g \"United States\" -p \"Plan a trip to Rome\"\n\n"
         "    pluralign gpa fields",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

#: The help epilog of every stage command.
GPA_HELP = (DIALECT_HELP + " The work folder is `--output_dir DIR` (`-o`; older: `--work`, "
            "`-w`); without a YAML file, its saved gpa_config.yaml is read first.")
#: Short letters of every stage: the work folder.
GPA_SHORT = {"-o": "work_dir", "-w": "work_dir"}
#: The settings file every stage saves into (and, without a YAML file, reads from) WORK.
CONFIG_NAME = "gpa_config.yaml"

_STAGE = {**CONFIG_COMMAND, "epilog": GPA_HELP}


def _work_dir(words: Sequence[str]) -> Path:
    """The work folder ``words`` name (any spelling), else GPAConfig's default."""
    from pluralign.config import ConfigError
    from pluralign.config.core import parse_overrides
    from pluralign.gpa import GPAConfig

    try:
        given = parse_overrides(list(words))
    except ConfigError:
        given = {}  # the real load names the bad word
    for key, value in given.items():
        if GPAConfig.config_aliases.get(key, key) == "work_dir" and isinstance(value.value, str):
            return Path(value.value)
    return Path(GPAConfig.work_dir)


def _load(args: Sequence[str], operand: str | None, quick: bool) -> Any:
    """Defaults < the YAML file (else WORK/gpa_config.yaml) < the quick preset < the words."""
    from pluralign.cli.options import boolean_fields, load_from_command_line, split_command_line
    from pluralign.config import load_config
    from pluralign.gpa import GPAConfig
    from pluralign.gpa.config import quick_overrides

    yaml_file, words = split_command_line(args, short=GPA_SHORT, operand=operand,
                                          flags=boolean_fields(GPAConfig))
    saved = _work_dir(words) / CONFIG_NAME
    if not quick:
        return load_from_command_line(GPAConfig, args, short=GPA_SHORT, operand=operand,
                                      default_file=str(saved))
    # --quick caps what the YAML file says; the words still win over both.
    path = yaml_file if yaml_file is not None else (saved if saved.is_file() else None)
    under = load_config(GPAConfig, path, quick_overrides())
    return load_config(GPAConfig, None, words, preset=under.to_dict())


def _config(args: Sequence[str], *, operand: str | None = None, quick: bool = False) -> Any:
    """The stage's GPAConfig, saved to WORK/gpa_config.yaml for the later stages."""
    from pluralign.config import save_config

    try:
        config = _load(args, operand, quick)
    except ValueError as error:
        raise fail(str(error)) from error
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    save_config(config, work / CONFIG_NAME)
    return config


def _call(step: Callable[[], dict[str, Any]], echo: bool = True) -> dict[str, Any]:
    """``step()``, its expected failures as one error line; its summary printed."""
    from pluralign.gpa import StageInputError
    from pluralign.llm import LLMError

    try:
        summary = step()
    except (StageInputError, LLMError, ValueError, FileNotFoundError) as error:
        raise fail(str(error)) from error
    if echo:
        typer.echo(json.dumps(summary, indent=2, default=str))
    return summary


def _stage(name: str, config: Any, needs_llm: bool = True) -> dict[str, Any]:
    from pluralign.gpa import STAGES
    from pluralign.llm import make_backend

    return _call(lambda: STAGES[name](config, make_backend(config.llm) if needs_llm else None,
                                      None))


def _print_fields() -> None:
    """Every GPAConfig field with its default and help, then the --quick caps."""
    from rich.console import Console
    from rich.table import Table

    from pluralign.cli.options import print_fields
    from pluralign.gpa import GPAConfig
    from pluralign.gpa.config import QUICK_PRESET

    print_fields(GPAConfig)
    quick = Table("field", "--quick value", "what it trades away", title="--quick caps")
    for name, cap in QUICK_PRESET.items():
        quick.add_row(name, str(cap.value), cap.trade_off)
    Console().print(quick)


def _run_stage(name: str, ctx: typer.Context, fields: bool, needs_llm: bool = True,
               operand: str | None = None) -> None:
    if fields:
        _print_fields()
        return
    _stage(name, _config(ctx.args, operand=operand), needs_llm=needs_llm)


@gpa_app.command("ingest", **_STAGE)
def ingest_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Stage 1: read logs, report malformed conversations, assign groups.

    `pluralign gpa ingest LOG.json ... -o WORK [--field value ...]`: the conversation logs
    (JSON or JSONL) are plain words (the field `inputs`). Writes WORK/conversations.jsonl
    and WORK/ingest_report.json (groups, problems).

    Examples:

        pluralign gpa ingest ../shared/data/conversations/wildchat_50_sample.json -o gpa/wc

        pluralign gpa ingest export.json -o gpa/teams --group_map teams.csv --min_conversations 5
    """
    _run_stage("ingest", ctx, fields, needs_llm=False, operand="inputs")


@gpa_app.command("classify", **_STAGE)
def classify_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Stage 2: label the user turns that carry a preference signal (WORK/signals.jsonl).

    Examples:

        pluralign gpa classify -o gpa/wc

        pluralign gpa classify -o gpa/wc --llm.backend openai --llm.model gpt-4o-mini

        pluralign gpa classify -o gpa/wc --use_llm_labels false
    """
    _run_stage("classify", ctx, fields)


@gpa_app.command("attributes", **_STAGE)
def attributes_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Stage 3: attributes and directions of the answers that drew a signal.

    Writes WORK/attributes.jsonl.

    Examples:

        pluralign gpa attributes -o gpa/wc

        pluralign gpa attributes -o gpa/wc --llm.backend openai --llm.base_url http://127.0.0.1:8000/v1
    """
    _run_stage("attributes", ctx, fields)


@gpa_app.command("rules", **_STAGE)
def rules_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Stage 4: contrast groups into rules with support and evidence (WORK/rules.jsonl).

    Examples:

        pluralign gpa rules -o gpa/wc

        pluralign gpa rules -o gpa/wc --min_support 2 --min_lift 1.5
    """
    _run_stage("rules", ctx, fields, needs_llm=False)


@gpa_app.command("rubrics", **_STAGE)
def rubrics_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Stage 5: a rubric per group, each item citing its rules (WORK/rubrics.json, .md).

    Examples:

        pluralign gpa rubrics -o gpa/wc

        pluralign gpa rubrics -o gpa/wc --rubric_phrasing template
    """
    _run_stage("rubrics", ctx, fields)


@gpa_app.command("answer", **_STAGE)
def answer_command(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Answer this one prompt "
                                               "(with --group) instead of the held-out ones.")
                      ] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Group of --prompt.")
                     ] = None,
    fields: Fields = False,
) -> None:
    """Stage 6 (GPA-CT): answer prompts with the group's relevant rubric items in context.

    Without --prompt, answers every rubric group's held-out prompts into WORK/ct_answers.jsonl.
    `--prompt` (`-p`) and `--group` (`-g`) are this command's own options; every other
    option is a GPAConfig field.

    Examples:

        pluralign gpa answer -o gpa/wc

        pluralign gpa answer -o gpa/wc -g "United States" -p "Explain how vaccines work"

        pluralign gpa answer -o gpa/wc --relevance keywords --top_k 2
    """
    if fields:
        _print_fields()
        return
    config = _config(ctx.args)
    if prompt is None:
        _stage("context", config)
        return
    from pluralign.gpa.context import answer_with_rubric
    from pluralign.gpa.rubrics import load_rubrics
    from pluralign.llm import make_backend

    rubrics = load_rubrics(config)
    if group not in rubrics:
        raise fail(f"--group: no rubric for {group!r}; groups: {', '.join(rubrics)}")
    rows = answer_with_rubric(group, [{"conversation_id": None, "turn": None, "prompt": prompt}],
                              rubrics[group], make_backend(config.llm), config)
    typer.echo(json.dumps(rows[0], indent=2, ensure_ascii=False))


@gpa_app.command("finetune", **_STAGE)
def finetune_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Stage 7 (GPA-FT): rubric follow/violate pairs, then DPO or SFT of a group model.

    Writes WORK/ft_pairs.jsonl, WORK/ft_records.jsonl and WORK/ft/GROUP/run/final.

    Examples:

        pluralign gpa finetune -o gpa/wc --ft_max_steps 20 --ft_pairs_per_group 32

        pluralign gpa finetune -o gpa/wc --ft_method sft --ft_groups 2
    """
    _run_stage("finetune", ctx, fields)


@gpa_app.command("evaluate", **_STAGE)
def evaluate_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Stage 8: judge GPA-CT/GPA-FT vs zero-shot and persona; adherence; retention.

    Writes WORK/evaluation.json and WORK/evaluation.md.

    Examples:

        pluralign gpa evaluate -o gpa/wc

        pluralign gpa evaluate -o gpa/wc --judge_base_url http://127.0.0.1:8000/v1 --judge_model m
    """
    _run_stage("evaluate", ctx, fields)


@gpa_app.command("data-size", **_STAGE)
def data_size_command(ctx: typer.Context, fields: Fields = False) -> None:
    """GPA-CT against GPA-FT by data size: one group's rubric from 25%, 50%, 100% of its logs.

    Needs the ingest stage's files in WORK. For each share of `--data_sizes` (seeded and
    nested; held-out conversations are never mined) the mining stages and GPA-FT run in
    WORK/data_size/SHARE; the group's held-out prompts are answered zero-shot, with a
    persona, with GPA-CT and with GPA-FT, and measured against the largest share's
    measurable rubric items (length, format, examples, language). Blind win rates are
    asked only of a capable judge (not the bundled model). Writes WORK/data_size.md and
    WORK/data_size.json.

    Examples:

        pluralign gpa data-size -o gpa/wc

        pluralign gpa data-size -o gpa/wc --data_size_group "United Kingdom" --data_sizes 0.5,1

        pluralign gpa data-size -o gpa/wc --judge_base_url http://127.0.0.1:8000/v1 --judge_model m
    """
    from pluralign.gpa.data_size import run_data_size
    from pluralign.gpa.io import stage_path

    if fields:
        _print_fields()
        return
    config = _config(ctx.args)
    _call(lambda: run_data_size(config, log=typer.echo), echo=False)
    typer.echo(stage_path(config.work_dir, "data_size_md").read_text(encoding="utf-8"))


@gpa_app.command("run", **_STAGE)
def run_command(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option("--quick", help="Caps for a run of a few minutes with "
                                        "the bundled model on a CPU (see above); over the "
                                        "YAML file, under the options given.")] = False,
    fields: Fields = False,
) -> None:
    """Run every stage in order, from logs to the evaluation table (WORK/evaluation.md).

    `pluralign gpa run [CONFIG.yaml] [LOG.json ...] -o WORK [--field value ...]`: the
    logs are plain words (default: the config's inputs), every GPAConfig field an option.

    With the bundled SmolLM2-135M on 2 CPU cores, --quick takes about 1.5 minutes on the
    50-conversation WildChat sample; without it, about 3 (LLM labels of every user turn,
    and a rubric for every group with 3+ conversations). --quick sets (each stage still
    runs):

    * use_llm_labels=false: preference turns and attributes come from the cue patterns
      only; the LLM labels that add recall (phrasings no cue knows) are not asked for.

    * max_groups=2: rubrics, GPA-CT answers and evaluation for the two largest eligible
      groups only (rules are still contrasted against every group).

    Without --quick the answer, prompt and GPA-FT sizes are already small (128-token
    answers, 4 held-out prompts per group, 8 pairs and 4 steps of GPA-FT): raise them
    for a real run. The settings are saved to WORK/gpa_config.yaml, so stage commands run
    on the same folder later reuse them. `--fields` lists every setting.

    Examples:

        pluralign gpa run ../shared/data/conversations/wildchat_50_sample.json -o gpa/wc --quick

        pluralign gpa run wildchat_50_sample.json -o gpa/wc --max_groups 2 --ft_max_steps 8

        pluralign gpa run gpa.yaml -o gpa/full --llm.backend openai --llm.model gpt-4o-mini
    """
    from pluralign.gpa import run_pipeline

    if fields:
        _print_fields()
        return
    config = _config(ctx.args, operand="inputs", quick=quick)
    try:
        report = run_pipeline(config, log=typer.echo)
    except (ValueError, FileNotFoundError) as error:
        raise fail(str(error)) from error
    typer.echo(json.dumps(report["seconds"], indent=2))
    typer.echo(f"evaluation: {Path(config.work_dir) / 'evaluation.md'}")


@gpa_app.command("fields")
def fields_command() -> None:
    """List every GPA setting (GPAConfig field) with its default and help, then the --quick caps.

    Any of them is an option of every stage (`--min_support 2`, `--llm.max_tokens 64`) or a
    key of a YAML file given first; `pluralign gpa STAGE --fields` prints the same.

    Examples:

        pluralign gpa fields

        pluralign gpa run logs.json -o gpa/x --min_support 2 --llm.max_tokens 64
    """
    _print_fields()
