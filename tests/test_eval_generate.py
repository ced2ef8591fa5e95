"""Belief-first generation, parsing of generated answers, and the sampled belief estimate."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from pluralign.beliefs.formats import OPINION_FORMAT
from pluralign.beliefs.readout import belief_distributions
from pluralign.beliefs.tokenize import belief_marker_ids, encode_prompt
from pluralign.data.records import Belief
from pluralign.data.toy import STANCES
from pluralign.eval.generate import (
    SamplingOptions,
    description_class,
    estimate_from_counts,
    generate_beliefs_first,
    load_sequence_format,
    marker_counts_from_texts,
    parse_generation,
    sampled_belief_distribution,
)


@pytest.mark.parametrize(
    ("text", "marker", "expected"),
    [
        ("4<Somewhat good job>The EU is fine.", "digit", (4, "Somewhat good job",
                                                          "The EU is fine.")),
        ("  2< Somewhat oppose >I lean against", "digit", (2, "Somewhat oppose", "I lean against")),
        ("<|belief_5|><Strongly support>Yes!", "special", (5, "Strongly support", "Yes!")),
        ("4Just a response", "digit", (4, None, "Just a response")),
        ("4<never closed description", "digit", (4, None, "<never closed description")),
        ("no marker <desc>resp", "digit", (None, None, "no marker <desc>resp")),
        ("<Somewhat>resp", "digit", (None, "Somewhat", "resp")),
        ("", "digit", (None, None, "")),
        # A malformed marker is no class; what follows still parses as <description>.
        ("<|belief_x|><a>b", "special", (None, "|belief_x|", "<a>b")),
    ],
)
def test_parse_generation_on_hand_written_strings(text, marker, expected):
    parsed = parse_generation(text, marker)
    assert (parsed.class_id, parsed.description, parsed.response) == expected


def test_parse_generation_without_description_reads_review_format():
    parsed = parse_generation("5Great film", has_description=False)
    assert (parsed.class_id, parsed.description, parsed.response) == (5, None, "Great film")


def test_description_class_exact_then_normalised_else_none():
    beliefs = STANCES
    assert description_class("Somewhat oppose", beliefs) == 2
    assert description_class("  somewhat   SUPPORT. ", beliefs) == 4
    assert description_class("Neutral", beliefs) is None
    assert description_class(None, beliefs) is None
    ambiguous = (Belief(1, "Yes"), Belief(2, "yes!"))
    assert description_class("YES", ambiguous) is None  # two normalised matches: no guess
    assert description_class("yes!", ambiguous) == 2  # the exact match wins


def test_belief_first_generation_gives_classes_from_the_belief_set(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = ["What do you think about nuclear power?", "Is remote work good?"]
    belief_sets = [STANCES, (Belief(0, "No stance"), Belief(3, "Neutral"))]
    options = SamplingOptions(temperature=1.0, max_new_tokens=6, seed=3)
    out = generate_beliefs_first(model, tokenizer, prompts, belief_sets, n=5, options=options)
    assert [len(g) for g in out] == [5, 5]
    for gens, beliefs in zip(out, belief_sets, strict=True):
        allowed = {b.class_id for b in beliefs}
        for g in gens:
            assert g.class_id in allowed
            assert g.text.startswith(str(g.class_id))
    again = generate_beliefs_first(model, tokenizer, prompts, belief_sets, n=5, options=options)
    assert [[g.text for g in gs] for gs in again] == [[g.text for g in gs] for gs in out]


def test_greedy_belief_is_the_argmax_of_the_reading(tiny_lm):
    model, tokenizer = tiny_lm
    prompt = "What do you think about school uniforms?"
    ids = encode_prompt(tokenizer, prompt, OPINION_FORMAT)
    markers = belief_marker_ids(tokenizer, [b.class_id for b in STANCES])
    probs = belief_distributions(model, [ids], [markers],
                                 pad_token_id=tokenizer.pad_token_id).probs[0]
    gens = generate_beliefs_first(model, tokenizer, [prompt], [STANCES], n=3,
                                  options=SamplingOptions(temperature=0.0, max_new_tokens=3))[0]
    best = STANCES[max(range(len(probs)), key=probs.__getitem__)].class_id
    assert [g.class_id for g in gens] == [best] * 3


def test_greedy_responses_keep_sampled_beliefs(tiny_lm):
    """response_temperature 0: the beliefs are still drawn at temperature 1 (the same draws as
    a fully sampled run), and each drawn belief's text is its greedy continuation."""
    model, tokenizer = tiny_lm
    prompt = "Is remote work good?"
    sampled = SamplingOptions(temperature=1.0, max_new_tokens=5, seed=7)
    greedy_text = SamplingOptions(temperature=1.0, max_new_tokens=5, seed=7,
                                  response_temperature=0.0)
    assert (sampled.text_temperature, greedy_text.text_temperature) == (1.0, 0.0)
    both = generate_beliefs_first(model, tokenizer, [prompt], [STANCES], n=12, options=sampled)[0]
    clean = generate_beliefs_first(model, tokenizer, [prompt], [STANCES], n=12,
                                   options=greedy_text)[0]
    assert [g.class_id for g in clean] == [g.class_id for g in both]
    assert len({g.class_id for g in clean}) >= 2  # still a distribution, not the argmax
    greedy = SamplingOptions(temperature=0.0, max_new_tokens=5)
    for g in clean:  # the greedy continuation of the same prefix, one class at a time
        only = generate_beliefs_first(model, tokenizer, [prompt], [(STANCES[
            [b.class_id for b in STANCES].index(g.class_id)],)], n=1, options=greedy)[0][0]
        assert g.text == only.text
    with pytest.raises(ValueError, match="response_temperature"):
        SamplingOptions(response_temperature=-0.1)


