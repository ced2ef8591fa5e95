"""The ``pluralign`` command line.

Heavy libraries (torch, transformers) are imported inside commands, so
``pluralign --help`` and ``pluralign ls`` answer quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pluralign import __version__
from pluralign.cli.options import CONFIG_COMMAND, Fields, fail

if TYPE_CHECKING:
    from rich.console import Console

    from pluralign.eval.group_comparison import GroupComparison

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


@app.command("demo", **CONFIG_COMMAND)
def demo_command(
    ctx: typer.Context,
    quick: Annotated[
        bool, typer.Option("--quick", help="A ~3 minute smoke run: fewer questions and steps.")
    ] = False,
    fields: Fields = False,
) -> None:
    """Run the end-to-end demo on the bundled model and data (no network needed).

    SFT of the bundled SmolLM2-135M (LoRA) on pluralign's demo opinion set, then
    DPO and GDPO from the SFT model, then evaluation of all three on held-out
    paraphrases (JSD, CBC, BPC with the offline embedding judge, RS), the
    reference lines and a report with plots, then the measured time of each
    stage. 10.0 minutes on 2 idle CPU cores with native bf16 (2026-12-03);
    --quick is a smoke run, too short for its numbers to mean much. With
    `--groups A --groups B` every stage trains one model for both regions (each
    prompt names its group) and the demo prints each group's JSD and the same
    questions' distributions for each group. Any DemoRunConfig field can be set
    as `--field value`, or in a YAML file given first.

    Examples:

        pluralign demo

        pluralign demo --quick

        pluralign demo --output_dir /tmp/demo --preference_steps 60

        pluralign demo --groups Northvale --groups Southmere -o runs/demo-groups
    """
    from pluralign.cli.options import load_from_command_line, print_fields
    from pluralign.demo import DemoRunConfig, run_demo

    if fields:
        print_fields(DemoRunConfig)
        return
    try:
        preset = DemoRunConfig.quick().to_dict() if quick else None
        config = load_from_command_line(DemoRunConfig, ctx.args, short=_OUTPUT_SHORT,
                                        before=preset)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    from pluralign.train.common import TrainingDiverged

    try:
        result = run_demo(config, echo=lambda line: typer.secho(line, fg=typer.colors.CYAN))
    except (ValueError, TrainingDiverged) as exc:  # a refused folder, a diverged stage
        raise fail(str(exc)) from exc
    _print_demo(result)


#: Short letters every command with an output folder takes.
_OUTPUT_SHORT = {"-o": "output_dir"}


def _print_demo(result: object) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(value: object) -> str:
        return "–" if value is None else f"{value:.3f}"

    table = Table("method", "JSD ↓", "CBC ↑", "BPC ↑", "RS ↑", "marker starts ↓",
                  "minority margin", title="pluralign demo (held-out paraphrases)")
    for row in result.rows:  # type: ignore[attr-defined]
        table.add_row(row["method"], *(cell(row.get(k)) for k in
                                       ("jsd", "cbc", "bpc", "rs", "marker_start",
                                        "minority_margin")))
    lines = result.reference_lines  # type: ignore[attr-defined]
    console = Console()
    console.print(table)
    console.print("reference lines (JSD): " + ", ".join(
        f"{name} {value:.3f}" for name, value in lines.items()))
    if result.by_group is not None:  # type: ignore[attr-defined]
        _print_demo_groups(console, result.by_group)  # type: ignore[attr-defined]
    stages = result.stage_seconds  # type: ignore[attr-defined]
    console.print("stage times: " + ", ".join(f"{name} {seconds:.0f} s"
                                              for name, seconds in stages.items()))
    console.print(f"report: {result.report}  ({result.seconds / 60:.1f} min)")  # type: ignore[attr-defined]


def _print_demo_groups(console: Console, c: GroupComparison) -> None:
    """`demo --groups`: JSD per group, then one model's distributions for each group."""
    from rich.table import Table

    table = Table("method", *c.groups, title="JSD per group (one model for every group)")
    for label, per_group in c.jsd.items():
        table.add_row(label, *(f"{per_group[g]:.3f}" for g in c.groups))
    table.add_row("uniform line", *(f"{c.reference_lines[g]['uniform']:.3f}" for g in c.groups))
    console.print(table)
    for q in c.examples:
        columns = [f"{g} {kind}" for g in c.groups for kind in ("target", c.model)]
        table = Table("belief", *columns, title=f"{q.prompt} ({q.question_id})")
        for i, belief in enumerate(q.beliefs):
            table.add_row(belief, *(f"{dist[g][i]:.2f}" for g in c.groups
                                    for dist in (q.targets, q.predicted)))
        console.print(table)
    console.print(f"{c.model}: mean JSD between the groups' predicted distributions "
                  f"{c.predicted_spread:.3f}, between their targets {c.target_spread:.3f}")


