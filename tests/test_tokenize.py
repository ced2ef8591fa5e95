"""Tokenisation of records with the real SmolLM2 tokenizer: offsets, markers, formats."""

from __future__ import annotations

import copy

import pytest

from pluralign.beliefs.formats import (
    CHAT_FORMAT,
    IGNORE_INDEX,
    OPINION_FORMAT,
    REVIEW_FORMAT,
    BeliefMarkerError,
    SequenceFormat,
)
from pluralign.beliefs.tokenize import (
    add_belief_tokens,
    belief_marker_id,
    belief_marker_ids,
    encode_prompt,
    tokenize_example,
)
from pluralign.data import Belief, GroupPreferenceExample

OPINION = GroupPreferenceExample(
    prompt="Is the European Union doing a good job?",
    beliefs=(Belief(4, "Somewhat good job"), Belief(2, "Somewhat bad job"), Belief(0, "DK")),
    target_distribution=[0.6, 0.3, 0.1],
    chosen_belief=2,
    rejected_belief=4,
    # Starts with '"' right after the description's '>': whole-string BPE would merge '>"'.
    chosen_response='"Not really." It has struggled.',
    rejected_response="It has done well.",
    group="US",
)

REVIEW = GroupPreferenceExample(
    prompt="Title: Heat (1995). Director: Michael Mann.",
    beliefs=tuple(Belief(r, f"{r} stars") for r in range(1, 6)),
    target_distribution=[0.05, 0.05, 0.1, 0.3, 0.5],
    chosen_belief=4,
    rejected_belief=1,
    chosen_response="Great heist film.<br />The diner scene is the best.",
    rejected_response="Too long.<br /><br />Skip it.",
    group="movie-123",
)


@pytest.fixture
def tokenizer(tiny_lm):
    return tiny_lm[1]


@pytest.fixture
def special_tokenizer(tiny_lm):
    """A private tokenizer copy with <|belief_0..5|> added (the shared one stays untouched)."""
    tokenizer = copy.deepcopy(tiny_lm[1])
    add_belief_tokens(tokenizer)
    return tokenizer


def _decode(tokenizer, ids, span):
    return tokenizer.decode(ids[span[0] : span[1]])


def test_digits_0_to_5_are_single_tokens_in_both_modes(tokenizer, special_tokenizer):
    digit_ids = belief_marker_ids(tokenizer, range(6), "digit")
    assert [tokenizer.decode([i]) for i in digit_ids] == ["0", "1", "2", "3", "4", "5"]
    special_ids = belief_marker_ids(special_tokenizer, range(6), "special")
    assert special_ids == list(range(len(tokenizer), len(tokenizer) + 6))
    assert special_tokenizer.decode([special_ids[3]]) == "<|belief_3|>"
    # Special markers are one token even inside running text.
    ids = special_tokenizer("<A><|belief_3|><x>", add_special_tokens=False)["input_ids"]
    assert special_ids[3] in ids


def test_add_belief_tokens_resizes_the_model_once(fresh_tiny_lm):
    model, shared_tokenizer = fresh_tiny_lm
    tokenizer = copy.deepcopy(shared_tokenizer)
    vocab = len(tokenizer)
    ids = add_belief_tokens(tokenizer, model)
    assert ids == list(range(vocab, vocab + 6))
    assert model.get_input_embeddings().weight.shape[0] == vocab + 6
    assert add_belief_tokens(tokenizer, model) == ids  # idempotent
    assert model.get_input_embeddings().weight.shape[0] == vocab + 6
    assert len(shared_tokenizer) == vocab


