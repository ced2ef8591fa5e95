"""The per-belief response writer of the opinions builder: its parsers on answers the bundled
SmolLM2-135M really gave, config checks, and full builds on a slice of the shared
GlobalOpinionQA file against a scripted OpenAI-compatible server."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

import pytest
from typer.testing import CliRunner

from data_llm_server import ScriptedServer, scripted_backend
from openai_stub_server import Reply
from pluralign.cli.data import data_app
from pluralign.data.builders import OpinionsConfig, build_opinions, load_option_map
from pluralign.data.builders.prompts import (
    clean_response,
    fits_only_its_question,
    parse_label,
    parse_paraphrase,
)
from pluralign.data.builders.writers import FRAMINGS, RESPONSE_WRITERS

FAIL_MARK, GARBAGE_MARK, EMPTY_MARK, SAME_MARK = (
    "FAIL-THIS", "GARBAGE-THIS", "EMPTY-THIS", "SAME-THIS")
PARAPHRASE = re.compile(r"^Here is a survey question:\n(.*)\n\nHow would a (\w+) person ask",
                        re.S)
RESPONSE = re.compile(r"^Question: (.*)\nWrite one or two sentences answering it from the "
                      r"view: '(.*)'\.$", re.S)
US_QUESTION = ("(Now/And thinking about the American people...) Which of these characteristics "
               "do you associate with the American people?...Aggressive...Do you associate "
               "this with the American people or not?")


# ------------------------------------------------------------------ parsers


LEADER_QUESTION = ("(For each, tell me how much confidence you have in each leader to do the "
                   "right thing regarding world affairs — a lot of confidence, some "
                   "confidence, not too much confidence or no confidence at all.)..")


@pytest.mark.parametrize("answer,original,expected", [
    # Answers of the bundled model to the paraphrase prompt (greedy decoding).
    ('A casual person would ask, "How much confidence do you have in the Chinese President Xi '
     'Jinping to do the right thing regarding world affairs?"', LEADER_QUESTION,
     "How much confidence do you have in the Chinese President Xi Jinping to do the right "
     "thing regarding world affairs?"),
    ('A formal person would ask:\n\n"May I ask, how much confidence do you have in me to do '
     'the right thing regarding world affairs?"\n\nThis is a formal question', LEADER_QUESTION,
     "May I ask, how much confidence do you have in me to do the right thing regarding world "
     "affairs?"),
    ("(I'm not sure if I can include this in a single response.)\n\n(1) How much do you "
     "associate being aggressive with the American people?\n(2) How much", US_QUESTION,
     "How much do you associate being aggressive with the American people?"),
    # A copied lead-in drops the item the question asks about ("Aggressive"): unusable.
    ('A casual person would likely ask, "Which of these characteristics do you associate '
     'with the American people?"', US_QUESTION, None),
    ("The American people are indeed a nation of contrasts.", US_QUESTION, None),  # no question
    ('A curious person would ask, "What is your favourite colour?"', US_QUESTION, None),
    (US_QUESTION, US_QUESTION, None),  # a copy of the question
])
def test_parse_paraphrase(answer, original, expected):
    assert parse_paraphrase(answer, original) == expected


CHINESE_ITEMS = ("Generous", "Greedy", "Honest")


def _chinese(item: str) -> str:
    return ("(Now/Thinking about the Chinese people...) Which of these characteristics do you "
            f"associate with the Chinese people?...{item}...Do you associate this with the "
            "Chinese people or not?")


def test_a_paraphrase_must_fit_its_own_question_best():
    questions = [_chinese(item) for item in CHINESE_ITEMS] + [
        "In your opinion, is it acceptable for the American government to monitor "
        "communications from...American citizens?",
        "In your opinion, is it acceptable for the American government to monitor "
        "communications from...Citizens of other countries?"]
    generous, greedy, _, citizens, foreigners = questions
    # The bundled model's formal paraphrase of every Chinese-people row: the item is gone.
    lead_in = "May I ask which of these characteristics do you associate with the Chinese people?"
    assert parse_paraphrase(lead_in, generous) == lead_in
    assert not fits_only_its_question(lead_in, generous, questions)
    kept = "Would you call the Chinese people generous?"
    assert fits_only_its_question(kept, generous, questions)
    assert not fits_only_its_question(kept, greedy, questions)
    # Word pairs tell "American citizens" from "the American government ... citizens".
    own = "Is it acceptable for the government to monitor American citizens?"
    assert fits_only_its_question(own, citizens, questions)
    assert not fits_only_its_question(own, foreigners, questions)
    assert fits_only_its_question(kept, generous, [generous])  # no other question: fits


@pytest.mark.parametrize("answer,expected", [
    ('Answer: "This is a very big problem. It requires significant attention. And more',
     "This is a very big problem. It requires significant attention."),
    ("I'm not very confident. I'm not very confident. I'm not very confident. Really.",
     "I'm not very confident. Really."),
    ("No confidence at all.", "No confidence at all."),
    ("The answer is 'Mostly agree'", "The answer is 'Mostly agree'"),  # its own quotes stay
    ("**Yes, I do.**", "Yes, I do."),
    ("The situation is complex.\n\nThe situation is complex.", "The situation is complex."),
    ('""', ""),
    ("   ", ""),
])
def test_clean_response(answer, expected):
    assert clean_response(answer) == expected


def test_clean_response_caps_length_at_a_boundary():
    long_sentence = "word " * 100
    cut = clean_response(long_sentence.strip() + ".", max_chars=60)
    assert cut.endswith("...") and len(cut) <= 63 and "  " not in cut
    two = clean_response("A short one. " + "b" * 50 + ".", max_chars=30)
    assert two == "A short one."


@pytest.mark.parametrize("answer,label", [
    # The bundled model's answers to the paper's label prompt: "not relevant" is neutral,
    # and "does not agree" is a disagreement, not an agreement.
    ("The statement is not relevant to the conversation.", "neutral"),
    ("No, the reply does not agree with the statement", "disagree"),
    ("It doesn\u2019t agree.", "disagree"),
    ("A. agree\n\nThe answer is: agree", "agree"),
    ("Disagree.", "disagree"),
    ("I'm not sure.", None),
])
def test_parse_label_reads_sentences(answer, label):
    assert parse_label(answer) == label


# ------------------------------------------------------------------ config


def test_writer_field_is_validated():
    assert OpinionsConfig().writer == "per-belief"
    assert set(RESPONSE_WRITERS) == {"framed", "paper", "per-belief"}
    with pytest.raises(ValueError, match=r'writer: unknown response writer "per_belief"\. '
                                         r'Did you mean "per-belief"'):
        OpinionsConfig(writer="per_belief")
    with pytest.raises(ValueError, match="n_styles: the per-belief writer has 6 styles"):
        OpinionsConfig(n_styles=7)
    assert OpinionsConfig(writer="paper", n_styles=7).n_styles == 7
    with pytest.raises(ValueError, match="max_tokens"):
        OpinionsConfig(max_tokens=0)
    loaded = OpinionsConfig.load(None, ["--writer", "paper", "--temperature", "0.5"])
    assert (loaded.writer, loaded.temperature) == ("paper", 0.5)


# ------------------------------------------------------------------ full builds


def responder():
    """Scripted answers; the first response to the formal EMPTY question is empty, and every
    belief of the casual SAME question gets the same response."""
    lock, empty_sent = threading.Lock(), []

    def respond(prompt: str) -> Reply | str:
        if (match := PARAPHRASE.match(prompt)) is not None:
            question, style = match.groups()
            if FAIL_MARK in question:
                return Reply(status=400)
            if GARBAGE_MARK in question or style == "curious":
                return "Sure! Here is a friendly version for you."  # no question: unusable
            # The mark (first word) and the question's end, where a Pew question names
            # its item: a paraphrase fitting its own question only.
            words = question.split()[:1] + question.replace("?", ",").split()[-12:]
            words = " ".join(words).rstrip("?.!,;: ")
            return f'A {style} person would ask, "So ({style}), {words}?"'
        question, belief = RESPONSE.match(prompt).groups()
        if EMPTY_MARK in question and question.startswith("So (formal)"):
            with lock:
                if not empty_sent:
                    empty_sent.append(belief)
                    return '""'
        if SAME_MARK in question and question.startswith("So (casual)"):
            return "It depends."
        return f'Answer: "I think {belief}. That is my view. A third sentence."'

    respond.empty_sent = empty_sent
    return respond


@pytest.fixture
def goqa_slice(shared_data, tmp_path):
    """25 United States rows; four mapped ones are marked for the scripted LLM."""
    option_map = load_option_map()
    rows = [json.loads(line) for line in
            (shared_data / "globalopinionqa" / "dev_groups.jsonl").open(encoding="utf-8")]
    us = [r for r in rows if r["group"] == "United States"][:25]
    mapped = [r for r in us if all(o in option_map for o in r["options"])]
    for row, mark in zip(mapped, (FAIL_MARK, GARBAGE_MARK, EMPTY_MARK, SAME_MARK),
                         strict=False):
        row["question"] = f"{mark} {row['question']}"
    path = tmp_path / "us.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in us), encoding="utf-8")
    return path, len(mapped)


def _build(path, seed=3, **changes):
    respond = responder()
    with scripted_backend(respond) as (backend, _):
        settings = dict(source=str(path), groups=["United States"], n_styles=3,
                        pairs_per_question=10, seed=seed)
        config = OpinionsConfig(**{**settings, **changes})
        return build_opinions(config, backend), respond


def test_per_belief_build_counts_every_fallback_and_failure(goqa_slice):
    path, n_mapped = goqa_slice
    result, respond = _build(path)
    counts = result.report.counts
    assert counts["paraphrase requests"] == 3 * n_mapped
    assert counts["paraphrase llm failures"] == 3  # FAIL row, all three styles
    # "curious" never gives a question; the GARBAGE row gives none at all.
    assert counts["paraphrase parse failures"] == (n_mapped - 1) + 2
    assert counts["paraphrase fallbacks (original question used)"] == n_mapped + 4
    assert counts["duplicate paraphrases merged"] == 4  # FAIL and GARBAGE rows: 3 -> 1
    assert counts["empty responses"] == 1 and counts["response llm failures"] == 0
    assert counts["styles unusable (a belief without a response)"] == 1
    assert counts["styles unusable (two beliefs got the same response)"] == 1
    assert counts["questions kept"] == n_mapped and counts["llm requests"] == 0
    assert any("were unusable: the original question was used" in w
               for w in result.report.warnings)
    assert result.report.details["response writer"]["styles"] == ["casual", "formal", "curious"]

    examples = [e for split in result.splits.values() for e in split]
    assert len(examples) == n_mapped * 10 == counts["pairs"]
    styles_of = {}
    for e in examples:
        question = e.metadata["question"]
        styles_of.setdefault(question, set()).add(e.style)
        if e.style == "original":
            assert e.prompt == question
        else:
            assert e.prompt.startswith(f"So ({e.style}), ")
        for belief, response in ((e.chosen_belief, e.chosen_response),
                                 (e.rejected_belief, e.rejected_response)):
            assert response == f"I think {e.belief(belief).description}. That is my view."
    by_mark = {m: next(s for q, s in styles_of.items() if m in q)
               for m in (FAIL_MARK, GARBAGE_MARK, EMPTY_MARK, SAME_MARK)}
    assert by_mark[FAIL_MARK] <= {"original"} and by_mark[GARBAGE_MARK] <= {"original"}
    assert "formal" not in by_mark[EMPTY_MARK]  # its style lost a response: unusable
    assert "casual" not in by_mark[SAME_MARK]  # its responses do not tell beliefs apart
    assert all(e.chosen_response != e.rejected_response for e in examples)
    assert respond.empty_sent  # the empty answer was really sent
    assert Counter(e.style for e in examples).keys() <= {"casual", "formal", "original"}


def test_per_belief_build_is_deterministic_for_a_seed(goqa_slice):
    path, _ = goqa_slice
    first, _ = _build(path, seed=5)
    again, _ = _build(path, seed=5)
    other, _ = _build(path, seed=6)

    def dump(result):
        return {name: [e.to_dict() for e in split] for name, split in result.splits.items()}

    assert dump(first) == dump(again)
    assert dump(first) != dump(other)
    assert first.report.counts == again.report.counts


def _cli_opinions(path, out, *options: str):
    """``pluralign data opinions`` on ``path`` (two styles, three pairs) against the scripted
    server."""
    server = ScriptedServer(responder()).start()
    try:
        return CliRunner().invoke(data_app, [
            "opinions", "--source", str(path), "-g", "United States", "--styles", "2",
            "--pairs-per-question", "3", "--llm-backend", "openai", "--llm-model", "stub",
            "--base-url", server.url, "--api-key-env", "", "--out", str(out), *options])
    finally:
        server.stop()


def test_cli_per_belief_prints_fallbacks(goqa_slice, tmp_path):
    path, n_mapped = goqa_slice
    result = _cli_opinions(path, tmp_path / "us")
    assert result.exit_code == 0, result.output
    assert f"wrote {n_mapped * 3} records" in result.output
    # Two styles (casual, formal): only the FAIL and GARBAGE rows fall back.
    assert "paraphrase fallbacks (original question used): 4" in result.output
    assert "empty responses: 1" in result.output
    card = (tmp_path / "us" / "README.md").read_text(encoding="utf-8")
    assert "per-belief writer" in card and "## response writer" in card
    bad = CliRunner().invoke(data_app, ["opinions", "--source", str(path), "--writer", "nope",
                                        "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and 'unknown response writer "nope"' in bad.output


def test_framed_writer_keeps_the_question_and_shares_its_responses(goqa_slice):
    path, n_mapped = goqa_slice
    result, _ = _build(path, writer="framed", n_styles=2)
    counts = result.report.counts
    assert "paraphrase requests" not in counts  # no paraphrase is asked for
    examples = [e for split in result.splits.values() for e in split]
    n_beliefs = {e.metadata["question"]: len(e.beliefs) for e in examples}
    assert len(n_beliefs) == n_mapped == counts["questions kept"]
    assert counts["response requests"] == sum(n_beliefs.values())
    assert result.report.details["response writer"]["framings"] == {
        style: FRAMINGS[style] for style in ("casual", "formal")}
    responses: dict[tuple[str, int], set[str]] = {}
    for e in examples:
        assert e.prompt == FRAMINGS[e.style].format(question=e.metadata["question"])
        responses.setdefault((e.metadata["question"], e.chosen_belief), set()).add(
            e.chosen_response)
        belief = e.belief(e.chosen_belief).description
        assert e.chosen_response == f"I think {belief}. That is my view."
    assert {e.style for e in examples} == {"casual", "formal"}
    assert all(len(texts) == 1 for texts in responses.values())  # one answer per belief
    with pytest.raises(ValueError, match="n_styles: the framed writer has 6 styles"):
        OpinionsConfig(writer="framed", n_styles=7)


def test_cli_framed_writer_writes_its_card(goqa_slice, tmp_path):
    path, n_mapped = goqa_slice
    result = _cli_opinions(path, tmp_path / "us", "--writer", "framed")
    assert result.exit_code == 0, result.output
    assert f"wrote {n_mapped * 3} records" in result.output
    card = (tmp_path / "us" / "README.md").read_text(encoding="utf-8")
    assert "framed writer (one short response request per belief" in card
    assert FRAMINGS["formal"] in card  # the framings are on the card, verbatim
