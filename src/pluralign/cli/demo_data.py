"""``pluralign data demo``: write the bundled demo opinion set as train/eval/test JSONL.

The lead app registers :func:`demo_data_command` on the ``data`` app, e.g.
``data_app.command("demo")(demo_data_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo_data_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (train/eval/test.jsonl, "
                                      "README.md card, build_report.json).")],
    groups: Annotated[list[str] | None, typer.Option(
        "--group", "-g", help="Northvale, Southmere or Eastholm; repeat for several. "
                              "Default: all three.")] = None,
    pairs: Annotated[int, typer.Option("--pairs-per-question", min=1,
                                       help="Pairs per question and group.")] = 8,
    styles: Annotated[list[str] | None, typer.Option(
        "--style", help="Prompt wording: direct and/or casual (repeat). Default: both.")] = None,
    uniform: Annotated[bool, typer.Option("--uniform", help="Accepted belief drawn uniformly "
                                          "(uniform-SFT data).")] = False,
    split_by: Annotated[str, typer.Option("--split-by", help="question (no question in two "
                                          "splits) or example.")] = "question",
    seed: Annotated[int, typer.Option(help="Seed of pairs and splits.")] = 0,
) -> None:
    """Write pluralign's own demo opinion set (48 questions, 3 invented regions).

    No download and no LLM: the questions, one response per belief and each
    region's belief distribution ship with pluralign. Pairs are drawn as in the
    GDPO paper (accepted belief from the region's distribution, rejected
    uniformly from the others) and split by question.

    Examples:

        pluralign data demo --out data/demo

        pluralign data demo -g Northvale -g Southmere --pairs-per-question 16 -o data/demo2

        pluralign data demo --style direct --uniform -o data/demo-uniform
    """
    from pluralign.data.builders import save_build
    from pluralign.data.demo import DEMO_STYLES, DemoConfig
    from pluralign.registry import BUILDERS

    try:
        config = DemoConfig(groups=list(groups or []), pairs_per_question=pairs,
                            styles=list(styles or DEMO_STYLES), uniform=uniform,
                            split_by=split_by, seed=seed)
        result = BUILDERS.get("demo")(config)
    except ValueError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from error
    paths = save_build(
        result, out, title="pluralign demo opinions",
        description="Survey-style questions written by pluralign for three invented regions; "
                    "accepted belief drawn " + ("uniformly" if uniform else
                                                "from the region's distribution")
                    + ", rejected uniformly from the other beliefs.")
    sizes = ", ".join(f"{k} {len(v)}" for k, v in result.splits.items())
    typer.echo(f"wrote {result.total} records ({sizes}) to {out}")
    typer.echo(f"card: {paths['card']}")
