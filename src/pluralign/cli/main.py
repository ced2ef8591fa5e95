"""The ``pluralign`` command line.

Heavy libraries (torch, transformers) are imported inside commands, so
``pluralign --help`` and ``pluralign ls`` answer quickly.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from pluralign import __version__

app = typer.Typer(
    name="pluralign",
    help=(
        "Pluralistic preference alignment: train and evaluate language models whose answers "
        "reflect a group's whole distribution of beliefs (GDPO, GPA)."
    ),
    epilog=(
        "Examples:\n\n"
        "  pluralign demo                 # end-to-end run on the bundled model and data\n\n"
        "  pluralign ls                   # what methods, metrics, judges, builders exist\n\n"
        "  pluralign generate 'Is democracy important?'\n\n"
        "Run `pluralign COMMAND --help` for the options and examples of each command."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pluralign {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show library logs and warnings.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    from pluralign._quiet import quiet_libraries

    _state["verbose"] = verbose
    quiet_libraries(verbose)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def not_yet(command: str, issue: str) -> typer.Exit:
    typer.secho(
        f"`pluralign {command}` is not available in pluralign {__version__} yet: it arrives "
        f"with the {issue}. See README.md for what works today.",
        fg=typer.colors.YELLOW,
        err=True,
    )
    return typer.Exit(3)


# ----------------------------------------------------------------------------- ls


@app.command("ls")
def ls_command(
    kind: Annotated[
        str | None,
        typer.Argument(help="Only this registry: methods, metrics, judges, builders, models."),
    ] = None,
) -> None:
    """List what is registered: training methods, metrics, judges, data builders, models.

    Examples:

        pluralign ls

        pluralign ls methods
    """
    from rich.console import Console
    from rich.table import Table

    from pluralign.registry import ALL_REGISTRIES, did_you_mean, load_all

    failures = load_all()
    if kind is not None and kind not in ALL_REGISTRIES:
        raise fail(
            f'unknown registry "{kind}".{did_you_mean(kind, list(ALL_REGISTRIES))} '
            f"Known: {', '.join(ALL_REGISTRIES)}"
        )
    console = Console()
    for name, registry in ALL_REGISTRIES.items():
        if kind is not None and name != kind:
            continue
        table = Table(title=f"{name} ({len(registry)})", title_justify="left", show_header=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("description")
        for entry in registry.entries():
            table.add_row(entry.name, entry.help)
        if not len(registry):
            table.add_row("-", "(none registered yet)")
        console.print(table)
    for failure in failures:
        typer.secho(f"warning: plugin failed to load: {failure}", fg=typer.colors.YELLOW, err=True)


# --------------------------------------------------------------------------- demo


@app.command("demo")
def demo_command(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model reference for the demo.")
    ] = "smollm2-135m",
) -> None:
    """Run the end-to-end demo on the bundled model (no network needed).

    In this version the demo prepares the bundled SmolLM2 (converted and cached
    once), reports its size and load time, and answers a survey question. The
    full GDPO demo (SFT, DPO, GDPO, evaluation and report) arrives with the
    demo issue.

    Examples:

        pluralign demo

        PLURALIGN_CACHE=/tmp/cache pluralign demo
    """
    from pluralign.generation import generate_text
    from pluralign.models import ModelLoadError, count_parameters, load_model

    question = (
        "Do you think the growing number of older people in your country is a major problem, "
        "a minor problem, or not a problem?"
    )
    started = time.perf_counter()
    try:
        lm, tokenizer = load_model(model)
    except (ModelLoadError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    load_seconds = time.perf_counter() - started
    typer.echo(
        f"model: {model} ({count_parameters(lm) / 1e6:.1f}M parameters, loaded in "
        f"{load_seconds:.1f} s)"
    )
    typer.echo(f"question: {question}")
    answer = generate_text(lm, tokenizer, question, max_new_tokens=60)
    typer.echo(f"answer: {answer}")
    typer.secho(
        "The full GDPO demo (SFT -> DPO and GDPO -> evaluation -> report) arrives with the "
        "demo issue; this run checked that the bundled model loads and generates.",
        fg=typer.colors.YELLOW,
    )


# -------------------------------------------------------------------------- train


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train_command(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Argument(help="YAML config (any TrainConfig field); omit to use only options."),
    ] = None,
    fields: Annotated[
        bool, typer.Option("--fields", help="List every config field with its help and exit.")
    ] = False,
) -> None:
    """Train with a method: sft, uniform-sft, dpo, gdpo, gdpo-calibration, gdpo-conditioned,
    kto, gdpo-kto.

    Every TrainConfig field can be set in the YAML file and overridden on the
    command line as `--field value` (nested model fields as `--model.lora_r 8`).
    The resolved config is written to OUTPUT_DIR/config.yaml, metrics to
    OUTPUT_DIR/metrics.jsonl, the model to OUTPUT_DIR/final.

    Examples:

        pluralign train runs.yaml

        pluralign train gdpo.yaml --learning_rate 1e-5 --max_steps 200

        pluralign train --method sft --train_file data/train.jsonl --output_dir runs/sft

        pluralign train gdpo.yaml --model.model runs/sft/final --resume

        accelerate launch --num_processes 2 -m pluralign train gdpo.yaml

        pluralign train --fields
    """
    from pluralign.config import ConfigError, describe_fields, load_config
    from pluralign.train.config import TrainConfig

    if fields:
        _print_fields(TrainConfig, describe_fields)
        return
    overrides = list(ctx.args)
    if config is not None and config.startswith("--"):
        # No YAML given: click took the first option for the positional argument.
        config, overrides = None, [config, *overrides]
    try:
        train_config = load_config(TrainConfig, config, overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    _run_training(train_config)


def _print_fields(cls: type, describe: object) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("field", "type", "default", "help", title=f"{cls.__name__} fields")
    for row in describe(cls):  # type: ignore[operator]
        table.add_row(*row)
    Console().print(table)


def _run_training(train_config: object) -> None:
    from pluralign.data.records import RecordError, RecordFileError
    from pluralign.models import ModelLoadError
    from pluralign.train.api import train
    from pluralign.train.common import TrainingDiverged

    try:
        result = train(train_config)
    except (RecordError, RecordFileError, ModelLoadError, TrainingDiverged, ValueError,
            FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    from pluralign.train.common import process_state

    if process_state().is_main_process:
        typer.echo(f"trained {result.global_step} steps; model: {result.final_dir}; "
                   f"metrics: {result.metrics_file}")


# ------------------------------------------------------- commands of later issues


_LATER = {
    "gpa": (
        "Group Preference Alignment: rubrics from conversation logs, GPA-CT and GPA-FT.",
        "pluralign gpa run --logs conversations.json --group-field metadata.country",
        "GPA issue",
    ),
}


def _register_later(name: str, summary: str, example: str, issue: str) -> None:
    def command(ctx: typer.Context) -> None:
        raise not_yet(name, issue)

    command.__doc__ = f"{summary}\n\nExample (once available):\n\n    {example}"
    app.command(
        name,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(command)


for _name, (_summary, _example, _issue) in _LATER.items():
    _register_later(_name, _summary, _example, _issue)


def _add_subapps() -> None:
    # Sub-apps import only typer at module level, so `pluralign --help` stays fast.
    from pluralign.cli.data import data_app
    from pluralign.cli.evaluate import eval_command, generate_command

    app.add_typer(data_app, name="data", epilog=(
        "Examples:\n\n"
        "  pluralign data opinions --source dev_groups.jsonl --group 'United States' "
        "-o data/us\n\n"
        "  pluralign data validate data/us/train.jsonl\n\n"
        "Run `pluralign data COMMAND --help` for each builder's options."
    ))
    app.command("eval")(eval_command)
    app.command("generate")(generate_command)


_add_subapps()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
