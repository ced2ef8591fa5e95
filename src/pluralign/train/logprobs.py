"""Response log-probs of a preference batch, computed where it is cheap.

TRL's fused LM head (``fused_lm_head=True``) scores every position through
the vocabulary projection on devices without Triton (CPU included), then zeroes
the prompt and padding positions; its CPU fallback also spends a dozen
elementwise passes over every ``tokens x vocabulary`` tile. On the bundled
model that head is about 60% of a GDPO step. This module offers two exact
alternatives, installed on the causal LM by :func:`install_pair_forward` and
requested with ``model(..., pair_logprobs=PairRequest(labels, shared_lens))``:

- **compact scoring** (:func:`token_logprobs`): only positions whose label is
  not -100 go through the head, in chunks, with one logsumexp forward and a
  recomputed softmax backward (no ``(N, V)`` tensor is kept for backward);
- **prefix sharing** (:func:`pair_hidden_states`): the chosen and rejected
  sequences of a pair share the prompt (and, for GDPO, the chosen belief), so
  that prefix runs once and both continuations attend to its key/value cache.

Both give the hidden states and log-probs of the plain forward within float
tolerance (``tests/test_train_perf.py``). The forward goes through the model's
own ``forward`` so that DDP and peft wrappers see an ordinary call.
"""

from __future__ import annotations

import functools
import inspect
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers.utils import ModelOutput

#: Bytes of one ``tokens x vocabulary`` fp32 tile; bounds the head's working memory.
TILE_BYTES = 64 * 2**20
#: Logit transforms the compact head does not implement (the TRL path handles them).
UNSUPPORTED_LOGIT_OPTIONS = ("final_logit_softcapping", "logit_scale", "output_multiplier",
                             "lm_head_multiplier", "logits_scaling")


class _TokenLogProbs(torch.autograd.Function):
    """``log softmax(hidden @ weight.T + bias)[target]`` per row, chunked over rows."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                chunk: int) -> Tensor:
        logps = hidden.new_empty(hidden.size(0), dtype=torch.float32)
        log_z = torch.empty_like(logps)
        for start in range(0, hidden.size(0), chunk):
            rows = slice(start, start + chunk)
            logits = torch.nn.functional.linear(hidden[rows], weight, bias).float()
            log_z[rows] = torch.logsumexp(logits, dim=-1)
            logps[rows] = logits.gather(1, targets[rows, None]).squeeze(1) - log_z[rows]
        ctx.save_for_backward(hidden, weight, bias, targets, log_z)
        ctx.chunk = chunk
        return logps

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, targets, log_z = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        for start in range(0, hidden.size(0), ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            # d logp_t / d logits = onehot(t) - softmax: recompute the softmax in place.
            dlogits = torch.nn.functional.linear(hidden[rows], weight, bias).float()
            dlogits.sub_(log_z[rows, None]).exp_().mul_(-grad[rows, None])
            dlogits.scatter_add_(1, targets[rows, None], grad[rows, None].float())
            dlogits = dlogits.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[rows] = dlogits @ weight
            if grad_weight is not None:
                grad_weight.addmm_(dlogits.t().float(), hidden[rows].float())
            if grad_bias is not None:
                grad_bias.add_(dlogits.float().sum(0))
        return (grad_hidden,
                grad_weight.to(weight.dtype) if grad_weight is not None else None,
                grad_bias.to(bias.dtype) if grad_bias is not None else None, None, None)


def token_logprobs(hidden: Tensor, head: torch.nn.Linear, targets: Tensor) -> Tensor:
    """Log-probs of ``targets`` (N,) given ``hidden`` (N, H) under the LM head ``head``.

    Exact full-vocabulary log-softmax, computed in fp32 from the head's output in
    its compute dtype (the autocast dtype when autocast is on).
    """
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    weight = head.weight.to(dtype)
    bias = head.bias.to(dtype) if head.bias is not None else None
    chunk = max(1, TILE_BYTES // (4 * weight.size(0)))
    with torch.autocast(device, enabled=False):
        return _TokenLogProbs.apply(hidden.to(dtype), weight, bias, targets, chunk)


def shared_prefix_lengths(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Per pair, how many leading tokens the chosen row ``i`` and rejected row ``B + i`` share.

    Capped one short of the shorter sequence, so every row keeps a token after
    the prefix. Rows are right-padded (TRL's preference collator).
    """
    half = input_ids.size(0) // 2
    real = attention_mask.bool()
    same = (input_ids[:half] == input_ids[half:]) & real[:half] & real[half:]
    common = same.long().cumprod(dim=1).sum(dim=1)
    lengths = attention_mask.sum(dim=1)
    return torch.minimum(common, torch.minimum(lengths[:half], lengths[half:]) - 1).clamp(min=1)


