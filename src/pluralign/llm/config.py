"""``LLMConfig`` and ``make_backend``: pick and build a backend by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pluralign.config import YamlConfig, reject_non_finite
from pluralign.llm.base import LLMBackend
from pluralign.llm.hf import HFBackend
from pluralign.llm.openai_compat import (
    DEFAULT_API_KEY_ENV,
    OpenAIBackend,
    warn_ignored_backoff,
)
from pluralign.models.loading import DEFAULT_MODEL
from pluralign.registry import LLM_BACKENDS, did_you_mean

#: Backend kinds by name: ``LLMConfig.backend`` is looked up here.


@dataclass
class LLMConfig(YamlConfig):
    """Which language model answers requests, and how (cache, retries, concurrency)."""

    backend: str = field(
        default="hf",
        metadata={"help": "Backend kind: hf (a local Hugging Face model) or openai (any "
                          "OpenAI-compatible server)."},
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "hf: a model reference for load_model (keyword, folder, .gguf, Hub "
                          "id). openai: the model name the server knows."},
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": "openai: the server's base URL, e.g. http://127.0.0.1:8000/v1 "
                          "(default: the client's, i.e. $OPENAI_BASE_URL or api.openai.com)."},
    )
    api_key_env: str = field(
        default=DEFAULT_API_KEY_ENV,
        metadata={"help": "openai: NAME of the environment variable holding the API key (the "
                          "key itself never goes into configs); '' for servers without keys."},
    )
    max_concurrency: int = field(
        default=8, metadata={"help": "openai: most requests in flight at once."}
    )
    max_retries: int = field(
        default=4,
        metadata={"help": "openai: retries of a request after a transient error (connection, "
                          "timeout, 408, 409, 429, 5xx), made by the openai client, which waits "
                          "as the server's Retry-After says or backs off exponentially; other "
                          "errors (400, 401, 403, 404 ...) are never retried."},
    )
    timeout: float = field(
        default=60.0,
        metadata={"help": "openai: seconds per HTTP attempt before it is given up (then "
                          "retried); the openai client's timeout."},
    )
    retry_base_delay: float | None = field(
        default=None,
        metadata={"help": "Deprecated and ignored (warns when set): the openai client's own "
                          "backoff decides how long to wait between tries."},
    )
    retry_max_delay: float | None = field(
        default=None,
        metadata={"help": "Deprecated and ignored (warns when set): the openai client's own "
                          "backoff decides how long to wait between tries."},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the answer cache (llm_cache.sqlite); a re-run with the "
                          "same requests is answered from it. None disables caching."},
    )
    temperature: float = field(
        default=0.0,
        metadata={"help": "Default sampling temperature of requests that set none; 0 is greedy."},
    )
    max_tokens: int = field(
        default=256, metadata={"help": "Default cap on generated tokens per answer."}
    )
    seed: int | None = field(
        default=0,
        metadata={"help": "Default sampling seed (hf: torch seed of the batch; openai: sent as "
                          "'seed' unless None)."},
    )
    top_p: float = field(default=1.0, metadata={"help": "hf: nucleus sampling cut-off."})
    batch_size: int = field(
        default=8, metadata={"help": "hf: prompts generated together in one batch."}
    )
    device: str = field(
        default="auto", metadata={"help": "hf: device for the model (auto, cpu, cuda:0 ...)."}
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = field(
        default="float32", metadata={"help": "hf: weight precision."}
    )
    progress: bool = field(
        default=True,
        metadata={"help": "Show a progress bar when a batch of requests takes more than "
                          "progress_delay seconds."},
    )
    progress_delay: float = field(
        default=2.0, metadata={"help": "Seconds before the progress bar appears."}
    )

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if not self.backend.strip():
            raise ValueError("backend: a backend kind is required (hf or openai)")
        if self.backend not in LLM_BACKENDS.names():  # fail here, not at the first request
            raise ValueError(f"backend: unknown {self.backend!r}."
                             f"{did_you_mean(self.backend, LLM_BACKENDS.names())} Known: "
                             f"{', '.join(LLM_BACKENDS.names())}")
        if not self.model.strip():
            raise ValueError("model: a model is required")
        for name in ("max_concurrency", "max_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("max_retries", "temperature", "progress_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        # Kept so that configs written before the openai client took over retries still load.
        warn_ignored_backoff(stacklevel=4, retry_base_delay=self.retry_base_delay,
                             retry_max_delay=self.retry_max_delay)
        if self.timeout <= 0:
            raise ValueError(f"timeout: must be > 0, got {self.timeout}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")

    def common(self) -> dict[str, Any]:
        """The options every backend takes."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "cache_dir": self.cache_dir,
            "progress": self.progress,
            "progress_delay": self.progress_delay,
        }


def make_backend(config: LLMConfig | None = None, **overrides: Any) -> LLMBackend:
    """Build the backend ``config.backend`` names (``overrides`` replace config fields)."""
    config = config or LLMConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return LLM_BACKENDS.get(config.backend)(config)


@LLM_BACKENDS.register("hf")
def build_hf(config: LLMConfig) -> LLMBackend:
    """Local Hugging Face model through load_model (default: the bundled SmolLM2-135M)."""
    return HFBackend(config.model, device=config.device, dtype=config.dtype,
                     batch_size=config.batch_size, top_p=config.top_p, **config.common())


@LLM_BACKENDS.register("openai")
def build_openai(config: LLMConfig) -> LLMBackend:
    """Any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp, Ollama ...)."""
    return OpenAIBackend(
        config.model,
        base_url=config.base_url,
        api_key_env=config.api_key_env or None,
        max_concurrency=config.max_concurrency,
        max_retries=config.max_retries,
        timeout=config.timeout,
        **config.common(),
    )
