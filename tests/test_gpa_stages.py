"""GPA stages 2-6 on the hand-written log with a scripted OpenAI-compatible server."""

from __future__ import annotations

import pytest

from data_llm_server import stub_backend
from gpa_fixtures import write_log
from gpa_llm_server import start
from pluralign.gpa import (
    GPAConfig,
    run_attributes,
    run_classify,
    run_context,
    run_ingest,
    run_rubrics,
    run_rules,
    select_items,
)
from pluralign.gpa.io import StageInputError, read_json, read_jsonl, stage_path
from pluralign.gpa.signals import combine, cue_label, parse_label


@pytest.fixture
def server():
    server = start()
    yield server
    server.stop()


@pytest.fixture
def work(tmp_path):
    config = GPAConfig(inputs=[str(write_log(tmp_path))], work_dir=str(tmp_path / "work"),
                       relevance="keywords", top_k=1)
    run_ingest(config)
    return config


def test_cue_and_llm_labels_combine():
    assert cue_label("Too long, make it shorter")[0] == "less"
    assert cue_label("Write a poem")[0] == "none"
    assert parse_label("Label: feedback negative.") == "feedback_negative"
    assert combine("none", "more") == ("more", "llm")
    assert combine("less", "less") == ("less", "cue+llm")
    assert combine("none", None) == ("none", "none")


def test_stages_trace_rules_back_to_conversations(work, server):
    backend = stub_backend(server)
    summary = run_classify(work, backend)
    signals = list(read_jsonl(stage_path(work.work_dir, "signals")))
    by_conv = {(s["conversation_id"], s["user_turn"]): s for s in signals}
    mined_a = [c for c in ("a0", "a1", "a2", "a3", "a4") if (c, 2) in by_conv]
    assert all(by_conv[(c, 2)]["assistant_turn"] == 1 for c in mined_a)
    meh = by_conv.get(("a4", 2))
    if meh is not None:  # the LLM alone flags "meh" (no cue fires)
        assert (meh["label"], meh["source"]) == ("feedback_negative", "llm")
    assert summary["llm"]["requests"] == len(signals) and summary["llm"]["failures"] == 0

    run_attributes(work, backend)
    attributes = list(read_jsonl(stage_path(work.work_dir, "attributes")))
    shorter = [r for r in attributes if r["label"] == "less"]
    assert shorter and all(r["features"]["words"] > 200 for r in shorter)
    assert {("length", "less")} <= {(r["attribute"], r["direction"]) for r in shorter}
    assert any("llm" in r["sources"] and r["attribute"] == "tone" for r in attributes)

    rules_summary = run_rules(work)
    assert "C" in rules_summary["skipped_groups"]
    rules = {r["rule_id"]: r for r in read_jsonl(stage_path(work.work_dir, "rules"))}
    rule = rules["A|length|less"]
    assert rule["support"] == len(mined_a) - ("a4" in mined_a)
    assert rule["other_support"] < rule["support"] and rule["lift"] > 1
    assert {e["conversation_id"] for e in rule["evidence"]} <= set(mined_a)
    assert "B|length|less" not in rules

    run_rubrics(work, backend)
    rubrics = read_json(stage_path(work.work_dir, "rubrics"))
    items_a = rubrics["rubrics"]["A"]["items"]
    first = next(i for i in items_a if i["rules"] == ["A|length|less"])
    assert first["text_source"] == "llm" and first["text"].startswith("Keep it short")
    assert all(i["text_source"] == "template" for i in items_a if i is not first)  # "ok": too short
    assert "C" in rubrics["skipped"]
    markdown = stage_path(work.work_dir, "rubrics_md").read_text()
    assert "## A" in markdown and "A|length|less" in markdown and "C: too few" in markdown

    context = run_context(work, backend)
    rows = list(read_jsonl(stage_path(work.work_dir, "context")))
    assert context["answers"] == {"A": 1, "B": 1} and all(r["ok"] for r in rows)
    system = next(m for m in server.bodies[-1]["messages"] if m["role"] == "system")["content"]
    assert "prefer answers that follow these guidelines" in system


