"""Model loading: keywords, local folders, GGUF files, peft adapters, Hub ids, LoRA."""

from pluralign.models.gguf import BundledModelMissing, convert_gguf, find_bundled_gguf
from pluralign.models.loading import (
    DEFAULT_MODEL,
    ModelConfig,
    ModelLoadError,
    apply_lora,
    count_parameters,
    load_model,
    resize_token_embeddings,
)

__all__ = [
    "DEFAULT_MODEL",
    "BundledModelMissing",
    "ModelConfig",
    "ModelLoadError",
    "apply_lora",
    "convert_gguf",
    "count_parameters",
    "find_bundled_gguf",
    "load_model",
    "resize_token_embeddings",
]

# Importing the keyword module registers "smollm2-135m" and "tiny".
from pluralign.models import registry as _keywords  # noqa: F401
