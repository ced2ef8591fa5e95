from __future__ import annotations

import json
import time

import pytest
import torch

from pluralign.models import (
    ModelConfig,
    ModelLoadError,
    count_parameters,
    find_bundled_gguf,
    load_model,
)
from pluralign.models.registry import TINY_SHAPE


def test_tiny_model_shape_and_tokenizer(tiny_lm):
    model, tokenizer = tiny_lm
    assert model.config.num_hidden_layers == TINY_SHAPE["num_hidden_layers"]
    assert model.config.hidden_size == TINY_SHAPE["hidden_size"]
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.pad_token == "<|im_end|>"
    # A real BPE tokenizer: a sentence becomes a few word-level tokens, round-trips exactly.
    ids = tokenizer("The European Union is good.", add_special_tokens=False).input_ids
    assert 4 <= len(ids) <= 8
    assert tokenizer.decode(ids) == "The European Union is good."


def test_tiny_model_forward_gives_logits_over_vocab(tiny_lm):
    model, tokenizer = tiny_lm
    batch = tokenizer(["hello world", "a"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_tiny_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = load_model("tiny", seed=1, device="cpu")
    after = torch.rand(1)
    b, _ = load_model("tiny", seed=1, device="cpu")
    c, _ = load_model("tiny", seed=2, device="cpu")
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)
    assert torch.equal(before, after)


def test_lora_option_trains_only_adapters():
    model, _ = load_model("tiny", lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # rank 4 on q (64->64) and v (64->32 with 2 kv heads of 16) in 2 layers
    expected = 2 * (4 * (64 + 64) + 4 * (64 + 32))
    assert count_parameters(model, trainable_only=True) == expected
    assert model.peft_config["default"].base_model_name_or_path == "tiny"


def test_lora_bad_target_lists_module_names():
    with pytest.raises(ModelLoadError, match=r"LoRA could not be applied.*q_proj"):
        load_model("tiny", lora_r=2, lora_target_modules=["no_such_module"])


def test_save_and_load_local_folder(tmp_path, tiny_lm):
    model, tokenizer = tiny_lm
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, tok = load_model(str(tmp_path / "m"))
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(p, q), name
    assert len(tok) == len(tokenizer)


def test_saved_lora_adapter_folder_loads_with_its_base(tmp_path):
    model, tokenizer = load_model("tiny", lora_r=2)
    with torch.no_grad():  # make the adapter do something so we can see it was loaded
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    model.save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    assert json.loads(config_path.read_text())["base_model_name_or_path"] == "tiny"
    loaded, _ = load_model(str(tmp_path / "adapter"))
    batch = tokenizer(["one two three"], return_tensors="pt")
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_hub_id_loads_from_a_local_hf_cache(tmp_path, tiny_lm):
    """The Hub code path, exercised offline against a cache laid out as the Hub's."""
    model, tokenizer = tiny_lm
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--pluralign--tiny-test"
    snapshot = repo / "snapshots" / revision
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    loaded, _ = load_model("pluralign/tiny-test", cache_dir=str(tmp_path))
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_unknown_reference_explains_and_suggests(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model("smollm2-135", cache_dir=str(tmp_path))
    message = str(err.value)
    assert "not a keyword (smollm2-135m, tiny)" in message
    assert 'Did you mean "smollm2-135m"' in message


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="neither a transformers model folder"):
        load_model(str(tmp_path / "empty"))


def test_model_config_object_with_overrides():
    model, _ = load_model(ModelConfig(model="tiny", seed=3), dtype="bfloat16")
    assert model.dtype == torch.bfloat16


@pytest.mark.slow
def test_bundled_smollm2_converts_once_then_loads_fast_and_generates(tmp_path, monkeypatch):
    from pluralign.generation import generate_text

    monkeypatch.setenv("PLURALIGN_CACHE", str(tmp_path))
    assert find_bundled_gguf().name == "SmolLM2-135M-Instruct.Q4_1.gguf"

    started = time.perf_counter()
    model, tokenizer = load_model("smollm2-135m")
    first = time.perf_counter() - started
    assert count_parameters(model) == 134_515_008
    assert "quantization_config" not in model.config.to_dict()
    answer = generate_text(model, tokenizer, "What is the capital of France?", max_new_tokens=10)
    del model

    started = time.perf_counter()
    model, tokenizer = load_model("smollm2-135m")
    second = time.perf_counter() - started
    again = generate_text(model, tokenizer, "What is the capital of France?", max_new_tokens=10)

    assert answer == again == "The capital of France is Paris."
    assert list(tmp_path.glob("gguf/*/model/model.safetensors"))
    assert second < first / 2, (first, second)


def test_conversion_cache_key_follows_content_not_location(tmp_path):
    from pluralign.models.gguf import _cache_key

    a = tmp_path / "a" / "m.gguf"
    b = tmp_path / "b" / "m.gguf"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(b"GGUF" + bytes(range(256)) * 20)
    assert _cache_key(a) == _cache_key(b)
    b.write_bytes(b"GGUF" + bytes(range(256)) * 21)
    assert _cache_key(a) != _cache_key(b)


def test_adapter_trained_on_top_of_an_adapter_reloads(tmp_path):
    first, tokenizer = load_model("tiny", lora_r=2)
    with torch.no_grad():
        for name, param in first.named_parameters():
            if "lora_B" in name:
                param.fill_(0.02)
    first.save_pretrained(tmp_path / "sft")
    tokenizer.save_pretrained(tmp_path / "sft")
    # What training does for DPO from the SFT run: merge the SFT adapter, add a new one.
    merged, _ = load_model(str(tmp_path / "sft"))
    merged = merged.merge_and_unload()
    from pluralign.models import apply_lora

    second = apply_lora(merged, ModelConfig(model=str(tmp_path / "sft"), lora_r=2))
    with torch.no_grad():
        for name, param in second.named_parameters():
            if "lora_B" in name:
                param.fill_(-0.01)
    second.save_pretrained(tmp_path / "dpo")
    reloaded, _ = load_model(str(tmp_path / "dpo"))
    batch = tokenizer(["one two three"], return_tensors="pt")
    second.eval()
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, second(**batch).logits)


def test_lora_on_the_top_layers_only(tiny_lm):
    import copy

    from pluralign.models import ModelConfig, apply_lora

    model, _tokenizer = tiny_lm
    wrapped = apply_lora(copy.deepcopy(model), ModelConfig(
        model="tiny", lora_r=4, lora_target_modules=["all-linear"], lora_top_layers=1))
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1." in n for n in trainable)
    # Every linear layer of the top layer gets an adapter, as "all-linear" means.
    assert {n.split(".layers.1.")[1].split(".lora")[0] for n in trainable} == {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    with pytest.raises(ValueError, match="lora_top_layers"):
        ModelConfig(model="tiny", lora_r=4, lora_top_layers=-1)


def test_training_attention_picks_eager_only_where_it_was_measured_faster():
    from pluralign.models.loading import EAGER_ATTENTION_MAX_TOKENS, training_attention

    auto = ModelConfig(model="tiny")
    short, long = 134, EAGER_ATTENTION_MAX_TOKENS + 1
    assert training_attention(auto, device_type="cpu", bf16=True, longest_tokens=short) == "eager"
    assert training_attention(auto, device_type="cpu", bf16=True,
                              longest_tokens=EAGER_ATTENTION_MAX_TOKENS) == "eager"
    assert training_attention(auto, device_type="cpu", bf16=True, longest_tokens=long) is None
    assert training_attention(auto, device_type="cpu", bf16=False, longest_tokens=short) is None
    assert training_attention(auto, device_type="cuda", bf16=True, longest_tokens=short) is None
    chosen = ModelConfig(model="tiny", attn_implementation="sdpa")
    assert training_attention(chosen, device_type="cpu", bf16=True,
                              longest_tokens=short) == "sdpa"
    with pytest.raises(ValueError, match="attn_implementation"):
        ModelConfig(model="tiny", attn_implementation=" ")


def test_attention_kernels_give_the_same_logits_and_bad_names_fail_clearly():
    eager, _ = load_model("tiny", device="cpu", attn_implementation="eager")
    sdpa, _ = load_model("tiny", device="cpu", attn_implementation="sdpa")
    assert eager.config._attn_implementation == "eager"
    assert sdpa.config._attn_implementation == "sdpa"
    ids = torch.tensor([[5, 17, 300, 41, 9], [8, 8, 2, 77, 1000]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        want = sdpa(input_ids=ids, attention_mask=mask).logits
        got = eager(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelLoadError, match="attn_implementation: 'no_such_kernel'"):
        load_model("tiny", device="cpu", attn_implementation="no_such_kernel")