# -------------------------------------------------------------------------- train


@app.command("train", **CONFIG_COMMAND)
def train_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Train with a method: sft, uniform-sft, icf, dpo, gdpo, gdpo-calibration,
    gdpo-conditioned, kto, gdpo-kto.

    `pluralign train [CONFIG.yaml] --field value ...`: every TrainConfig field
    can be set in the YAML file and on the command line (nested model fields as
    `--model.lora_r 8`), and so can every other field of the method's TRL config
    (TrainingArguments, DPOConfig, KTOConfig, SFTConfig: `--weight_decay 0.1`),
    which goes to `training_args`. The resolved config is written to
    OUTPUT_DIR/config.yaml, metrics to OUTPUT_DIR/metrics.jsonl, the model to
    OUTPUT_DIR/final.

    Examples:

        pluralign train runs.yaml

        pluralign train gdpo.yaml --learning_rate 1e-5 --max_steps 200

        pluralign train --method sft --train_file data/train.jsonl --output_dir runs/sft

        pluralign train --method icf --icf_shots 5 --train_file train.jsonl --output_dir runs/icf

        pluralign train gdpo.yaml --model.model runs/sft/final --resume

        pluralign train gdpo.yaml --weight_decay 0.01 --max_grad_norm 0.5

        accelerate launch --num_processes 2 -m pluralign train gdpo.yaml

        pluralign train --fields
    """
    from pluralign.cli.options import load_from_command_line, print_fields
    from pluralign.train.config import TrainConfig

    if fields:
        print_fields(TrainConfig)
        return
    try:
        train_config = load_from_command_line(TrainConfig, ctx.args, short=_OUTPUT_SHORT)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    _run_training(train_config)


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


def _add_subapps() -> None:
    # Sub-apps import only typer at module level, so `pluralign --help` stays fast.
    from pluralign.cli.data import DATA_COMMAND, data_app
    from pluralign.cli.demo_data import demo_data_command
    from pluralign.cli.evaluate import eval_command, generate_command
    from pluralign.cli.gpa import gpa_app
    from pluralign.cli.serve import serve_command

    data_app.command("demo", **DATA_COMMAND)(demo_data_command)
    app.add_typer(gpa_app, name="gpa", epilog=(
        "Examples:\n\n"
        "  pluralign gpa run wildchat_50_sample.json -w gpa/wc -s max_groups=2\n\n"
        "Run `pluralign gpa COMMAND --help` for each stage's options."
    ))

    app.add_typer(data_app, name="data", epilog=(
        "Examples:\n\n"
        "  pluralign data opinions --source dev_groups.jsonl --group 'United States' "
        "-o data/us\n\n"
        "  pluralign data validate data/us/train.jsonl\n\n"
        "Run `pluralign data COMMAND --help` for each builder's options."
    ))
    app.command("eval", **CONFIG_COMMAND)(eval_command)
    app.command("generate", **CONFIG_COMMAND)(generate_command)
    app.command("serve", **CONFIG_COMMAND)(serve_command)


_add_subapps()


def main() -> None:
    try:
        app()
    except OSError as error:
        # A path the user gave that the file system refuses (an output folder that is a
        # file, no permission, disk full): one line naming it, not a traceback.
        where = f"{error.filename}: " if error.filename else ""
        typer.secho(f"error: {where}{error.strerror or error}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    main()