def test_opinion_offsets_point_at_marker_description_and_response(tokenizer):
    pair = tokenize_example(OPINION, tokenizer)
    chosen = pair["chosen"]
    ids = chosen["input_ids"]
    assert tokenizer.decode(ids[: chosen["prompt_length"]]) == (
        "<Q>Is the European Union doing a good job?<A>"
    )
    assert chosen["marker_position"] == chosen["prompt_length"]
    assert tokenizer.decode([ids[chosen["marker_position"]]]) == "2"
    assert _decode(tokenizer, ids, chosen["description_span"]) == "<Somewhat bad job>"
    assert _decode(tokenizer, ids, chosen["belief_span"]) == "2<Somewhat bad job>"
    assert _decode(tokenizer, ids, chosen["response_span"]) == (
        '"Not really." It has struggled.<|im_end|>'
    )
    assert tokenizer.decode(ids) == (
        "<Q>Is the European Union doing a good job?<A>2<Somewhat bad job>"
        '"Not really." It has struggled.<|im_end|>'
    )
    assert ids[-1] == tokenizer.eos_token_id
    # The trap the offsets avoid: in whole-string tokenisation '>"' is a single token.
    assert len(tokenizer('>"', add_special_tokens=False)["input_ids"]) == 1


def test_masks_and_labels_agree_with_offsets(tokenizer):
    chosen = tokenize_example(OPINION, tokenizer)["chosen"]
    n = len(chosen["input_ids"])
    start, end = chosen["belief_span"]
    assert chosen["belief_mask"] == [1 if start <= i < end else 0 for i in range(n)]
    r_start, r_end = chosen["response_span"]
    assert (r_start, r_end) == (end, n)
    assert chosen["response_mask"] == [1 if i >= r_start else 0 for i in range(n)]
    prompt_length = chosen["prompt_length"]
    assert chosen["labels"][:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert chosen["labels"][prompt_length:] == chosen["input_ids"][prompt_length:]
    assert chosen["attention_mask"] == [1] * n
    assert chosen["truncated"] is False


def test_belief_token_ids_and_targets_follow_belief_order(tokenizer):
    pair = tokenize_example(OPINION, tokenizer)
    expected = [tokenizer.convert_tokens_to_ids(c) for c in ("4", "2", "0")]
    assert pair["belief_token_ids"] == expected
    assert pair["target_distribution"] == [0.6, 0.3, 0.1]
    assert (pair["chosen_belief_index"], pair["rejected_belief_index"]) == (1, 0)
    assert pair["margin_group"] == "others"  # p* 0.3 of (0.6, 0.3, 0.1)
    assert (
        pair["prompt_input_ids"] == pair["chosen"]["input_ids"][: pair["chosen"]["prompt_length"]]
    )


def test_gdpo_rejected_carries_the_chosen_belief_dpo_the_rejected_one(tokenizer):
    gdpo = tokenize_example(OPINION, tokenizer, pairing="gdpo")["rejected"]
    dpo = tokenize_example(OPINION, tokenizer, pairing="dpo")["rejected"]
    assert _decode(tokenizer, gdpo["input_ids"], gdpo["belief_span"]) == "2<Somewhat bad job>"
    assert _decode(tokenizer, dpo["input_ids"], dpo["belief_span"]) == "4<Somewhat good job>"
    assert (gdpo["belief_class_id"], dpo["belief_class_id"]) == (2, 4)
    for rejected in (gdpo, dpo):
        assert _decode(tokenizer, rejected["input_ids"], rejected["response_span"]) == (
            "It has done well.<|im_end|>"
        )
    with pytest.raises(ValueError, match="pairing"):
        tokenize_example(OPINION, tokenizer, pairing="kto")


def test_review_format_has_no_description(tokenizer):
    pair = tokenize_example(REVIEW, tokenizer, REVIEW_FORMAT, pairing="dpo")
    chosen, rejected = pair["chosen"], pair["rejected"]
    start, end = chosen["description_span"]
    assert start == end == chosen["marker_position"] + 1
    assert tokenizer.decode(chosen["input_ids"][chosen["prompt_length"] :]) == (
        "4Great heist film.<br />The diner scene is the best.<|im_end|>"
    )
    assert tokenizer.decode(chosen["input_ids"][: chosen["prompt_length"]]) == REVIEW.prompt
    assert _decode(tokenizer, rejected["input_ids"], rejected["belief_span"]) == "1"
    assert _decode(tokenizer, rejected["input_ids"], rejected["response_span"]) == (
        "Too long.<br /><br />Skip it.<|im_end|>"
    )
    assert sum(chosen["belief_mask"]) == 1


def test_special_token_mode_offsets(special_tokenizer):
    fmt = SequenceFormat(marker="special")
    pair = tokenize_example(OPINION, special_tokenizer, fmt)
    chosen = pair["chosen"]
    ids = chosen["input_ids"]
    assert ids[chosen["marker_position"]] == special_tokenizer.convert_tokens_to_ids("<|belief_2|>")
    assert (
        _decode(special_tokenizer, ids, chosen["belief_span"]) == "<|belief_2|><Somewhat bad job>"
    )
    assert pair["belief_token_ids"] == [
        special_tokenizer.convert_tokens_to_ids(f"<|belief_{c}|>") for c in (4, 2, 0)
    ]


def test_chat_template_prompt(tokenizer):
    pair = tokenize_example(OPINION, tokenizer, CHAT_FORMAT)
    chosen = pair["chosen"]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": OPINION.prompt}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    ids = chosen["input_ids"]
    assert tokenizer.decode(ids[: chosen["prompt_length"]]) == rendered
    assert tokenizer.decode([ids[chosen["marker_position"]]]) == "2"
    assert _decode(tokenizer, ids, chosen["response_span"]) == (
        '"Not really." It has struggled.<|im_end|>'
    )
    with_system = encode_prompt(
        tokenizer, "Hi", SequenceFormat(chat_template=True, system_prompt="Be brief.")
    )
    assert tokenizer.decode(with_system).startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_multi_token_marker_is_an_error_that_suggests_special_tokens(tokenizer):
    with pytest.raises(BeliefMarkerError, match=r"'12' is 2 tokens.*--belief_format special"):
        belief_marker_id(tokenizer, 12)
    with pytest.raises(BeliefMarkerError, match=r"not exactly one token.*add_belief_tokens"):
        belief_marker_id(tokenizer, 3, "special")
    many = GroupPreferenceExample(
        prompt="p",
        beliefs=(Belief(10, "a"), Belief(11, "b")),
        target_distribution=[0.5, 0.5],
        chosen_belief=10,
        rejected_belief=11,
        chosen_response="x",
        rejected_response="y",
        group="g",
    )
    with pytest.raises(BeliefMarkerError, match="'10' is 2 tokens"):
        tokenize_example(many, tokenizer)


def test_max_length_truncates_the_response_only(tokenizer):
    full = tokenize_example(OPINION, tokenizer)["chosen"]
    limit = full["response_span"][0] + 2
    short = tokenize_example(OPINION, tokenizer, SequenceFormat(max_length=limit))["chosen"]
    assert short["truncated"] is True
    assert short["input_ids"] == full["input_ids"][:limit]
    assert short["response_span"] == (full["response_span"][0], limit)
    too_short = SequenceFormat(max_length=full["prompt_length"])
    with pytest.raises(ValueError, match="no room for a response"):
        tokenize_example(OPINION, tokenizer, too_short)


def test_offsets_line_up_with_model_logits(tiny_lm):
    """The logits at prompt_length - 1 predict the marker: both log-prob paths agree."""
    import torch

    from pluralign.beliefs.readout import token_logps_from_logits
    from pluralign.train.losses import gather_belief_logps

    model, tokenizer = tiny_lm
    pair = tokenize_example(OPINION, tokenizer, OPINION_FORMAT)
    chosen = pair["chosen"]
    input_ids = torch.tensor([chosen["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids).logits
    token_logps = token_logps_from_logits(logits, input_ids)
    belief_logps = gather_belief_logps(
        logits[:, chosen["prompt_length"] - 1], torch.tensor([pair["belief_token_ids"]])
    )
    marker_logp = token_logps[0, chosen["marker_position"]]
    torch.testing.assert_close(belief_logps[0, pair["chosen_belief_index"]], marker_logp)


# ---------------------------------------------------------------------- answer options


@pytest.fixture
def separator_tokenizer(tiny_lm):
    """A private tokenizer copy with the ``<|belief|>`` separator added."""
    from pluralign.beliefs.formats import SEPARATED_FORMAT
    from pluralign.beliefs.tokenize import add_format_tokens

    tokenizer = copy.deepcopy(tiny_lm[1])
    add_format_tokens(tokenizer, None, SEPARATED_FORMAT)
    return tokenizer


def test_options_format_lists_the_answer_options_before_the_question(separator_tokenizer):
    from pluralign.beliefs.formats import BELIEF_SEPARATOR, named_format

    fmt = named_format("separated-options")
    assert fmt.lists_options
    pair = tokenize_example(OPINION, separator_tokenizer, fmt)
    prompt_text = separator_tokenizer.decode(pair["prompt_input_ids"])
    assert prompt_text == ("<Q>Options: 4 = Somewhat good job; 2 = Somewhat bad job; 0 = DK.\n"
                           "Is the European Union doing a good job?<A>" + BELIEF_SEPARATOR)
    chosen = pair["chosen"]
    # The marker still follows the separator, and the prompt is what the pair shares.
    assert chosen["input_ids"][: chosen["prompt_length"]] == pair["prompt_input_ids"]
    assert separator_tokenizer.decode(chosen["input_ids"][chosen["marker_position"]]) == "2"
    start, end = chosen["description_span"]
    assert separator_tokenizer.decode(chosen["input_ids"][start:end]) == "<Somewhat bad job>"


def test_marked_options_list_each_option_as_the_belief_is_written_after_the_slot(
        separator_tokenizer):
    from pluralign.beliefs.formats import BELIEF_SEPARATOR, named_format

    fmt = named_format("separated-marked-options")
    assert fmt.lists_options
    pair = tokenize_example(OPINION, separator_tokenizer, fmt)
    prompt_ids = pair["prompt_input_ids"]
    assert separator_tokenizer.decode(prompt_ids) == (
        "<Q>Options: 4<Somewhat good job>; 2<Somewhat bad job>; 0<DK>\n"
        "Is the European Union doing a good job?<A>" + BELIEF_SEPARATOR)
    chosen = pair["chosen"]
    start, end = chosen["description_span"]
    # The drawn marker and its description are the very tokens its option holds in the list:
    # a copy, not a rewording ("2 = Somewhat bad job" has " Somewhat", not "<Somewhat").
    written = chosen["input_ids"][chosen["marker_position"]:end]
    assert start == chosen["marker_position"] + 1
    assert any(prompt_ids[i:i + len(written)] == written for i in range(len(prompt_ids)))
    plain = tokenize_example(OPINION, separator_tokenizer, named_format("separated-options"))
    assert not any(plain["prompt_input_ids"][i:i + len(written)] == written
                   for i in range(len(plain["prompt_input_ids"])))


def test_options_format_needs_the_beliefs_other_formats_ignore_them(separator_tokenizer):
    from pluralign.beliefs.formats import SEPARATED_FORMAT, named_format

    with pytest.raises(ValueError, match="pass the question's beliefs"):
        encode_prompt(separator_tokenizer, OPINION.prompt, named_format("separated-options"))
    plain = encode_prompt(separator_tokenizer, OPINION.prompt, SEPARATED_FORMAT)
    assert encode_prompt(separator_tokenizer, OPINION.prompt, SEPARATED_FORMAT,
                         beliefs=OPINION.beliefs) == plain
    assert not SEPARATED_FORMAT.lists_options


def test_option_template_is_checked_and_saved_with_the_run():
    from pluralign.beliefs.formats import named_format

    with pytest.raises(ValueError, match=r"option_template must contain \{description\}"):
        SequenceFormat(option_template="{class_id}")
    fmt = SequenceFormat(prompt_template="{options} | {prompt}", option_template="({class_id}) "
                         "{description}")
    assert SequenceFormat.from_info(fmt.to_info()) == fmt
    assert fmt.options_text(OPINION.beliefs) == (
        "(4) Somewhat good job; (2) Somewhat bad job; (0) DK")
    # Runs saved before options existed rebuild the default option template.
    info = named_format("separated-options").to_info()
    del info["option_template"]
    assert SequenceFormat.from_info(info) == named_format("separated-options")


def test_options_with_the_chat_template_is_refused_where_it_is_configured():
    import dataclasses

    from pluralign.beliefs.formats import named_format
    from pluralign.train.config import TrainConfig

    # The chat template replaces prompt_template: the options would silently vanish.
    with pytest.raises(ValueError, match="cannot use the chat template"):
        dataclasses.replace(named_format("separated-options"), chat_template=True)
    with pytest.raises(ValueError, match=r"sequence_format separated-options: .*chat template"):
        TrainConfig(train_file="t.jsonl", sequence_format="separated-options",
                    use_chat_template=True)
    with pytest.raises(ValueError, match=r"sequence_format: .*\(or auto\)"):
        TrainConfig(train_file="t.jsonl", sequence_format="separatd")
    assert TrainConfig(train_file="t.jsonl", use_chat_template=True).use_chat_template


def test_marker_options_are_given_after_the_marker_and_read_by_no_loss(separator_tokenizer):
    from pluralign.beliefs.formats import BELIEF_SEPARATOR, SEPARATED_FORMAT, named_format

    fmt = named_format("marker-options")
    pair = tokenize_example(OPINION, separator_tokenizer, fmt)
    plain = tokenize_example(OPINION, separator_tokenizer, SEPARATED_FORMAT)
    # Everything through the belief slot is the separated format's: the options come later.
    assert pair["prompt_input_ids"] == plain["prompt_input_ids"]
    assert separator_tokenizer.decode(pair["prompt_input_ids"]).endswith("<A>" + BELIEF_SEPARATOR)
    chosen = pair["chosen"]
    p = chosen["prompt_length"]
    assert separator_tokenizer.decode(chosen["input_ids"][p]) == "2"
    start, end = chosen["options_span"]
    assert start == p + 1
    assert separator_tokenizer.decode(chosen["input_ids"][start:end]) == (
        "(Options: 4 = Somewhat good job; 2 = Somewhat bad job; 0 = DK)")
    d_start, d_end = chosen["description_span"]
    assert d_start == end
    assert separator_tokenizer.decode(chosen["input_ids"][d_start:d_end]) == "<Somewhat bad job>"
    # Given text: no label, not in the belief mask; marker and description are.
    assert all(chosen["labels"][i] == IGNORE_INDEX for i in range(start, end))
    assert chosen["labels"][p] == chosen["input_ids"][p]
    assert chosen["labels"][d_start:] == chosen["input_ids"][d_start:]
    assert [i for i, m in enumerate(chosen["belief_mask"]) if m] == [p, *range(d_start, d_end)]
    assert chosen["belief_span"] == (p, d_end)
    assert plain["chosen"]["options_span"] == (p + 1, p + 1)
    with pytest.raises(ValueError, match="pass the question's beliefs"):
        from pluralign.beliefs.tokenize import build_sequence

        build_sequence(separator_tokenizer, pair["prompt_input_ids"], 2, "Somewhat bad job",
                       "x", fmt)
    assert SequenceFormat.from_info(fmt.to_info()) == fmt
    with pytest.raises(ValueError, match=r"marker_options_template must contain \{options\}"):
        SequenceFormat(marker_options_template="(Options)")
