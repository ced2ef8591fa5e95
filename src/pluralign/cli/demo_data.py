"""``pluralign data demo``: write the bundled demo opinion set as train/eval/test JSONL.

The lead app registers :func:`demo_data_command` on the ``data`` app as a builder
command (``data_app.command("demo", **DATA_COMMAND)``), so it reads
``[CONFIG.yaml] --field value ... -o DIR`` with the fields of ``DemoConfig``.
"""

from __future__ import annotations

import typer

from pluralign.cli.options import Fields


def demo_data_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Write pluralign's own demo opinion set (48 questions, 3 invented regions).

    No download and no LLM: the questions, one response per belief and each
    region's belief distribution ship with pluralign. Pairs are drawn as in the
    GDPO paper (accepted belief from the region's distribution, rejected
    uniformly from the others) and split by question.

    `pluralign data demo [CONFIG.yaml] --field value ... -o DIR` with the fields of
    DemoConfig (`--fields`): `--groups` (`-g`, repeat; Northvale, Southmere, Eastholm),
    `--pairs_per_question`, `--styles` (direct and/or casual), `--uniform`, `--split_by`,
    `--seed`. The older `--group`, `--style` and `--out` still work.

    Examples:

        pluralign data demo --output_dir data/demo

        pluralign data demo -g Northvale -g Southmere --pairs_per_question 16 -o data/demo2

        pluralign data demo --styles direct --uniform -o data/demo-uniform

        pluralign data demo demo.yaml --seed 3 -o data/demo-seed3
    """
    from pluralign.cli.data import run_builder

    run_builder("demo", ctx.args, fields)
