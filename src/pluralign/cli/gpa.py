"""``pluralign gpa ...``: Group Preference Alignment from conversation logs.

The lead app mounts this with ``app.add_typer(gpa_app, name="gpa")``. Every
stage command reads and writes the work folder (``--work``); its settings come
from ``--config`` (else the ``gpa_config.yaml`` a previous stage saved there),
then ``--set key=value`` overrides (dotted keys, e.g. ``--set llm.max_tokens=64``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

gpa_app = typer.Typer(
    name="gpa",
    help="Group Preference Alignment: mine group rubrics from conversation logs, answer with "
         "them in context (GPA-CT), fine-tune on rubric pairs (GPA-FT) and evaluate.\n\n"
         "Every stage writes its own file into the work folder (-w), so a stage can be re-run "
         "or inspected alone; `run` does them all.\n\n"
         "Examples:\n\n"
         "    pluralign gpa run ../shared/data/conversations/wildchat_50_sample.json "
         "-w gpa/wc --quick\n\n"
         "    pluralign gpa rubrics -w gpa/wc --set rubric_phrasing=template\n\n"
         "    pluralign gpa answer -w gpa/wc -g \"United States\" -p \"Plan a trip to Rome\"\n\n"
         "    pluralign gpa fields",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

Work = Annotated[Path, typer.Option("--work", "-w", help="Work folder of the stage files.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="GPAConfig YAML "
                                                 "(default: WORK/gpa_config.yaml if present).")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override KEY=VALUE "
                                                "(dotted keys); repeat for several.")]
Backend = Annotated[str | None, typer.Option("--llm-backend", help="LLM backend: hf or openai.")]
Model = Annotated[str | None, typer.Option("--llm-model", help="hf: model reference (default "
                                           "the bundled SmolLM2); openai: the model name.")]
BaseUrl = Annotated[str | None, typer.Option("--base-url", help="openai: server base URL.")]
Cache = Annotated[str | None, typer.Option("--llm-cache", help="Folder of the LLM answer cache.")]

CONFIG_NAME = "gpa_config.yaml"


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def _config(work: Path, config_file: Path | None, sets: list[str] | None,
            llm: dict[str, Any], quick: bool = False, **fields: Any) -> Any:
    """Defaults < YAML < the quick preset < command-line options < ``--set``."""
    from pluralign.config import load_config, save_config
    from pluralign.gpa import GPAConfig
    from pluralign.gpa.config import quick_overrides

    path = config_file or (work / CONFIG_NAME if (work / CONFIG_NAME).is_file() else None)
    overrides: dict[str, Any] = {"work_dir": str(work)}
    overrides.update(quick_overrides() if quick else {})
    overrides.update({f"llm.{k}": v for k, v in llm.items() if v is not None})
    overrides.update({k: v for k, v in fields.items() if v is not None})
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise _fail(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    try:
        config = load_config(GPAConfig, path, overrides)
    except ValueError as error:
        raise _fail(str(error)) from error
    work.mkdir(parents=True, exist_ok=True)
    save_config(config, work / CONFIG_NAME)
    return config


def _llm(backend: str | None, model: str | None, base_url: str | None, cache: str | None
         ) -> dict[str, Any]:
    return {"backend": backend, "model": model, "base_url": base_url, "cache_dir": cache}


def _stage(name: str, config: Any, needs_llm: bool = True) -> dict[str, Any]:
    from pluralign.gpa import STAGES, StageInputError
    from pluralign.llm import LLMError, make_backend

    try:
        backend = make_backend(config.llm) if needs_llm else None
        summary = STAGES[name](config, backend, None)
    except (StageInputError, LLMError, ValueError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    typer.echo(json.dumps(summary, indent=2, default=str))
    return summary


@gpa_app.command("ingest")
def ingest_command(
    logs: Annotated[list[Path], typer.Argument(help="Conversation log files (JSON or JSONL).")],
    work: Work, group_field: Annotated[str | None, typer.Option(
        "--group-field", help="Dotted field naming the group, e.g. metadata.country.")] = None,
    group_map: Annotated[Path | None, typer.Option(
        "--group-map", help="JSON {id: group} or CSV id,group mapping.")] = None,
    config_file: ConfigFile = None, sets: Sets = None,
) -> None:
    """Stage 1: read logs, report malformed conversations, assign groups.

    Writes WORK/conversations.jsonl and WORK/ingest_report.json (groups, problems).

    Examples:

        pluralign gpa ingest ../shared/data/conversations/wildchat_50_sample.json -w gpa/wc

        pluralign gpa ingest export.json -w gpa/teams --group-map teams.csv -s min_conversations=5
    """
    config = _config(work, config_file, sets, {}, inputs=[str(p) for p in logs],
                     group_field=group_field, group_map=str(group_map) if group_map else None)
    _stage("ingest", config, needs_llm=False)


@gpa_app.command("classify")
def classify_command(work: Work, config_file: ConfigFile = None, sets: Sets = None,
                     llm_backend: Backend = None, llm_model: Model = None,
                     base_url: BaseUrl = None, llm_cache: Cache = None) -> None:
    """Stage 2: label the user turns that carry a preference signal (WORK/signals.jsonl).

    Examples:

        pluralign gpa classify -w gpa/wc

        pluralign gpa classify -w gpa/wc --llm-backend openai --llm-model gpt-4o-mini

        pluralign gpa classify -w gpa/wc --set use_llm_labels=false
    """
    _stage("classify", _config(work, config_file, sets,
                               _llm(llm_backend, llm_model, base_url, llm_cache)))


@gpa_app.command("attributes")
def attributes_command(work: Work, config_file: ConfigFile = None, sets: Sets = None,
                       llm_backend: Backend = None, llm_model: Model = None,
                       base_url: BaseUrl = None, llm_cache: Cache = None) -> None:
    """Stage 3: attributes and directions of the answers that drew a signal.

    Writes WORK/attributes.jsonl.

    Examples:

        pluralign gpa attributes -w gpa/wc

        pluralign gpa attributes -w gpa/wc --llm-backend openai --base-url http://127.0.0.1:8000/v1
    """
    _stage("attributes", _config(work, config_file, sets,
                                 _llm(llm_backend, llm_model, base_url, llm_cache)))


@gpa_app.command("rules")
def rules_command(work: Work, config_file: ConfigFile = None, sets: Sets = None) -> None:
    """Stage 4: contrast groups into rules with support and evidence (WORK/rules.jsonl).

    Examples:

        pluralign gpa rules -w gpa/wc

        pluralign gpa rules -w gpa/wc --set min_support=2 --set min_lift=1.5
    """
    _stage("rules", _config(work, config_file, sets, {}), needs_llm=False)


@gpa_app.command("rubrics")
def rubrics_command(work: Work, config_file: ConfigFile = None, sets: Sets = None,
                    llm_backend: Backend = None, llm_model: Model = None,
                    base_url: BaseUrl = None, llm_cache: Cache = None) -> None:
    """Stage 5: a rubric per group, each item citing its rules (WORK/rubrics.json, .md).

    Examples:

        pluralign gpa rubrics -w gpa/wc

        pluralign gpa rubrics -w gpa/wc --set rubric_phrasing=template
    """
    _stage("rubrics", _config(work, config_file, sets,
                              _llm(llm_backend, llm_model, base_url, llm_cache)))


@gpa_app.command("answer")
def answer_command(
    work: Work,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Answer this one prompt "
                                               "(with --group) instead of the held-out ones.")
                      ] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Group of --prompt.")
                     ] = None,
    config_file: ConfigFile = None, sets: Sets = None, llm_backend: Backend = None,
    llm_model: Model = None, base_url: BaseUrl = None, llm_cache: Cache = None,
) -> None:
    """Stage 6 (GPA-CT): answer prompts with the group's relevant rubric items in context.

    Without --prompt, answers every rubric group's held-out prompts into WORK/ct_answers.jsonl.

    Examples:

        pluralign gpa answer -w gpa/wc

        pluralign gpa answer -w gpa/wc -g "United States" -p "Explain how vaccines work"

        pluralign gpa answer -w gpa/wc --set relevance=keywords --set top_k=2
    """
    config = _config(work, config_file, sets, _llm(llm_backend, llm_model, base_url, llm_cache))
    if prompt is None:
        _stage("context", config)
        return
    from pluralign.gpa.context import answer_with_rubric
    from pluralign.gpa.rubrics import load_rubrics
    from pluralign.llm import make_backend

    rubrics = load_rubrics(config)
    if group not in rubrics:
        raise _fail(f"--group: no rubric for {group!r}; groups: {', '.join(rubrics)}")
    rows = answer_with_rubric(group, [{"conversation_id": None, "turn": None, "prompt": prompt}],
                              rubrics[group], make_backend(config.llm), config)
    typer.echo(json.dumps(rows[0], indent=2, ensure_ascii=False))


@gpa_app.command("finetune")
def finetune_command(work: Work, config_file: ConfigFile = None, sets: Sets = None,
                     llm_backend: Backend = None, llm_model: Model = None,
                     base_url: BaseUrl = None, llm_cache: Cache = None) -> None:
    """Stage 7 (GPA-FT): rubric follow/violate pairs, then DPO or SFT of a group model.

    Writes WORK/ft_pairs.jsonl, WORK/ft_records.jsonl and WORK/ft/GROUP/run/final.

    Examples:

        pluralign gpa finetune -w gpa/wc --set ft_max_steps=20 --set ft_pairs_per_group=32

        pluralign gpa finetune -w gpa/wc --set ft_method=sft --set ft_groups=2
    """
    _stage("finetune", _config(work, config_file, sets,
                               _llm(llm_backend, llm_model, base_url, llm_cache)))


@gpa_app.command("evaluate")
def evaluate_command(work: Work, config_file: ConfigFile = None, sets: Sets = None,
                     llm_backend: Backend = None, llm_model: Model = None,
                     base_url: BaseUrl = None, llm_cache: Cache = None) -> None:
    """Stage 8: judge GPA-CT/GPA-FT vs zero-shot and persona; adherence; retention.

    Writes WORK/evaluation.json and WORK/evaluation.md.

    Examples:

        pluralign gpa evaluate -w gpa/wc

        pluralign gpa evaluate -w gpa/wc -s judge_base_url=http://127.0.0.1:8000/v1 -s judge_model=m
    """
    _stage("evaluate", _config(work, config_file, sets,
                               _llm(llm_backend, llm_model, base_url, llm_cache)))


@gpa_app.command("run")
def run_command(
    logs: Annotated[list[Path] | None, typer.Argument(help="Conversation logs (default: the "
                                                      "config's inputs).")] = None,
    work: Work = Path("gpa_runs/run"),
    group_field: Annotated[str | None, typer.Option(
        "--group-field", help="Dotted field naming the group, e.g. metadata.country.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Caps for a run of a few minutes with "
                                        "the bundled model on a CPU (see above); --set wins "
                                        "over them.")] = False,
    config_file: ConfigFile = None, sets: Sets = None, llm_backend: Backend = None,
    llm_model: Model = None, base_url: BaseUrl = None, llm_cache: Cache = None,
) -> None:
    """Run every stage in order, from logs to the evaluation table (WORK/evaluation.md).

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
    on the same folder later reuse them. `pluralign gpa fields` lists every setting.

    Examples:

        pluralign gpa run ../shared/data/conversations/wildchat_50_sample.json -w gpa/wc --quick

        pluralign gpa run wildchat_50_sample.json -w gpa/wc -s max_groups=2 -s ft_max_steps=8

        pluralign gpa run -c gpa.yaml -w gpa/full --llm-backend openai --llm-model gpt-4o-mini
    """
    from pluralign.gpa import run_pipeline

    config = _config(work, config_file, sets, _llm(llm_backend, llm_model, base_url, llm_cache),
                     quick=quick, inputs=[str(p) for p in logs] if logs else None,
                     group_field=group_field)
    try:
        report = run_pipeline(config, log=typer.echo)
    except (ValueError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    typer.echo(json.dumps(report["seconds"], indent=2))
    typer.echo(f"evaluation: {work / 'evaluation.md'}")


@gpa_app.command("fields")
def fields_command() -> None:
    """List every GPA setting (GPAConfig field) with its default and help, then the --quick caps.

    Any of them can be set in a YAML file (--config) or with --set KEY=VALUE.

    Examples:

        pluralign gpa fields

        pluralign gpa run logs.json -w gpa/x --set min_support=2 --set llm.max_tokens=64
    """
    from rich.console import Console
    from rich.table import Table

    from pluralign.config import describe_fields
    from pluralign.gpa import GPAConfig
    from pluralign.gpa.config import QUICK_PRESET

    table = Table("field", "type", "default", "help", title="GPAConfig fields")
    for name, type_name, default, help_text in describe_fields(GPAConfig):
        table.add_row(name, type_name, default, help_text)
    quick = Table("field", "--quick value", "what it trades away", title="--quick caps")
    for name, cap in QUICK_PRESET.items():
        quick.add_row(name, str(cap.value), cap.trade_off)
    console = Console()
    console.print(table)
    console.print(quick)