def test_sampled_estimate_agrees_with_the_one_pass_reading_when_the_bias_is_forced(fresh_tiny_lm):
    model, tokenizer = fresh_tiny_lm
    markers = belief_marker_ids(tokenizer, [1, 2, 4, 5])
    target = torch.tensor([0.1, 0.2, 0.3, 0.4])

    def force(module, args, output):
        # Marker logits set high, in the ratio of the target: ~all mass lands on them.
        output = output.clone()
        output[..., markers] = 40.0 + target.log()
        return output

    handle = model.lm_head.register_forward_hook(force)
    try:
        prompts = [encode_prompt(tokenizer, q) for q in ("Is tea good?", "Should taxes rise?")]
        reading = belief_distributions(model, prompts, [markers] * 2,
                                       pad_token_id=tokenizer.pad_token_id)
        n = 4000
        estimate = sampled_belief_distribution(model, tokenizer, prompts, [markers] * 2, n=n,
                                               seed=1)
    finally:
        handle.remove()
    assert estimate.off_belief == [0, 0]
    assert all(m > 0.999 for m in reading.mass)
    for probs, sampled, counts in zip(reading.probs, estimate.probs, estimate.counts, strict=True):
        assert sum(counts) == n
        for p, s in zip(probs, sampled, strict=True):
            assert abs(s - p) < 4 * math.sqrt(p * (1 - p) / n)  # within sampling error
        assert probs == pytest.approx(target.tolist(), abs=1e-5)


def test_sampled_estimate_counts_samples_that_are_no_marker(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = [encode_prompt(tokenizer, "Is tea good?")]
    markers = belief_marker_ids(tokenizer, [1, 2])
    estimate = sampled_belief_distribution(model, tokenizer, prompts, [markers], n=50)
    # An untrained model rarely emits a digit: the rest is counted apart, not dropped silently.
    assert estimate.off_belief[0] + sum(estimate.counts[0]) == 50
    if sum(estimate.counts[0]):
        assert sum(estimate.probs[0]) == pytest.approx(1.0)
    else:
        assert estimate.probs[0] is None


def test_estimate_from_api_texts():
    texts = ["4<Somewhat support>ok", "4<x>y", "1<Strongly oppose>no", "maybe", None]
    counts = marker_counts_from_texts(texts, [1, 2, 4, 5])
    assert counts == [1, 0, 2, 0]
    estimate = estimate_from_counts([counts, [0, 0, 0, 0]], n=5)
    assert estimate.probs[0] == pytest.approx([1 / 3, 0, 2 / 3, 0])
    assert estimate.off_belief == [2, 5]
    assert estimate.probs[1] is None  # nothing parsed: no distribution (never a made-up one)


def test_sequence_format_comes_from_the_trained_run(tmp_path):
    assert load_sequence_format(tmp_path) == OPINION_FORMAT
    (tmp_path / "pluralign_format.json").write_text(json.dumps(
        {"method": "gdpo", "belief_format": "special", "use_chat_template": False}))
    fmt = load_sequence_format(tmp_path)
    assert fmt.marker == "special" and not fmt.chat_template
    assert fmt.prompt_template == OPINION_FORMAT.prompt_template


def test_special_token_generation_parses_the_class(fresh_tiny_lm):
    from pluralign.beliefs.formats import SequenceFormat
    from pluralign.beliefs.tokenize import add_belief_tokens

    model, tokenizer = fresh_tiny_lm
    tokenizer = copy.deepcopy(tokenizer)  # the session tokenizer must keep its vocabulary
    add_belief_tokens(tokenizer, model, [1, 2, 4, 5])
    fmt = SequenceFormat(marker="special")
    gens = generate_beliefs_first(model, tokenizer, ["Is tea good?"], [STANCES], fmt=fmt, n=4,
                                  options=SamplingOptions(max_new_tokens=4))[0]
    for g in gens:
        assert g.text.startswith(f"<|belief_{g.class_id}|>")
        assert parse_generation(g.text, "special").class_id == g.class_id


@pytest.mark.parametrize("response, marker, has_description, expected", [
    ("4<Yes>4<Yes> I think so.", "digit", True, True),
    ("  12 <Somewhat agree> again", "digit", True, True),
    ("30 km/h is slow enough for town centres.", "digit", True, False),
    ("I agree, 4<Yes> is my answer.", "digit", True, False),
    ("<|belief|>3<Neutral>", "digit", True, True),
    ("<|belief_2|> another belief", "special", True, True),
    ("10/10 would watch again.", "digit", False, False),
    ("5<5 stars> shaped review", "digit", False, False),
    ("<|belief_5|>Great film.", "special", False, True),
])
def test_starts_with_marker_counts_leaked_markers_not_numbers(response, marker,
                                                              has_description, expected):
    from pluralign.eval.generate import starts_with_marker

    assert starts_with_marker(response, marker, has_description=has_description) is expected