def pair_hidden_states(backbone: Any, input_ids: Tensor, attention_mask: Tensor,
                       shared_lens: Tensor) -> Tensor:
    """Last hidden states ``(2B, T, H)`` of a ``[chosen; rejected]`` batch, prefix run once.

    The first ``shared_lens[i]`` tokens of pair ``i`` run in a ``(B, P)`` batch
    whose key/value cache both continuations (``(2B, S)``, with their true
    position ids) attend to; the result is laid out like the plain forward's
    (positions past a row's length hold unused values).
    """
    rows, width = input_ids.shape
    half, device = rows // 2, input_ids.device
    cols = torch.arange(width, device=device)
    prefix_width = int(shared_lens.max())
    prefix_mask = (cols[None, :prefix_width] < shared_lens[:, None]).long()
    prefix = backbone(input_ids=input_ids[:half, :prefix_width], attention_mask=prefix_mask,
                      position_ids=cols[None, :prefix_width].expand(half, -1), use_cache=True)
    cache = _twice(_output_cache(prefix), half, device)
    starts = torch.cat([shared_lens, shared_lens])
    suffix_lens = attention_mask.sum(dim=1) - starts
    offsets = torch.arange(int(suffix_lens.max()), device=device)
    positions = starts[:, None] + offsets[None, :]
    suffix_mask = (offsets[None, :] < suffix_lens[:, None]).long()
    suffix = backbone(
        input_ids=input_ids.gather(1, positions.clamp(max=width - 1)),
        attention_mask=torch.cat([prefix_mask.repeat(2, 1), suffix_mask], dim=1),
        position_ids=positions, use_cache=True, **{_cache_kwarg(backbone): cache},
    ).last_hidden_state
    size = suffix.size(-1)
    from_prefix = prefix.last_hidden_state.repeat(2, 1, 1).gather(
        1, cols.clamp(max=prefix_width - 1)[None, :, None].expand(rows, -1, size))
    from_suffix = suffix.gather(
        1, (cols[None, :] - starts[:, None]).clamp(0, offsets.numel() - 1)[..., None]
        .expand(-1, -1, size))
    return torch.where((cols[None, :] < starts[:, None])[..., None], from_prefix, from_suffix)


def _cache_kwarg(backbone: Any) -> str:
    # transformers 5.24 renamed the forward's `past_key_values` to `cache`.
    parameters = inspect.signature(backbone.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _twice(cache: Any, half: int, device: torch.device) -> Any:
    """The prefix cache for ``[chosen; rejected]``: every row twice, in that order."""
    layers = getattr(cache, "layers", None)
    if layers and all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        # repeat's backward is a sum; batch_select_indices' indexing scatters (slower).
        for layer in layers:
            layer.keys = layer.keys.repeat(2, 1, 1, 1)
            layer.values = layer.values.repeat(2, 1, 1, 1)
        return cache
    cache.batch_select_indices(torch.cat([torch.arange(half, device=device)] * 2))
    return cache


def _output_cache(output: Any) -> Any:
    for name in ("cache", "past_key_values"):
        cache = getattr(output, name, None)
        if cache is not None:
            return cache
    raise RuntimeError("the backbone returned no key/value cache for the shared prefix")


@dataclass
class PairRequest:
    """What :func:`install_pair_forward`'s forward computes for a ``[chosen; rejected]`` batch."""

    labels: Tensor  #: ``input_ids`` with -100 where no log-prob is wanted
    shared_lens: Tensor | None = None  #: per-pair shared prefix length; None runs every row whole


@dataclass
class PairOutput(ModelOutput):
    """``log_probs`` (2B, T - 1) aligned like TRL's fused head (0 where the label is -100)
    and the last hidden state (2B, T, H)."""

    log_probs: Tensor | None = None
    hidden: Tensor | None = None


def logit_options_in_use(causal_lm: Any) -> list[str]:
    """Logit transforms of ``causal_lm``'s config that the compact head does not apply."""
    config = causal_lm.config.get_text_config()
    return [name for name in UNSUPPORTED_LOGIT_OPTIONS if getattr(config, name, None) is not None]


def prefix_sharing_blockers(causal_lm: Any) -> list[str]:
    """Attention settings of ``causal_lm`` under which the shared-prefix cache is not used.

    A sliding window would have to apply to the concatenated prefix and suffix
    with padding between them; such models run every row whole instead.
    """
    config = causal_lm.config.get_text_config()
    blockers = []
    if (getattr(config, "sliding_window", None) is not None
            and getattr(config, "use_sliding_window", True)):
        blockers.append(f"sliding_window={config.sliding_window}")
    kinds = set(getattr(config, "layer_types", None) or []) - {"full_attention"}
    if kinds:
        blockers.append(f"layer types {sorted(kinds)}")
    return blockers


def install_pair_forward(causal_lm: Any) -> None:
    """Let ``causal_lm(..., pair_logprobs=PairRequest(...))`` return a :class:`PairOutput`.

    Other calls go to the forward it had (TRL's fused head, generation). Call
    on the transformers causal LM itself (inside peft), after TRL patched it.
    """
    if getattr(causal_lm, "_pluralign_pair_forward", False):
        return
    previous = causal_lm.forward

    @functools.wraps(previous)
    def forward(self: Any, *args: Any, pair_logprobs: PairRequest | None = None,
                **kwargs: Any) -> Any:
        if pair_logprobs is None:
            return previous(*args, **kwargs)
        return _pair_forward(self, pair_logprobs, kwargs["input_ids"], kwargs["attention_mask"])

    causal_lm.forward = types.MethodType(forward, causal_lm)
    causal_lm._pluralign_pair_forward = True


def _pair_forward(causal_lm: Any, request: PairRequest, input_ids: Tensor,
                  attention_mask: Tensor) -> PairOutput:
    backbone = causal_lm.base_model
    if request.shared_lens is None:
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                          use_cache=False).last_hidden_state
    else:
        hidden = pair_hidden_states(backbone, input_ids, attention_mask,
                                    request.shared_lens.to(input_ids.device))
    head = causal_lm.get_output_embeddings()
    hidden = hidden.to(head.weight.device)
    labels = request.labels[:, 1:].to(hidden.device)
    scored = labels != -100
    picked = token_logprobs(hidden[:, :-1][scored], head, labels[scored])
    log_probs = picked.new_zeros(scored.shape).masked_scatter(scored, picked)
    return PairOutput(log_probs=log_probs, hidden=hidden)
