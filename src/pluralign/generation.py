"""Plain text generation with a loaded model (belief-first generation builds on it)."""

from __future__ import annotations

from typing import Any


def encode_prompt(tokenizer: Any, prompt: str, *, chat: bool = True) -> dict[str, Any]:
    """Tokenise ``prompt``, through the chat template when asked and available."""
    if chat and getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    else:
        encoded = tokenizer(prompt, return_tensors="pt")
    return dict(encoded)


def generate_text(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    chat: bool = True,
) -> str:
    """Return the model's continuation of ``prompt`` (special tokens removed).

    ``temperature=0`` decodes greedily, so the result is deterministic.
    """
    import torch

    inputs = {k: v.to(model.device) for k, v in encode_prompt(tokenizer, prompt, chat=chat).items()}
    sampling = temperature > 0
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sampling}
    if sampling:
        options.update(temperature=temperature, top_p=top_p)
    else:  # keep generation_config's sampling defaults from warning about greedy mode
        options.update(temperature=None, top_p=None, top_k=None)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        output = model.generate(
            **inputs, pad_token_id=tokenizer.pad_token_id, **options
        )
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
