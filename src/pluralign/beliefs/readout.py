"""Reading beliefs from a model: per-token log-probs, and belief distributions.

The belief distribution is the softmax over the K belief-token logits at the
last prompt position (the reading the GDPO paper's JSD numbers correspond to);
the full-vocabulary probability mass on those K tokens is reported beside it,
because a model can rank beliefs well while putting little mass on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm


@dataclass
class BeliefReading:
    """Belief distributions of a batch of prompts."""

    probs: list[list[float]]  #: softmax over each prompt's K belief tokens
    mass: list[float]  #: full-vocabulary probability mass on those K tokens


@torch.no_grad()
def belief_distributions(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    belief_token_ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    progress: bool = False,
) -> BeliefReading:
    """Read the belief distribution of each prompt with one forward pass per batch.

    ``prompt_ids[i]`` is the tokenised prompt up to (not including) the belief
    marker; ``belief_token_ids[i]`` the K_i marker token ids of its beliefs.
    Prompts are left-padded with explicit position ids, so the last position is
    the last prompt token in every row and only its logits are computed.
    """
    if len(prompt_ids) != len(belief_token_ids):
        raise ValueError(
            f"{len(prompt_ids)} prompts but {len(belief_token_ids)} belief-token lists"
        )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs: list[list[float]] = []
    mass: list[float] = []
    starts = range(0, len(prompt_ids), batch_size)
    for start in tqdm(starts, desc="belief distributions", disable=not progress):
        batch = prompt_ids[start : start + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt) :] = torch.tensor(list(prompt))
            attention[row, width - len(prompt) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device), attention_mask=attention.to(device),
            position_ids=positions.to(device), use_cache=False, logits_to_keep=1,
        ).logits
        last = logits[:, -1].float()
        full = torch.log_softmax(last, dim=-1)
        for row, token_ids in enumerate(belief_token_ids[start : start + batch_size]):
            index = torch.tensor(list(token_ids), device=device)
            probs.append(torch.softmax(last[row, index], dim=-1).tolist())
            mass.append(float(full[row, index].exp().sum()))
    model.train(was_training)
    return BeliefReading(probs=probs, mass=mass)


def upcast_logits(logits: Tensor) -> Tensor:
    # log_softmax over a 50k vocabulary in bf16/fp16 loses too much precision.
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def token_logps_from_logits(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Per-token log-probs aligned with ``input_ids``: ``(B, T, V), (B, T) -> (B, T)``.

    ``out[:, t] = log_softmax(logits[:, t - 1])[input_ids[:, t]]``; ``out[:, 0] = 0``
    (the first token has no prediction).
    """
    logps = torch.log_softmax(upcast_logits(logits[:, :-1]), dim=-1)
    gathered = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return F.pad(gathered, (1, 0), value=0.0)


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """``(B, T), (B, T) -> (B,)``: sum of ``values`` where ``mask`` is 1."""
    return (values * mask.to(values.dtype)).sum(dim=-1)

