"""Reviews on both shared movie files, mmoqa conversion on a local file, belief mining on
hh_rlhf rows against a scripted server, validate/stats, and the `pluralign data` CLI."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from data_llm_server import ScriptedServer, stub_backend
from pluralign.cli.data import data_app
from pluralign.data import GroupPreferenceExample, read_examples
from pluralign.data.builders import (
    MiningConfig,
    MmoqaConfig,
    ReviewsConfig,
    build_mining,
    build_mmoqa,
    build_reviews,
    dataset_stats,
    validate_file,
)
from pluralign.data.builders.mining import split_transcript
from pluralign.data.builders.prompts import parse_statement

runner = CliRunner()


# ------------------------------------------------------------------ reviews


@pytest.mark.parametrize("name,movies,kept,reviews", [
    ("movies_and_tv_5core_sample.jsonl", 11, 11, 999),
    ("movies_and_tv_2018_sample.jsonl", 67, 19, 633),
])
def test_reviews_on_shared_files(shared_data, name, movies, kept, reviews):
    result = build_reviews(ReviewsConfig(reviews=str(shared_data / "movie_reviews" / name)))
    counts, skipped = result.report.counts, result.report.skipped
    assert (counts["movies"], counts["movies kept"], counts["reviews read"]) == (
        movies, kept, reviews)
    assert skipped["movie with fewer than 5 reviews"] + skipped[
        "movie whose reviews all share one rating"] == movies - kept
    examples = [e for split in result.splits.values() for e in split]
    assert len(examples) == counts["pairs"] > 0
    for e in examples:
        assert abs(sum(e.target_distribution) - 1) < 1e-9
        assert e.chosen_belief != e.rejected_belief
        assert e.target_probability(e.chosen_belief) > 0 and e.target_probability(
            e.rejected_belief) > 0
        assert e.class_ids == (1, 2, 3, 4, 5)
    split_movies = [{e.question_id for e in split} for split in result.splits.values()]
    assert not (split_movies[0] & split_movies[1]) and not (split_movies[0] & split_movies[2])


def test_reviews_metadata_prompt_and_empty_texts(tmp_path):
    rows = [{"asin": "A1", "overall": r, "reviewText": f"review {i}"}
            for i, r in enumerate([5, 5, 4, 1, 2])]
    rows += [{"asin": "A1", "overall": 3.0, "reviewText": "  "},
             {"asin": "B2", "overall": 5.0, "reviewText": "only one"}]
    reviews = tmp_path / "r.jsonl"
    reviews.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    meta = tmp_path / "m.jsonl"
    meta.write_text(json.dumps({"asin": "A1", "title": "Heat", "year": 1995,
                                "director": "Michael Mann", "genre": ["Crime", "Drama"]}) + "\n")
    result = build_reviews(ReviewsConfig(reviews=str(reviews), metadata=str(meta),
                                         split_by="example"))
    assert result.report.skipped["empty review text"] == 1
    assert result.report.skipped["movie with fewer than 5 reviews"] == 1
    examples = [e for split in result.splits.values() for e in split]
    assert len(examples) == 5
    # The paper's prompt shape (appendix D): title, year, director (Genre: ...).
    assert examples[0].prompt == "Heat, 1995, Michael Mann (Genre: Crime, Drama)."
    assert examples[0].metadata["sequence_format"] == "reviews"
    assert examples[0].target_distribution == (0.2, 0.2, 0.0, 0.2, 0.4)


# ------------------------------------------------------------------ mmoqa


def mmoqa_rows():
    base = {"question": "Is trade good?", "options": ["Very good", "Good", "Bad", "DK"],
            "selections": "{'US': [0.5, 0.2, 0.2, 0.1]}", "answers": "[]",
            "probabilities": [0.5, 0.2, 0.2, 0.1],
            "options_map": "{'Very good': 5, 'Good': 4, 'Bad': 2, 'DK': 0}"}
    rows = []
    for i in range(6):
        rows.append({**base, "prompt": f"Q{i}: trade?", "question": f"Is trade good? {i % 3}",
                     "accept_response": "Yes, it is great.", "reject_response": "No.",
                     "accept_choice": "Very good", "reject_choice": "Bad", "style": "Casual",
                     "accept_choice_id": 5, "reject_choice_id": 2})
    rows.append({**base, "prompt": "broken", "accept_response": "a", "reject_response": "b",
                 "accept_choice_id": 3, "reject_choice_id": 2})  # 3 is not a class here
    return rows


def test_mmoqa_conversion_of_a_local_file(tmp_path):
    path = tmp_path / "mmoqa_pk_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mmoqa_rows()), encoding="utf-8")
    result = build_mmoqa(MmoqaConfig(source=str(path)))
    assert result.report.counts["rows read"] == 7
    assert result.report.skipped["row that could not be converted"] == 1
    examples = [e for split in result.splits.values() for e in split]
    assert len(examples) == 6
    e = examples[0]
    assert e.group == "Pakistan" and e.class_ids == (0, 2, 4, 5)
    assert e.target_distribution == (0.1, 0.2, 0.2, 0.5)
    assert (e.chosen_belief, e.rejected_belief, e.style) == (5, 2, "Casual")
    assert e.belief(5).description == "Very good"
    split_q = [{x.question_id for x in split} for split in result.splits.values()]
    assert sum(len(q) for q in split_q) == 3  # 3 questions, each in one split
    assert "sequence_format" not in e.metadata  # opinions: the default format


def test_mmoqa_movie_review_records_name_the_reviews_format(tmp_path):
    from pluralign.beliefs.formats import records_format_name

    path = tmp_path / "movie_review_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mmoqa_rows()), encoding="utf-8")
    result = build_mmoqa(MmoqaConfig(source=str(path)))
    examples = [e for split in result.splits.values() for e in split]
    assert examples and examples[0].group == "movie-reviewers"
    # Training with sequence_format auto then writes {rating}{review}, as the paper does.
    assert records_format_name(examples) == "reviews"


# ------------------------------------------------------------------ mining


def mining_responder(prompt: str) -> str:
    if "format:\nPrinciple:" in prompt:
        reply = re.search(r"Reply A \(preferred\):\n(.*?)\n\nReply B", prompt, re.S).group(1)
        if len(reply) % 3 == 0:
            return "Principle: Do not help people do harmful or illegal things."
        if len(reply) % 3 == 1:
            return "Principle: Be polite and respectful to the user."
        return "I am not sure."  # unparsable: counted, never invented
    statement = re.search(r"\nStatement: (.*)\n", prompt).group(1)
    return "Agree." if "harm" in statement else "disagree"


def _mine(source, responder, **changes):
    server = ScriptedServer(responder).start()
    try:
        return build_mining(MiningConfig(source=str(source), max_examples=9, num_statements=2,
                                         **changes), stub_backend(server))
    finally:
        server.stop()


def test_mining_on_hh_rows(shared_data):
    source = shared_data / "hh_rlhf" / "harmless_base_test.jsonl.gz"
    result = _mine(source, mining_responder)
    report = result.report
    assert report.counts["pairs read"] == 9
    assert report.counts["principle requests"] == 9
    n_parsed = 9 - report.counts["principle parse failures"]
    assert 0 < n_parsed <= 9
    statements = report.details["statements"]
    assert sum(statements.values()) == n_parsed
    # Each stated principle labels its own example for its own cluster's statement.
    assert report.counts["labels from the example's own principle"] == n_parsed
    assert report.counts["label requests"] == 9 * len(statements) - n_parsed
    examples = [e for split in result.splits.values() for e in split]
    assert len(examples) == 9 * len(statements)
    for e in examples:
        harm = "harm" in e.metadata["statement"]
        own = len(e.chosen_response) % 3 == (0 if harm else 1)  # the responder's principle
        assert e.metadata["label_source"] == ("own principle" if own else "labeller")
        assert e.chosen_belief == (1 if harm or own else 0)
        assert e.prompt.startswith("Human:") and e.prompt.endswith("Assistant:")
    polite = [e for e in examples if "polite" in e.metadata["statement"]]
    n_own = sum(e.chosen_belief for e in polite)
    assert polite[0].target_distribution == pytest.approx(
        (1 - n_own / len(polite), n_own / len(polite)))
    assert not report.warnings  # the labeller's answers vary


def test_mining_paper_labelling_asks_for_every_example(shared_data):
    source = shared_data / "hh_rlhf" / "harmless_base_test.jsonl.gz"
    result = _mine(source, mining_responder, own_principle_agrees=False)
    statements = result.report.details["statements"]
    assert result.report.counts["label requests"] == 9 * len(statements)
    assert result.report.counts["labels from the example's own principle"] == 0
    for e in (e for split in result.splits.values() for e in split):
        agree = "harm" in e.metadata["statement"]
        assert e.chosen_belief == (1 if agree else 0)
        assert e.target_distribution == ((0.0, 1.0) if agree else (1.0, 0.0))
        assert e.metadata["label_source"] == "labeller"


def small_model_responder(prompt: str) -> str:
    """What the bundled SmolLM2-135M answered on the HH-RLHF run (prose principles, and
    "not relevant" to every label request)."""
    if "format:\nPrinciple:" in prompt:
        reply = re.search(r"Reply A \(preferred\):\n(.*?)\n\nReply B", prompt, re.S).group(1)
        if len(reply) % 2:
            return "A"
        return ("The principle that explains preferring A over B is that it is important to "
                f"be kind, as in reply {len(reply)}.")
    return "The statement is not relevant to the conversation."


def test_mining_with_small_model_answers_builds_own_principle_records(shared_data):
    # Reproduces the 0-record run: every label was "not relevant" (neutral). The examples'
    # own principles still give agree labels, and the card says the labeller said nothing.
    source = shared_data / "hh_rlhf" / "harmless_base_test.jsonl.gz"
    result = _mine(source, small_model_responder)
    report = result.report
    n_parsed = 9 - report.counts["principle parse failures"]
    assert 0 < n_parsed < 9
    assert report.counts["label parse failures"] == 0
    assert report.details["labeller answers"] == {"neutral": report.counts["label requests"]}
    assert any("answered 'neutral' to all" in w for w in report.warnings)
    examples = [e for split in result.splits.values() for e in split]
    assert len(examples) == report.counts["records"] == n_parsed
    assert all(e.chosen_belief == 1 and e.metadata["label_source"] == "own principle"
               and e.target_distribution == (0.0, 1.0) for e in examples)
    paper = _mine(source, small_model_responder, own_principle_agrees=False)
    assert paper.total == 0  # the paper's labelling alone gets nothing from this model
    assert paper.report.skipped["statement with no agree/disagree label"] == len(
        paper.report.details["statements"])


def test_split_transcript():
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help?\n\nAssistant: Sure."
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help?\n\nAssistant: No."
    assert split_transcript(chosen, rejected) == (
        "Human: hi\n\nAssistant: hello\n\nHuman: help?\n\nAssistant:", "Sure.", "No.")
    assert split_transcript(chosen, chosen) is None


# ------------------------------------------------------------------ validate / stats / CLI


def _record(chosen: int, **changes) -> dict:
    record = GroupPreferenceExample(
        prompt="p", beliefs=[{"class_id": 1, "description": "no"},
                             {"class_id": 5, "description": "yes"}],
        target_distribution=[0.3, 0.7], chosen_belief=chosen, rejected_belief=6 - chosen,
        chosen_response="a", rejected_response="b", group="G", question_id="q").to_dict()
    return {**record, **changes}


def test_validate_reports_every_bad_line_and_stats_count(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [_record(5), _record(1), _record(5, target_distribution=[0.3, 0.3]),
             _record(5, chosen_belief=9)]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{oops\n", encoding="utf-8")
    result = validate_file(path)
    assert result.valid == 2
    assert [p.split(": ", 2)[0] + ": " + p.split(": ", 2)[1] for p in result.problems] == [
        f"{path}:3: field 'target_distribution'", f"{path}:4: field 'chosen_belief'",
        f"{path}:5: invalid JSON"]
    stats = dataset_stats(read_examples_ok([*lines[:2], _record(5)], tmp_path))
    assert stats["examples"] == 3 and stats["questions"] == 1
    assert stats["majority chosen share"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats["groups"] == {"G": 3}


def read_examples_ok(records, tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return read_examples(path)


def test_cli_reviews_validate_stats(shared_data, tmp_path):
    out = tmp_path / "movies"
    source = shared_data / "movie_reviews" / "movies_and_tv_2018_sample.jsonl"
    result = runner.invoke(data_app, ["reviews", str(source), "--out", str(out),
                                      "--min-reviews", "10"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and (out / "README.md").is_file()
    ok = runner.invoke(data_app, ["validate", str(out / "train.jsonl")])
    assert ok.exit_code == 0 and "0 problems" in ok.output
    stats = runner.invoke(data_app, ["stats", str(out / "train.jsonl"), "--json"])
    data = json.loads(stats.output)
    assert data["examples"] == len(read_examples(out / "train.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_record(5, chosen_belief=9)) + "\n", encoding="utf-8")
    failed = runner.invoke(data_app, ["validate", str(bad)])
    assert failed.exit_code == 1 and f"{bad}:1: field 'chosen_belief'" in failed.output


def test_cli_opinions_against_scripted_server(shared_data, tmp_path):
    from test_data_opinions import respond

    server = ScriptedServer(respond).start()
    try:
        result = runner.invoke(data_app, [
            "opinions", "--source", str(shared_data / "globalopinionqa" / "dev_groups.jsonl"),
            "-g", "Pakistan", "--max-questions", "10", "--writer", "paper", "--styles", "2",
            "--pairs-per-question", "4", "--llm-backend", "openai", "--llm-model", "stub",
            "--base-url", server.url, "--api-key-env", "", "--out", str(tmp_path / "pk")])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "pk" / "build_report.json").read_text())
    kept = report["counts"]["questions kept"]
    assert kept >= 1 and f"wrote {kept * 4} records" in result.output
    assert report["counts"]["llm failures"] == 0


def test_every_command_documents_examples():
    for command in data_app.registered_commands:
        doc = command.callback.__doc__
        assert "Examples:" in doc and "pluralign data " in doc.split("Examples:")[1]
    bad = runner.invoke(data_app, ["reviews", "missing.jsonl", "--out", "x"])
    assert bad.exit_code != 0


def test_cli_fails_when_the_llm_gives_nothing_usable(shared_data, tmp_path):
    # Reproduces the run with the bundled 135M model: every answer unparsable, 0 records,
    # which used to exit 0 with empty split files.
    server = ScriptedServer(lambda prompt: "The American Dream: (1) Casual and Friendly").start()
    try:
        result = runner.invoke(data_app, [
            "opinions", "--source", str(shared_data / "globalopinionqa" / "dev_groups.jsonl"),
            "-g", "Pakistan", "--max-questions", "3", "--writer", "paper", "--styles", "1",
            "--pairs-per-question", "2", "--llm-backend", "openai", "--llm-model", "stub",
            "--base-url", server.url, "--api-key-env", "", "--out", str(tmp_path / "pk")])
    finally:
        server.stop()
    assert result.exit_code == 2
    assert "no records were built" in result.output and "style parse failures: " in result.output
    assert (tmp_path / "pk" / "README.md").is_file()  # the card stays, to diagnose


def test_parse_statement_reads_prose_answers_of_small_models():
    # The bundled 135M model answered "The principle that explains ... is that ..." on the
    # HH-RLHF run instead of "Principle: ...", so every answer was a parse failure.
    prose = ("The principle that explains preferring A over B is that you should not help "
             "people hurt others.")
    assert parse_statement(prose) == "you should not help people hurt others."
    assert parse_statement("Principle: Be honest.") == "Be honest."
    assert parse_statement("A") is None
    assert parse_statement("A: I'm not sure I'm ready to share a prank.") is None
