"""``pluralign serve``: the command callback registered in ``cli.main``.

torch, FastAPI and uvicorn are imported inside the command, so ``pluralign --help``
stays fast.
"""

from __future__ import annotations

import typer

from pluralign.cli.options import Fields, fail

#: What a missing ``serve`` extra prints.
MISSING_EXTRA = ('pluralign serve needs FastAPI and uvicorn: pip install "pluralign[serve]" '
                 "(missing: {name})")


def serve_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Serve a model over an OpenAI-compatible HTTP API that answers belief first.

    POST /v1/chat/completions draws each answer's belief from the model's belief
    distribution (one forward at the belief slot), then writes the response after
    it; the response carries the belief, its description and the whole distribution.
    Also GET /v1/models and GET /health. Binds 127.0.0.1 unless --host says otherwise;
    an API key (--api_key, or the variable PLURALIGN_API_KEY) is then required on every
    request. Concurrent requests are batched. A model trained with --group_in_prompt
    answers for the `group` each request names (after a few of that group's answers
    where it trained with --group_context, from --group_context_pool or the training
    file its run recorded).

    Examples:

        pluralign serve runs/gdpo/final --beliefs "1:Oppose,2:Support"

        PLURALIGN_API_KEY=secret pluralign serve runs/gdpo/final --port 8001

        pluralign serve smollm2-135m --beliefs "1:No,2:Yes" --max_batch_rows 32

        pluralign serve runs/groups/final --group_context_pool data/unseen/train.jsonl

        pluralign serve --fields
    """
    from pluralign.cli.options import load_from_command_line, print_fields
    from pluralign.serve.config import ServeConfig

    if fields:
        print_fields(ServeConfig)
        return
    try:
        config = load_from_command_line(ServeConfig, ctx.args, operand="model")
    except ValueError as exc:
        raise fail(str(exc)) from exc
    try:
        from pluralign.serve.server import serve
    except ModuleNotFoundError as exc:
        raise fail(MISSING_EXTRA.format(name=exc.name)) from exc
    from pluralign.models import ModelLoadError

    key = "required" if config.resolved_api_key() else "not required"
    typer.echo(f"serving {config.model} as {config.model_name()!r} at "
               f"http://{config.host}:{config.port}/v1 (API key {key})")
    try:
        serve(config)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
