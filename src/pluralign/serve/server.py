"""Loading a model for serving, running the server, and a server on a thread (tests,
benchmarks, notebooks)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pluralign.data.records import Belief
from pluralign.serve.config import ServeConfig, parse_belief_set

logger = logging.getLogger("pluralign.serve")

#: What is logged when the served model was not trained by pluralign.
UNTRAINED_WARNING = (
    "%s was not trained by pluralign with belief markers (no pluralign_format.json): its "
    "beliefs and answers are not meaningful; serve a run's final/ folder")


def recorded_beliefs(info: dict[str, Any]) -> tuple[Belief, ...] | None:
    """The belief set a model's format file records (``beliefs``), if it records one.

    Training does not write one yet (a run's questions may each have their own set);
    a server without it takes ``--beliefs`` or each request's own ``beliefs``.
    """
    recorded = info.get("beliefs")
    return parse_belief_set(recorded, "pluralign_format.json beliefs") if recorded else None


def load_engine(config: ServeConfig) -> Any:
    """The model of ``config`` loaded and wrapped for serving (an Engine)."""
    from pluralign.eval.generate import load_sequence_format
    from pluralign.models import load_model
    from pluralign.runs import read_format_info
    from pluralign.serve.engine import Engine

    info = read_format_info(config.model)
    beliefs = (parse_belief_set(config.beliefs, "beliefs") if config.beliefs
               else recorded_beliefs(info))
    fmt = load_sequence_format(config.model)
    context_for = training_context(info, fmt, config)  # a missing pool fails before the model
    model, tokenizer = load_model(config.model, device=config.device, dtype=config.dtype,
                                  trust_remote_code=config.trust_remote_code)
    if hasattr(model, "merge_and_unload"):
        # Inference only: folding LoRA into the weights removes its extra work per token.
        model = model.merge_and_unload()
    if not info:
        logger.warning(UNTRAINED_WARNING, config.model)
    return Engine(model, tokenizer, fmt, default_beliefs=beliefs,
                  max_prompt_tokens=config.max_prompt_tokens, seed=config.seed,
                  context_for=context_for)


def training_context(info: dict[str, Any], fmt: Any, config: ServeConfig) -> Any:
    """What goes before a served question, as the model trained (a ContextFor, or None):
    an in-context fine-tuned model's shots, or a group-context model's examples of the
    requested group's answers (from ``config.group_context_pool`` when set)."""
    from pluralign.beliefs.shots import ShotPool
    from pluralign.data.records import read_examples
    from pluralign.serve.engine import group_context, shots_context

    if config.group_context_pool and not info.get("group_context"):
        logger.warning("group_context_pool: %s was not trained with group_context; the pool "
                       "is not read", config.model)
    spec = info.get("in_context")
    if spec:  # an in-context fine-tuned model is prompted with shots, as it trained
        pool = ShotPool(read_examples(spec["pool"]))
        return shots_context(pool, int(spec.get("shots", 3)), fmt.marker, config.seed)
    if info.get("group_context"):
        return group_context(info, pool_file=config.group_context_pool, seed=config.seed)
    return None


def serve(config: ServeConfig) -> None:
    """Load the model and serve it until interrupted (``pluralign serve``)."""
    import uvicorn

    from pluralign.serve.app import create_app

    app = create_app(load_engine(config), config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)


@contextmanager
def running_server(app: Any, *, host: str = "127.0.0.1", port: int = 0,
                   log_level: str = "warning", timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` on a thread; yields its base URL (``http://127.0.0.1:PORT/v1``).

    ``port=0`` takes a free port. The server stops when the block ends. uvicorn leaves
    the process's logging set-up alone (its records go to the root logger's handlers).
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           log_config=None))
    thread = threading.Thread(target=server.run, name="pluralign-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout)
