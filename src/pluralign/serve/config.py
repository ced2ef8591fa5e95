"""``ServeConfig`` (``pluralign serve``) and the belief-set spelling requests and options use.

Only the standard library and pluralign's config layer are imported here, so the
command's ``--fields`` and its errors answer without loading torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pluralign.config import YamlConfig, reject_non_finite
from pluralign.data.records import Belief, RecordError

#: Environment variable the API key is read from when ``--api_key`` is not given.
API_KEY_ENV = "PLURALIGN_API_KEY"


@dataclass
class ServeConfig(YamlConfig):
    """``pluralign serve``: an OpenAI-compatible server answering belief first."""

    model: str = field(default="smollm2-135m", metadata={
        "help": "Model to serve: a run's model folder (runs/gdpo/final), a keyword "
                "(smollm2-135m, tiny), a local folder (also the command's plain word)."})
    served_model_name: str | None = field(default=None, metadata={
        "help": "Name clients pass as `model` (None: the run's folder name for RUN/final, "
                "else the model reference)."})
    host: str = field(default="127.0.0.1", metadata={
        "help": "Address to bind. 127.0.0.1 serves this machine only; 0.0.0.0 exposes the "
                "server to the network (set an API key then)."})
    port: int = field(default=8000, metadata={"help": "TCP port (0: any free port)."})
    beliefs: str | None = field(default=None, metadata={
        "help": 'Belief set of requests that send none, "1:Oppose,2:Support" (None: the one '
                "the model's run recorded; without one, every request must send `beliefs`)."})
    group_context_pool: str | None = field(default=None, metadata={
        "help": "Models trained with group_context: JSONL of records the group's example "
                "answers come from, instead of the training file the run recorded (e.g. a few "
                "answers of groups the model never trained on)."})
    api_key: str | None = field(default=None, repr=False, metadata={
        "help": "Key every request must send (Authorization: Bearer KEY). Prefer the "
                "environment variable named by api_key_env: a command line is visible to "
                "other users of the machine. None and no variable: no key is checked."})
    api_key_env: str = field(default=API_KEY_ENV, metadata={
        "help": "NAME of the environment variable holding the API key when api_key is "
                "not given ('' : none)."})
    max_tokens_limit: int = field(default=512, metadata={
        "help": "Largest max_tokens a request may ask for (more: 400)."})
    default_max_tokens: int = field(default=128, metadata={
        "help": "max_tokens of a request that sets none."})
    max_n: int = field(default=64, metadata={
        "help": "Largest n (answers per request) a request may ask for (more: 400)."})
    max_prompt_tokens: int = field(default=2048, metadata={
        "help": "Longest prompt in tokens (more: 400)."})
    max_body_bytes: int = field(default=1_000_000, metadata={
        "help": "Largest request body in bytes (more: 413)."})
    max_batch_rows: int = field(default=16, metadata={
        "help": "Most answers generated together in one batch (a request with n > this "
                "runs alone)."})
    max_wait_ms: float = field(default=10.0, metadata={
        "help": "How long the batcher waits for more requests before it runs a batch that "
                "is not full (milliseconds)."})
    max_queue: int = field(default=256, metadata={
        "help": "Requests waiting for the model before new ones get 503."})
    temperature: float = field(default=1.0, metadata={
        "help": "Temperature of the response text for requests that set none (0: greedy)."})
    belief_temperature: float = field(default=1.0, metadata={
        "help": "Temperature over the belief distribution for requests that set none "
                "(1: the model's distribution; 0: its most likely belief)."})
    belief_top_k: int | None = field(default=None, metadata={
        "help": "Draw beliefs from the k most likely only, for requests that set none "
                "(None: all)."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the server's random draws (a request's `seed` fixes its own "
                "belief draws)."})
    device: str = field(default="auto", metadata={"help": "Device (auto, cpu, cuda:0)."})
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = field(
        default="float32", metadata={"help": "Weight precision ('auto' keeps the "
                                             "checkpoint's own; bfloat16 halves memory on GPUs)."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow a model folder's own modelling code (auto_map) to run."})
    log_level: Literal["critical", "error", "warning", "info", "debug"] = field(
        default="info", metadata={"help": "uvicorn's log level."})

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if not self.model.strip():
            raise ValueError("model: a model to serve is required")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: must be in 0..65535, got {self.port}")
        for name in ("max_tokens_limit", "default_max_tokens", "max_n", "max_prompt_tokens",
                     "max_body_bytes", "max_batch_rows", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens: {self.default_max_tokens} is above "
                             f"max_tokens_limit {self.max_tokens_limit}")
        for name in ("max_wait_ms", "temperature", "belief_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.belief_top_k is not None and self.belief_top_k < 1:
            raise ValueError(f"belief_top_k: must be >= 1 or None, got {self.belief_top_k}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key: must not be blank (leave it out for no key)")
        if self.beliefs is not None:
            parse_belief_set(self.beliefs, "beliefs")

    def resolved_api_key(self) -> str | None:
        """The key requests must send: ``api_key``, else the variable ``api_key_env``."""
        if self.api_key:
            return self.api_key
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def model_name(self) -> str:
        """What ``/v1/models`` lists and requests name: for ``runs/gdpo/final``, ``gdpo``."""
        if self.served_model_name:
            return self.served_model_name
        path = Path(self.model)
        if path.name == "final" and path.parent.name:
            return path.parent.name
        return path.name if path.is_dir() else self.model


def parse_belief_set(value: Any, where: str = "beliefs") -> tuple[Belief, ...]:
    """A belief set from ``"1:Oppose,2:Support"`` or ``[{"class_id": 1, "description":
    "Oppose"}, ...]``; ValueError naming ``where`` when it is not one."""
    if isinstance(value, str):
        items: list[Any] = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            class_id, _, description = part.partition(":")
            if not class_id.strip().isdigit():
                raise ValueError(f"{where}: {part!r} is not CLASS:DESCRIPTION "
                                 "(e.g. 1:Oppose,2:Support)")
            items.append({"class_id": int(class_id), "description": description.strip()})
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise ValueError(f"{where}: expected a list of {{class_id, description}} or "
                         f"'1:Oppose,2:Support', got {type(value).__name__}")
    try:
        beliefs = tuple(b if isinstance(b, Belief) else _belief(b) for b in items)
    except RecordError as exc:
        raise ValueError(f"{where}: {exc.reason}") from None
    if len(beliefs) < 2:
        raise ValueError(f"{where}: a belief set needs at least two beliefs, got {len(beliefs)}")
    ids = [b.class_id for b in beliefs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: class ids must be unique, got {ids}")
    return beliefs


def _belief(item: Any) -> Belief:
    if not isinstance(item, Mapping) or "class_id" not in item or (
            set(item) - {"class_id", "description"}):
        raise RecordError("beliefs", f"each belief is {{class_id, description}}, got {item!r}")
    return Belief(item["class_id"], item.get("description", ""))
