from __future__ import annotations

import torch

from pluralign.generation import encode_prompt, generate_text


def greedy_by_hand(model, input_ids: torch.Tensor, steps: int) -> list[int]:
    ids = input_ids.clone()
    out = []
    with torch.no_grad():
        for _ in range(steps):
            next_id = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(next_id)
            ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
    return out


def test_greedy_generation_matches_a_hand_written_argmax_loop(tiny_lm):
    model, tokenizer = tiny_lm
    ids = encode_prompt(tokenizer, "Is the EU good?", chat=False)["input_ids"]
    expected_ids = greedy_by_hand(model, ids, 6)
    if tokenizer.eos_token_id in expected_ids:  # generation stops at EOS
        expected_ids = expected_ids[: expected_ids.index(tokenizer.eos_token_id)]
    expected = tokenizer.decode(expected_ids, skip_special_tokens=True).strip()
    assert generate_text(model, tokenizer, "Is the EU good?", max_new_tokens=6,
                         chat=False) == expected


def test_chat_template_wraps_the_prompt(tiny_lm):
    _, tokenizer = tiny_lm
    text = tokenizer.decode(encode_prompt(tokenizer, "Hi?", chat=True)["input_ids"][0])
    assert text.endswith("<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n")
    plain = tokenizer.decode(encode_prompt(tokenizer, "Hi?", chat=False)["input_ids"][0])
    assert plain == "Hi?"


def test_sampling_is_seeded(tiny_lm):
    model, tokenizer = tiny_lm
    a = generate_text(model, tokenizer, "x", max_new_tokens=8, temperature=1.0, seed=5)
    b = generate_text(model, tokenizer, "x", max_new_tokens=8, temperature=1.0, seed=5)
    c = generate_text(model, tokenizer, "x", max_new_tokens=8, temperature=1.0, seed=6)
    assert a == b
    assert a != c
