from __future__ import annotations

import pytest

from pluralign.registry import (
    ALL_REGISTRIES,
    MODELS,
    DuplicateNameError,
    Registry,
    RegistryError,
    UnknownNameError,
    did_you_mean,
    load_all,
)


def make_registry() -> Registry:
    reg = Registry("metric")

    @reg.register("jsd")
    def jsd():
        """Jensen-Shannon distance."""
        return 1

    reg.register("cbc", lambda: 2, help="class-belief consistency")
    return reg


def test_register_and_get_returns_the_object():
    reg = make_registry()
    assert reg.get("jsd")() == 1
    assert reg.get("cbc")() == 2
    assert reg.names() == ["cbc", "jsd"]
    assert "jsd" in reg and "rs" not in reg
    assert len(reg) == 2


def test_help_comes_from_docstring_or_argument():
    helps = {e.name: e.help for e in make_registry().entries()}
    assert helps == {"cbc": "class-belief consistency", "jsd": "Jensen-Shannon distance."}


def test_duplicate_name_is_an_error_naming_the_first_owner():
    reg = make_registry()
    with pytest.raises(DuplicateNameError, match=r'metric "jsd" is already registered.*jsd'):
        reg.register("jsd", lambda: 3)
    assert reg.get("jsd")() == 1  # the original entry survives


def test_unknown_name_suggests_close_matches_and_lists_known():
    reg = make_registry()
    with pytest.raises(UnknownNameError) as err:
        reg.get("jds")
    message = str(err.value)
    assert 'unknown metric "jds"' in message
    assert 'Did you mean "jsd"?' in message
    assert "Known metrics: cbc, jsd" in message
    assert isinstance(err.value, KeyError)


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownNameError) as err:
        make_registry().get("zzzzzz")
    assert "Did you mean" not in str(err.value)


def test_unregister_then_register_again():
    reg = make_registry()
    reg.unregister("cbc")
    assert reg.names() == ["jsd"]
    reg.register("cbc", lambda: 5)
    assert reg.get("cbc")() == 5
    with pytest.raises(UnknownNameError):
        reg.unregister("nope")


@pytest.mark.parametrize("bad", ["", " jsd", "jsd "])
def test_invalid_names_are_rejected(bad):
    with pytest.raises(RegistryError):
        Registry("metric").register(bad, lambda: 0)


def test_did_you_mean_orders_closest_first():
    hint = did_you_mean("gdpo-kot", ["gdpo-kto", "kto", "dpo"])
    assert hint.startswith(' Did you mean "gdpo-kto"')


def test_readme_example_suggestion():
    hint = did_you_mean("lora_rank", ["model", "lora_r", "lora_alpha", "lora_dropout"])
    assert hint == ' Did you mean "lora_r" or "lora_alpha" or "lora_dropout"?'


def test_load_all_registers_builtin_model_keywords():
    assert load_all() == []
    assert {"smollm2-135m", "tiny"} <= set(MODELS.names())
    assert set(ALL_REGISTRIES) == {"methods", "metrics", "judges", "builders", "models",
                                   "llm-backends", "reference-lines", "sequence-formats"}
    assert set(ALL_REGISTRIES["sequence-formats"].names()) == {
        "separated", "separated-options", "separated-marked-options", "marker-options", "paper",
        "reviews", "reviews-paper"}
    assert set(ALL_REGISTRIES["methods"].names()) == {
        "sft", "uniform-sft", "icf", "dpo", "gdpo", "gdpo-calibration", "gdpo-conditioned",
        "kto", "gdpo-kto"}
    assert set(ALL_REGISTRIES["metrics"].names()) == {"jsd", "cbc", "bpc", "rs"}
    assert set(ALL_REGISTRIES["llm-backends"].names()) == {"hf", "openai"}
