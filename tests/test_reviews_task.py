"""The review task as the paper runs it (issue 16, item 3).

Review records train as ``{rating}{review}`` (the ``reviews`` format, named in
every record's metadata) rather than ``5<5 stars>review``; the appendix-H
three-class rating judge is selectable from ``pluralign eval``; the optional
metadata file describes movies as the paper's prompts do, and a bad line stops
the build naming its file, line and field.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import re

import pytest
from typer.testing import CliRunner

from openai_stub_server import Reply, StubServer
from pluralign.beliefs.formats import (
    BELIEF_SEPARATOR,
    OPINION_FORMAT,
    REVIEWS_PAPER_FORMAT,
    named_format,
    resolve_format_name,
)
from pluralign.beliefs.tokenize import add_format_tokens, tokenize_example
from pluralign.cli.data import data_app
from pluralign.data.builders import ReviewsConfig, build_reviews
from pluralign.data.builders.cards import BuildReport
from pluralign.data.builders.reviews import MetadataError, load_metadata, movie_prompt
from pluralign.data.records import read_examples, write_examples
from pluralign.eval.evaluate import EvalConfig
from pluralign.eval.generate import parse_generation, untrained_format
from pluralign.eval.judges import (
    RATING_3CLASS_PROMPT,
    JudgeItem,
    RatingLLMJudge,
    make_judge,
    parse_three_class,
)
from pluralign.llm import OpenAIBackend
from pluralign.models import ModelConfig
from pluralign.registry import JUDGES, SEQUENCE_FORMATS
from pluralign.train.api import sequence_format, train
from pluralign.train.config import TrainConfig

runner = CliRunner()

#: Two movies, every rating present, and a review that starts with digits.
RATINGS = {"M1": [5, 5, 4, 1, 2, 3], "M2": [1, 1, 2, 5, 4, 3]}


def write_reviews(path):
    rows = [{"asin": asin, "overall": float(r), "reviewText": f"{asin} review {i}: {r} of 5."}
            for asin, ratings in RATINGS.items() for i, r in enumerate(ratings)]
    rows[0]["reviewText"] = "10/10 would watch again."
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def review_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("reviews")
    result = build_reviews(ReviewsConfig(reviews=str(write_reviews(root / "r.jsonl")),
                                         split_by="example", fractions=[1.0, 0.0, 0.0]))
    write_examples(root / "train.jsonl", result.splits["train"])
    return root


# ------------------------------------------------------------------ format


def test_review_records_tokenize_as_rating_then_review_by_default(review_files, tiny_lm):
    records = read_examples(review_files / "train.jsonl")
    assert {r.metadata["sequence_format"] for r in records} == {"reviews"}
    config = TrainConfig(train_file=str(review_files / "train.jsonl"))
    assert config.sequence_format == "auto"
    name = resolve_format_name(config.sequence_format, records)
    assert name == "reviews"
    fmt = sequence_format(dataclasses.replace(config, sequence_format=name))
    tokenizer = copy.deepcopy(tiny_lm[1])
    add_format_tokens(tokenizer, None, fmt)
    record = next(r for r in records if r.chosen_response.startswith("10/10"))
    chosen = tokenize_example(record, tokenizer, fmt)["chosen"]
    assert tokenizer.decode(chosen["input_ids"]) == (
        f"<Q>{record.prompt}<A>{BELIEF_SEPARATOR}510/10 would watch again.<|im_end|>")
    # The token before the rating is the separator, and it occurs nowhere else.
    separator = tokenizer.convert_tokens_to_ids(BELIEF_SEPARATOR)
    assert chosen["input_ids"][chosen["prompt_length"] - 1] == separator
    assert chosen["input_ids"].count(separator) == 1
    assert chosen["belief_span"] == (chosen["prompt_length"], chosen["prompt_length"] + 1)


def test_review_formats_are_registered_and_explicit_choices_win(review_files):
    assert {"separated", "paper", "reviews", "reviews-paper"} <= set(SEQUENCE_FORMATS.names())
    assert named_format("reviews-paper") == REVIEWS_PAPER_FORMAT
    assert named_format("reviews").description_template is None
    records = read_examples(review_files / "train.jsonl")
    assert resolve_format_name("separated", records) == "separated"
    assert resolve_format_name("auto", []) == "separated"
    mixed = [records[0], dataclasses.replace(records[1], metadata={"sequence_format": "paper"})]
    with pytest.raises(ValueError, match=r"several sequence formats \(paper, reviews\)"):
        resolve_format_name("auto", mixed, "train.jsonl")
    unknown = [dataclasses.replace(records[0], metadata={"sequence_format": "review"})]
    with pytest.raises(ValueError, match='Did you mean "reviews"'):
        resolve_format_name("auto", unknown)
    with pytest.raises(ValueError, match=r'sequence_format: .*Did you mean "reviews"'):
        TrainConfig(sequence_format="reviws")
    with pytest.raises(ValueError, match=r'sequence_format: .*Did you mean "reviews"'):
        ReviewsConfig(reviews="r.jsonl", sequence_format="reviws")


def test_models_pluralign_did_not_train_get_the_records_format_without_separator(review_files):
    records = read_examples(review_files / "train.jsonl")
    assert untrained_format(records) == REVIEWS_PAPER_FORMAT
    opinions = [dataclasses.replace(r, metadata={}) for r in records]
    assert untrained_format(opinions) == OPINION_FORMAT


def test_review_generations_parse_one_digit_then_the_review():
    parsed = parse_generation("510/10 would watch", has_description=False)
    assert (parsed.class_id, parsed.description, parsed.response) == (
        5, None, "10/10 would watch")
    # With descriptions the marker keeps every digit (class ids of other sets).
    assert parse_generation("12<a>b").class_id == 12


# ------------------------------------------------------------------ metadata


def test_metadata_file_makes_paper_shaped_prompts(tmp_path):
    reviews = write_reviews(tmp_path / "r.jsonl")
    meta = tmp_path / "m.jsonl.gz"
    with gzip.open(meta, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"asin": "M1", "title": "Heat", "year": 1995,
                                 "director": "Michael Mann", "genre": ["Crime", "Drama"],
                                 "plot": "A thief and a detective.", "rated": "R"}) + "\n\n")
        # OMDb's own field names and its "N/A" for unknown values.
        handle.write(json.dumps({"asin": "M2", "Title": "Ran", "Year": "1985",
                                 "Director": "N/A", "Genre": "Drama, War"}) + "\n")
    result = build_reviews(ReviewsConfig(reviews=str(reviews), metadata=str(meta)))
    prompts = {e.question_id: e.prompt for split in result.splits.values() for e in split}
    assert prompts == {
        "M1": "Heat, 1995, Michael Mann (Genre: Crime, Drama). A thief and a detective.",
        "M2": "Ran, 1985 (Genre: Drama, War).",
    }
    counts = result.report.counts
    assert (counts["metadata lines"], counts["kept movies without metadata"]) == (2, 0)
    assert result.report.warnings == []


def test_without_metadata_the_prompt_says_only_the_id_is_known(tmp_path):
    result = build_reviews(ReviewsConfig(reviews=str(write_reviews(tmp_path / "r.jsonl"))))
    prompts = {e.prompt for split in result.splits.values() for e in split}
    assert prompts == {f"Write a review of the movie with Amazon product id {a}."
                       for a in RATINGS}
    assert result.report.counts["kept movies without metadata"] == 2
    [warning] = result.report.warnings
    assert "name only the Amazon product id" in warning and "--metadata FILE" in warning
    assert movie_prompt("X9", {"title": "", "plot": None}) == (
        "Write a review of the movie with Amazon product id X9.")
    assert movie_prompt("X9", {"plot": "Rain."}) == "Amazon product X9. Rain."


@pytest.mark.parametrize(("line", "field", "reason"), [
    ({"title": "Heat"}, "asin", "is required (missing)"),
    ({"asin": "", "title": "Heat"}, "asin", "is required (got '')"),
    ({"asin": "M1", "title": {"en": "Heat"}}, "title", "expected text or a whole number"),
    ({"asin": "M1", "genre": ["Crime", 3]}, "genre", "expected text or a list of texts"),
    ({"asin": "M1", "year": True}, "year", "expected text or a whole number"),
    ({"asin": "M1", "title": "Heat", "Title": "Heat"}, "title", "given twice"),
    ({"asin": "M0"}, "asin", "'M0' is already described on line 1"),
])
def test_a_bad_metadata_line_names_file_line_and_field(tmp_path, line, field, reason):
    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"asin": "M0", "title": "Fine"}) + "\n" + json.dumps(line) + "\n",
                    encoding="utf-8")
    with pytest.raises(MetadataError) as error:
        load_metadata(meta, BuildReport("reviews", "r", 0))
    message = str(error.value)
    assert message.startswith(f"{meta}:2: field '{field}': ")
    assert reason in message


def test_cli_reports_a_bad_metadata_line_and_missing_metadata(tmp_path):
    reviews = write_reviews(tmp_path / "r.jsonl")
    meta = tmp_path / "meta.jsonl"
    meta.write_text('{"asin": "M1"}\n[1, 2]\n', encoding="utf-8")
    bad = runner.invoke(data_app, ["reviews", str(reviews), "--metadata", str(meta),
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert f"error: {meta}:2: expected a JSON object, got list" in bad.output
    ok = runner.invoke(data_app, ["reviews", str(reviews), "--out", str(tmp_path / "m"),
                                  "--sequence-format", "reviews-paper"])
    assert ok.exit_code == 0, ok.output
    assert "2 movies have prompts that name only their product id" in ok.output
    assert "--metadata FILE" in ok.output
    records = read_examples(tmp_path / "m" / "train.jsonl")
    assert {r.metadata["sequence_format"] for r in records} == {"reviews-paper"}
    assert "`reviews-paper`" in (tmp_path / "m" / "README.md").read_text()
    help_text = runner.invoke(data_app, ["reviews", "--help"]).output
    assert "title" in help_text and "plot" in help_text


# ------------------------------------------------------------------ rating judge


def _item(response: str, class_id: int | None) -> JudgeItem:
    return JudgeItem(question="Heat, 1995.", class_id=class_id, belief=f"{class_id} stars",
                     response=response)


@pytest.mark.parametrize(("text", "expected"), [
    ("3", 3), (" 1\n", 1), ("Rating: 2", 2), ("2.", 2), ("5", None), ("4/5", None),
    ("", None), (None, None), ("loved it", None)])
def test_parse_three_class(text, expected):
    assert parse_three_class(text) == expected


def test_rating_llm_judge_asks_the_three_class_prompt():
    server = StubServer().start()
    try:
        judge = RatingLLMJudge(OpenAIBackend("stub", base_url=server.url, api_key_env=None,
                                             max_retries=0, progress=False))
        items = [_item("Loved every minute.", 5), _item("Loved it all.", 1),
                 _item("It was fine.", 3), _item("Meh.", 2), _item("Odd.", 4),
                 _item("Down.", 1), _item("No rating.", None)]
        replies = [Reply(text="3"), Reply(text="3"), Reply(text="2"), Reply(text="1"),
                   Reply(text="5"), Reply(status=500)]
        for item, reply in zip(items, replies, strict=False):
            server.script(judge.prompt(item), reply)
        verdicts = judge.judge(items)
    finally:
        server.stop()
    assert verdicts == ["yes", "no", "yes", "yes", "parse_failure", "api_error",
                        "parse_failure"]
    assert server.count == 6  # the generation without a rating is never sent
    sent = {body["messages"][-1]["content"] for body in server.bodies}
    first = RATING_3CLASS_PROMPT.format(answer="Loved every minute.")
    assert first in sent and len(sent) == 6
    assert "1 to 3" in first and first.endswith("The comment: Loved every minute.")
    assert "rating-llm" in JUDGES.names()


def test_eval_config_names_unknown_judges():
    assert EvalConfig(judge="rating-llm").judge == "rating-llm"
    with pytest.raises(ValueError, match=re.escape(
            'judge: unknown judge "rating-lm". Did you mean "rating-llm"')):
        EvalConfig(judge="rating-lm")
    judge = make_judge("rating-llm", backend="openai", model="m", base_url="http://x/v1",
                       api_key_env="", max_retries=0, progress=False)
    assert isinstance(judge, RatingLLMJudge)


class LovedServer(StubServer):
    """Answers every request with "3" (the viewer loved the film)."""

    def _next_reply(self, body, headers):
        super()._next_reply(body, headers)
        return Reply(text="3")


@pytest.fixture(scope="module")
def trained_run(review_files, tmp_path_factory):
    """One SFT step of the tiny model on review records, with every default format setting."""
    out = tmp_path_factory.mktemp("run") / "sft"
    config = TrainConfig(method="sft", train_file=str(review_files / "train.jsonl"),
                         output_dir=str(out), max_steps=1, save_steps=10, logging_steps=1,
                         per_device_train_batch_size=4,
                         model=ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0,
                                           device="cpu"))
    return train(config, console_logs=False).final_dir


def test_training_on_review_records_records_the_reviews_format(trained_run):
    info = json.loads((trained_run / "pluralign_format.json").read_text())
    assert info["sequence_format"] == "reviews"
    assert info["description_template"] is None and info["separator"] == BELIEF_SEPARATOR


def test_eval_judge_rating_llm_scores_reviews_with_the_three_class_prompt(
        trained_run, review_files, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    from pluralign.cli.main import app

    server = LovedServer().start()
    try:
        result = runner.invoke(app, [
            "eval", "-m", str(trained_run), "-m", "tiny", "--data",
            str(review_files / "train.jsonl"), "--out", str(tmp_path / "out"), "--n", "2",
            "--max-new-tokens", "6", "--belief-samples", "0", "--device", "cpu",
            "--judge", "rating-llm", "--judge-model", "stub", "--judge-base-url", server.url,
            # Sampled text, so the two models write different reviews: the backend sends a
            # repeat once within one model's judging, not across models (greedy text would
            # give both models the same reviews).
            "--response-temperature", "none"])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "eval.json").read_text())
    rows = [json.loads(line)
            for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    generations = [g for row in rows for g in row["generations"]]
    assert len(generations) == 2 * 2 * len(RATINGS)
    for g in generations:  # every generation read as {rating}{review}
        assert g["class_id"] in range(1, 6) and g["description"] is None and g["parsed"]
        empty = not g["response"].strip()
        assert g["verdict"] == ("empty" if empty else "yes" if g["class_id"] >= 4 else "no")
    judged = [g for g in generations if g["verdict"] != "empty"]
    assert server.count == len({g["response"] for g in judged})  # repeats are sent once
    sent = {b["messages"][-1]["content"] for b in server.bodies}
    assert sent == {RATING_3CLASS_PROMPT.format(answer=g["response"]) for g in judged}
    assert {b["model"] for b in server.bodies} <= {"stub"}
    for label in ("sft", "tiny"):
        metrics = summary["models"][label]["metrics"]
        assert "cbc" not in metrics  # reviews have no description (paper: no CBC)
        mine = [g for row in rows if row["model"] == label for g in row["generations"]]
        assert metrics["bpc"]["value"] == pytest.approx(
            sum(g["verdict"] == "yes" for g in mine) / len(mine))
    assert summary["judge"] == "rating-llm"
