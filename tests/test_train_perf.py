"""The fast preference forward (compact LM head, shared prefixes) equals the plain one."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset

from pluralign.beliefs.formats import OPINION_FORMAT
from pluralign.data.toy import conflicting_opinions
from pluralign.models import apply_lora
from pluralign.models.loading import ModelConfig
from pluralign.train.dataset import preference_rows
from pluralign.train.logprobs import (
    PairRequest,
    pair_hidden_states,
    prefix_sharing_blockers,
    shared_prefix_lengths,
    token_logprobs,
)
from pluralign.train.preference import BeliefPreferenceCollator, GDPOConfig, GDPOTrainer


def _rows(tokenizer, pairing: str, seed: int = 5):
    return preference_rows(conflicting_opinions(3, 2, seed=seed), tokenizer, OPINION_FORMAT,
                           pairing=pairing)


def _batch(tokenizer, pairing: str):
    collator = BeliefPreferenceCollator(pad_token_id=tokenizer.pad_token_id,
                                        exclude_belief_from_preference=pairing == "gdpo")
    return collator(_rows(tokenizer, pairing))


def test_token_logprobs_values_and_grads_equal_a_full_log_softmax():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True).double()
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    weights = torch.randn(37, dtype=torch.float64)

    expected = torch.log_softmax(head(hidden), -1).gather(1, targets[:, None]).squeeze(1)
    (expected * weights).sum().backward()
    want = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    for tensor in (hidden, head.weight, head.bias):
        tensor.grad = None

    import pluralign.train.logprobs as logprobs

    original, logprobs.TILE_BYTES = logprobs.TILE_BYTES, 4 * 50 * 8  # 8-row chunks: 5 chunks
    try:
        got = token_logprobs(hidden, head, targets)
        (got * weights).sum().backward()
    finally:
        logprobs.TILE_BYTES = original
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    names = ("hidden", "weight", "bias")
    for grad, name, ref in zip([hidden.grad, head.weight.grad, head.bias.grad], names, want,
                               strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-6, msg=name)


def test_shared_prefix_lengths_stop_at_the_first_difference_and_keep_a_suffix():
    ids = torch.tensor([[1, 2, 3, 4, 0], [1, 2, 5, 6, 7], [7, 8, 9, 0, 0],
                        [1, 2, 3, 9, 0], [1, 2, 5, 6, 7], [7, 8, 9, 4, 0]])
    mask = (ids != 0).long()

    # Pair 1 is identical and pair 2's chosen row is all prefix: each stops one token short.
    assert shared_prefix_lengths(ids, mask).tolist() == [3, 4, 2]


@pytest.mark.parametrize("pairing", ["gdpo", "dpo"])
def test_shared_prefix_hidden_states_equal_the_plain_forward(tiny_lm, pairing):
    model, tokenizer = tiny_lm
    batch = _batch(tokenizer, pairing)
    shared = shared_prefix_lengths(batch["input_ids"], batch["attention_mask"])
    # The prompt is always shared; GDPO pairs also share the chosen belief span.
    assert (shared >= batch["prompt_lens"]).all()
    if pairing == "gdpo":
        assert (shared >= batch["prompt_lens"] + batch["chosen_belief_lens"]).all()
    model.eval()
    with torch.no_grad():
        plain = model.model(input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"]).last_hidden_state
        fast = pair_hidden_states(model.model, batch["input_ids"], batch["attention_mask"],
                                  shared)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(fast[real], plain[real], rtol=1e-5, atol=1e-5)


def _trainer(tmp_path, model, tokenizer, name: str, **flags) -> GDPOTrainer:
    settings = dict(
        output_dir=str(tmp_path / name), per_device_train_batch_size=6, report_to="none",
        use_cpu=True, max_steps=1, calibration_weight=1.0, belief_nll_weight=1.0, beta=0.1,
        precompute_ref_log_probs=False, gradient_checkpointing=False,
    )
    args = GDPOConfig(**{**settings, **flags})
    return GDPOTrainer(model=model, args=args, processing_class=tokenizer,
                       train_dataset=Dataset.from_list(_rows(tokenizer, "gdpo")))


def _loss_and_grads(trainer: GDPOTrainer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("flags", [
    {"compact_logprobs": True, "share_prefix": False},
    {"compact_logprobs": True, "share_prefix": True},
])
def test_gdpo_loss_and_grads_equal_trl_fused_head_path(tiny_lm, tmp_path, flags):
    base, tokenizer = tiny_lm
    lora = ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0, lora_dropout=0.0)
    torch.manual_seed(0)
    model = apply_lora(copy.deepcopy(base), lora)
    with torch.no_grad():  # non-zero LoRA B, so the policy differs from the reference
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    plain = _trainer(tmp_path, copy.deepcopy(model), tokenizer, "plain",
                     compact_logprobs=False, share_prefix=False)
    fast = _trainer(tmp_path, copy.deepcopy(model), tokenizer, "fast", **flags)
    assert not plain._compact and fast._compact and fast._share_prefix == flags["share_prefix"]

    want_loss, want_grads = _loss_and_grads(plain)
    got_loss, got_grads = _loss_and_grads(fast)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    assert want_grads and got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # the logged metrics (belief reading, margins) agree too
    for key in ("calibration/kl", "calibration/belief_nll", "loss/preference"):
        assert fast._metrics["train"][key][-1] == pytest.approx(
            plain._metrics["train"][key][-1], rel=1e-4, abs=1e-6), key


def test_share_prefix_config_checks():
    with pytest.raises(ValueError, match="share_prefix needs compact_logprobs"):
        GDPOConfig(output_dir="unused", use_cpu=True, compact_logprobs=False, share_prefix=True)
    with pytest.raises(ValueError, match="share_prefix needs disable_dropout"):
        GDPOConfig(output_dir="unused", use_cpu=True, disable_dropout=False)


def test_prefix_sharing_is_off_where_the_cache_cannot_be_shared(tiny_lm, tmp_path):
    base, tokenizer = tiny_lm
    assert prefix_sharing_blockers(base) == []
    model = apply_lora(copy.deepcopy(base), ModelConfig(model="tiny", lora_r=4))
    trainer = _trainer(tmp_path, model, tokenizer, "checkpointing", gradient_checkpointing=True)
    assert trainer._compact and not trainer._share_prefix
    windowed = copy.deepcopy(base)
    windowed.config.sliding_window = 16
    assert prefix_sharing_blockers(windowed) == ["sliding_window=16"]


@pytest.mark.parametrize("share_prefix", [False, True])
def test_reference_logps_through_compact_head_equal_trl_fused_head(tiny_lm, tmp_path,
                                                                    share_prefix):
    base, tokenizer = tiny_lm
    torch.manual_seed(0)
    model = apply_lora(copy.deepcopy(base), ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0,
                                                        lora_dropout=0.0))
    with torch.no_grad():  # the adapter changes the policy, so "adapter off" is visible
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    plain = _trainer(tmp_path, copy.deepcopy(model), tokenizer, "plain",
                     compact_logprobs=False, share_prefix=False)
    fast = _trainer(tmp_path, copy.deepcopy(model), tokenizer, "fast",
                    compact_logprobs=True, share_prefix=share_prefix)
    assert fast._reference_is_adapter_off_policy(fast.model)
    assert not plain._reference_is_adapter_off_policy(plain.model)
    batch = next(iter(fast.get_train_dataloader()))
    want = plain.compute_ref_log_probs(plain.model, dict(batch))
    got = fast.compute_ref_log_probs(fast.model, dict(batch))
    for got_half, want_half in zip(got, want, strict=True):
        assert got_half.shape == (batch["input_ids"].size(0) // 2,)
        torch.testing.assert_close(got_half, want_half, rtol=5e-5, atol=1e-3)  # sums of ~40 logps
    # the adapter is back on afterwards: the policy's log-probs differ from the reference's
    fast.model.eval()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        policy = fast.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            pair_logprobs=PairRequest(labels, None)).log_probs.sum(dim=1)
    assert (policy - torch.cat(got)).abs().max() > 1e-3


def _sft_trainer(tmp_path, model, tokenizer):
    from trl import SFTConfig

    from pluralign.train.dataset import sft_dataset
    from pluralign.train.sft import BeliefSFTTrainer

    args = SFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=6,
                     report_to="none", use_cpu=True, max_steps=1, gradient_checkpointing=False)
    data = sft_dataset(conflicting_opinions(3, 2, seed=5), tokenizer, OPINION_FORMAT)
    return BeliefSFTTrainer(model=model, args=args, processing_class=tokenizer,
                            train_dataset=data)


def test_sft_compact_nll_and_grads_equal_trl_fused_head(tiny_lm, tmp_path):
    from trl import SFTTrainer

    base, tokenizer = tiny_lm
    torch.manual_seed(0)
    model = apply_lora(copy.deepcopy(base), ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0,
                                                        lora_dropout=0.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    trainer = _sft_trainer(tmp_path, model, tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert trainer._compact_nll_applies(batch)
    results = {}
    for name, compute in (("trl", lambda: SFTTrainer.compute_loss(trainer, trainer.model,
                                                                     dict(batch))),
                          ("compact", lambda: trainer.compute_loss(trainer.model, dict(batch)))):
        trainer.model.train()
        trainer.model.zero_grad()
        loss = compute()
        loss.backward()
        results[name] = (loss.detach(), {n: p.grad.clone() for n, p in
                                         trainer.model.named_parameters() if p.grad is not None})
    (want_loss, want_grads), (got_loss, got_grads) = results["trl"], results["compact"]
    # a randomly initialised model: the NLL is far from zero, so a zero loss would fail here
    assert want_loss > 1.0
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    assert want_grads and got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert trainer._metrics["train"]["num_tokens"][-1] > 0


def test_sft_keeps_trls_path_where_the_loss_needs_every_logit(tiny_lm, tmp_path):
    base, tokenizer = tiny_lm
    trainer = _sft_trainer(tmp_path, copy.deepcopy(base), tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.args.loss_type = "dft"
    assert not trainer._compact_nll_applies(batch)