def test_llm_item_phrasing_must_name_its_attribute_and_direction():
    from pluralign.gpa.rubrics import clean_item_text

    assert clean_item_text("- Keep answers brief and clear.", "length", "less") == \
        "Keep answers brief and clear."
    # Same attribute, opposite direction: "brief" is not a phrasing of length: more.
    assert clean_item_text("Keep answers brief and clear.", "length", "more") is None
    assert clean_item_text("Answer in English for these users.", "language", "more") is None
    assert clean_item_text("Answer in the language the user writes in.", "language",
                           "more") == "Answer in the language the user writes in."
    # What SmolLM2-135M wrote for language: more: first person, and the wrong language.
    assert clean_item_text("To assist users from United States, I will provide a response in "
                           "English, but I will use the American English grammar.",
                           "language", "more") is None
    # A negation could flip the item: rejected unless the item itself is a "without".
    assert clean_item_text("Do not keep answers short.", "length", "less") is None
    assert clean_item_text("Write in paragraphs without bullet lists.", "format", "less") == \
        "Write in paragraphs without bullet lists."
    # Echoed prompt labels are stripped (what SmolLM2-135M answers most often).
    assert clean_item_text('Rewrite the guideline as: "Use a friendly, warm tone."', "tone",
                           "more") == "Use a friendly, warm tone."
    assert clean_item_text("Guideline: Keep answers brief.", "length", "less") == \
        "Keep answers brief."
    assert clean_item_text("ok", None) is None
    assert clean_item_text("Anything goes for unknown pairs.", "humour", "more") == \
        "Anything goes for unknown pairs."


def test_an_llm_phrasing_that_copies_the_template_counts_as_the_template(tmp_path):
    from pluralign.gpa.rubrics import generate_rubrics

    rule = {"rule_id": "G|length|less", "group": "G", "attribute": "length", "direction": "less",
            "support": 2, "group_conversations": 5, "lift": 2.0,
            "evidence": [{"conversation_id": "c1", "user_turn": 2}]}
    server = start(lambda system, user: "Guideline: Keep answers short and to the point.")
    try:
        rubric = generate_rubrics([rule], [], ["G"], stub_backend(server),
                                  GPAConfig(inputs=["x"]))["G"]
    finally:
        server.stop()
    item = rubric["items"][0]
    assert (item["text"], item["text_source"]) == ("Keep answers short and to the point.",
                                                   "template")
    assert item["llm_raw"].startswith("Guideline:") and item["conversations"] == ["c1"]
    assert "Guideline for answering users from G: Keep answers short" in \
        server.bodies[0]["messages"][-1]["content"]


def test_keyword_relevance_picks_the_matching_item():
    items = [{"item_id": "g#1", "attribute": "examples", "text": "Include concrete examples.",
              "support": 1},
             {"item_id": "g#2", "attribute": "tone", "text": "Use a warm tone.", "support": 3}]
    chosen = select_items("Show me example code to sort a list", items, 1, "keywords")
    assert chosen[0][0]["item_id"] == "g#1"
    assert select_items("x", [], 3, "keywords") == []


def test_llm_failures_are_counted_not_invented(work, server):
    from gpa_llm_server import ChatScriptedServer, gpa_responder
    from openai_stub_server import Reply

    failing = ChatScriptedServer(lambda s, u: Reply(status=400) if "react" in u
                                 else gpa_responder(s, u)).start()
    try:
        summary = run_classify(work, stub_backend(failing))
    finally:
        failing.stop()
    assert summary["llm"]["failures"] == summary["candidates"] > 0
    signals = list(read_jsonl(stage_path(work.work_dir, "signals")))
    assert all(s["llm_label"] is None and s["source"] in ("cue", "none") for s in signals)


def test_a_stage_without_its_input_says_which_stage_to_run(tmp_path):
    config = GPAConfig(inputs=["x"], work_dir=str(tmp_path / "empty"))
    with pytest.raises(StageInputError, match=r"conversations\.jsonl"):
        run_classify(config, None)


def test_groups_with_signals_but_no_rules_get_an_empty_rubric(tmp_path):
    from gpa_fixtures import conv

    rows = [conv(f"q{i}", "Quiet", f"Question {i}", "Answer.", "Next question", "Ok.")
            for i in range(4)]
    config = GPAConfig(inputs=[str(write_log(tmp_path, rows))], work_dir=str(tmp_path / "w"),
                       use_llm_labels=False, rubric_phrasing="template")
    run_ingest(config)
    run_classify(config, None)
    run_attributes(config, None)
    assert run_rules(config)["groups_without_rules"] == ["Quiet"]
    assert run_rubrics(config, None)["items"] == {"Quiet": 0}
    rubric = read_json(stage_path(config.work_dir, "rubrics"))["rubrics"]["Quiet"]
    assert rubric["status"].startswith("no rules")
