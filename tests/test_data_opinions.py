"""The opinions builder: hub string parsing, option mapping, pair drawing, and a full build
on a slice of the shared GlobalOpinionQA file against a scripted OpenAI-compatible server."""

from __future__ import annotations

import ast
import json
import random
import re
from collections import Counter

import pytest

from data_llm_server import ScriptedServer, stub_backend
from openai_stub_server import Reply
from pluralign.data import read_examples
from pluralign.data.builders import (
    OpinionsConfig,
    build_opinions,
    classify_option,
    draw_pairs,
    load_opinion_rows,
    load_option_map,
    parse_options,
    parse_selections,
    save_build,
)
from pluralign.data.builders.option_rules import option_map_differences
from pluralign.data.builders.prompts import parse_styles
from pluralign.registry import BUILDERS

FAIL_MARK = "FAIL-THIS"
GARBAGE_MARK = "GARBAGE-THIS"


# ------------------------------------------------------------------ hub strings


def test_selections_defaultdict_string_is_parsed_with_literal_eval():
    text = "defaultdict(<class 'list'>, {'Mexico': [0.25, 0.75], 'S. Africa': [1, 0.0]})"
    assert parse_selections(text) == {"Mexico": [0.25, 0.75], "S. Africa": [1.0, 0.0]}
    assert parse_selections("{'Japan': [0.5, 0.5]}") == {"Japan": [0.5, 0.5]}
    assert parse_options("['Yes', \"Don't know\", 'No']") == ["Yes", "Don't know", "No"]


@pytest.mark.parametrize("text", [
    "defaultdict(<class 'list'>, __import__('os').system('echo pwned'))",
    "{'US': [0.5, 0.5]} if __import__('os') else 0",
    "defaultdict(<class 'list'>, {'US': 'not a list'})",
    "[1, 2]",
])
def test_malicious_or_malformed_selections_are_rejected(text):
    with pytest.raises(ValueError):
        parse_selections(text)


def test_malicious_options_string_is_rejected():
    with pytest.raises(ValueError):
        parse_options("__import__('os').listdir('.')")


def test_upstream_csv_layout_is_read(tmp_path):
    path = tmp_path / "goqa.csv"
    path.write_text(
        "question,selections,options,source\n"
        "\"Is it good?\",\"defaultdict(<class 'list'>, {'Japan': [0.7, 0.3], 'Mexico': "
        "[0.2, 0.8]})\",\"['Good', 'Bad']\",GAS\n", encoding="utf-8")
    rows = load_opinion_rows(str(path))
    assert [(r.group, r.options, r.distribution) for r in rows] == [
        ("Japan", ("Good", "Bad"), (0.7, 0.3)), ("Mexico", ("Good", "Bad"), (0.2, 0.8))]


# ------------------------------------------------------------------ option map


def test_rules_and_default_map():
    expected = {"Very good": 5, "Somewhat good": 4, "Somewhat bad": 2, "Very bad": 1,
                "Completely agree": 5, "Mostly disagree": 2, "DK/Refused": 0,
                "Neither (VOL)": 3, "Not at all important": 1, "Very unfavorable": 1,
                "Somewhat favorable": 4, "9": 5, "2": 2, "Yes": 4, "No": 2}
    assert {o: classify_option(o) for o in expected} == expected
    assert classify_option("Christianity") is None  # categorical: no direction, no guess
    default = load_option_map()
    assert len(default) > 400 and set(default.values()) <= set(range(6))
    assert default["Very favorable"] == 5 and default["Don't know"] == 0


#: The options on which the paper's map (Table 5) and pluralign's default map disagree.
PAPER_VS_DEFAULT = [
    ("A little", 4, 2), ("Has already happened (DO NOT READ)", 3, 2),
    ("Has already replaced US", 5, 4), ("Minor threat", 4, 2), ("No apology necessary", 3, 2),
    ("Not more", 1, 2), ("Smaller problem", 4, 2), ("United States does too much", 5, 4),
    ("Women generally have more influence", 2, 4),
    ("Women generally have more opportunities", 2, 4),
]


def test_paper_option_map_is_bundled_and_selectable_by_name():
    paper = load_option_map("paper")
    # Table 5 of the paper: 373 options, 4/42/118/33/126/50 in classes 0..5.
    assert len(paper) == 373
    assert [Counter(paper.values())[c] for c in range(6)] == [4, 42, 118, 33, 126, 50]
    assert paper["A little"] == 4 and load_option_map("default")["A little"] == 2
    assert paper["Very strong"] == 5 and paper["Never be justified"] == 1
    assert load_option_map("default") == load_option_map(None) == load_option_map()
    assert option_map_differences(paper, load_option_map()) == PAPER_VS_DEFAULT


def test_bundled_paper_map_equals_the_shared_copy_of_the_papers_map(shared_data):
    shared = json.loads((shared_data / "globalopinionqa" / "option_map.json").read_text(
        encoding="utf-8"))
    assert load_option_map("paper") == shared


def test_option_map_by_path_and_unknown_names(tmp_path, monkeypatch):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"Yes": 4, "No": 2}), encoding="utf-8")
    assert load_option_map(str(path)) == load_option_map(path) == {"Yes": 4, "No": 2}
    with pytest.raises(ValueError, match=re.escape('unknown option map "papr". Did you mean '
                                                   '"paper"? Known option maps: default, paper')):
        load_option_map("papr")
    with pytest.raises(ValueError, match=re.escape('option_map: unknown option map "defualt". '
                                                   'Did you mean "default"')):
        OpinionsConfig(option_map="defualt")
    with pytest.raises(FileNotFoundError):
        load_option_map(str(tmp_path / "missing.json"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").write_text(json.dumps({"Yes": 1}), encoding="utf-8")
    assert load_option_map("paper") != {"Yes": 1}  # the bundled name wins ...
    assert load_option_map("./paper") == {"Yes": 1}  # ... and a path reaches the file


def test_unknown_option_map_name_fails_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    result = CliRunner().invoke(app, ["data", "opinions", "--source", str(tmp_path / "x.jsonl"),
                                      "--option-map", "papr", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert 'Did you mean "paper"' in result.output
    assert not (tmp_path / "out").exists()


def small_source(tmp_path):
    """Two questions whose options both maps cover; "A little" and "Minor threat" differ."""
    rows = [{"question": "How much do you trust the news?", "options": ["A lot", "A little",
             "Not at all"], "distribution": [0.5, 0.3, 0.2], "group": "Japan"},
            {"question": "Is climate change a threat?", "options": ["Major threat",
             "Minor threat", "Not a threat"], "distribution": [0.4, 0.4, 0.2], "group": "Japan"}]
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("option_map", ["paper", None])
def test_card_lists_where_the_option_map_differs_from_the_default(option_map, tmp_path):
    server = ScriptedServer(respond).start()
    try:
        config = OpinionsConfig(source=str(small_source(tmp_path)), writer="paper", n_styles=2,
                                pairs_per_question=4, option_map=option_map,
                                split_by="example", seed=0)
        result = build_opinions(config, stub_backend(server))
    finally:
        server.stop()
    beliefs = {e.prompt.split(") ", 1)[1]: [b.class_id for b in e.beliefs]
               for split in result.splits.values() for e in split}
    paths = save_build(result, tmp_path / "out", title="t", description="d")
    card = paths["card"].read_text(encoding="utf-8")
    report = json.loads((tmp_path / "out" / "build_report.json").read_text(encoding="utf-8"))
    if option_map is None:
        assert beliefs["How much do you trust the news?"] == [1, 2, 5]
        assert "- option map: `default` (pluralign's option rules" in card
        assert "## Option map vs the default\n\nThis build used the default map." in card
        assert report["option_map_comparison"]["is_default"] is True
        return
    assert beliefs["How much do you trust the news?"] == [1, 4, 5]  # "A little" is 4 here
    assert "- option map: `paper` (the GDPO paper's Table 5 map" in card
    assert "## Option map vs the default (10 differences)" in card
    assert "133 options only this map covers, 220 only the default covers" in card
    assert "| option | class here | class in default | rows of this build |" in card
    assert "| A little | 4 | 2 | 1 |" in card and "| Minor threat | 4 | 2 | 1 |" in card
    assert "| Not more | 1 | 2 | 0 |" in card
    differences = report["option_map_comparison"]["differences"]
    assert [(d["option"], d["class"], d["default_class"]) for d in differences] == (
        PAPER_VS_DEFAULT)


# ------------------------------------------------------------------ pair drawing


def test_chosen_tracks_p_star_and_rejected_is_uniform_over_the_rest():
    probs = [0.6, 0.3, 0.1]
    pairs = draw_pairs(probs, 30_000, random.Random(0))
    chosen = Counter(c for c, _ in pairs)
    for i, p in enumerate(probs):
        assert abs(chosen[i] / len(pairs) - p) < 0.015
    assert all(c != r for c, r in pairs)
    rejected_after_0 = Counter(r for c, r in pairs if c == 0)
    assert abs(rejected_after_0[1] / sum(rejected_after_0.values()) - 0.5) < 0.02
    uniform = Counter(c for c, _ in draw_pairs(probs, 30_000, random.Random(1), uniform=True))
    assert all(abs(uniform[i] / 30_000 - 1 / 3) < 0.015 for i in range(3))
    assert draw_pairs(probs, 50, random.Random(5)) == draw_pairs(probs, 50, random.Random(5))


def test_style_parser_reads_markdown_and_reordered_answers():
    text = ("**Style 1: Casual**\n**Q:** Is tea good?\nA2: [Bad] Nah.\nA1: [Good] Sure!\n\n"
            "Style 2 - Formal\nQ: Would you say tea is good?\nA1: [Good] Indeed.\n")
    styles, failures = parse_styles(text, ["Good", "Bad"])
    assert [(s.name, s.question, s.answers) for s in styles] == [
        ("Casual", "Is tea good?", {0: "Sure!", 1: "Nah."})]
    assert failures == 1  # style 2 has no answer for "Bad": not filled in
    assert parse_styles("no styles here", ["a", "b"]) == ([], 1)


# ------------------------------------------------------------------ full build


def respond(prompt: str) -> Reply | str:
    question = re.search(r"Question: (.*)\n", prompt).group(1)
    choices = ast.literal_eval(re.search(r"Choices: (\[.*\])\n", prompt).group(1))
    if FAIL_MARK in question:
        return Reply(status=400)
    if GARBAGE_MARK in question:
        return "Sorry, I can only chat about the weather."
    blocks = []
    for name in ("Casual", "Formal"):
        lines = [f"Style {len(blocks) + 1}: {name}", f"Q: ({name}) {question}"]
        lines += [f"A{i}: [{c}] {name} answer for <{c}>" for i, c in enumerate(choices, 1)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


@pytest.fixture
def goqa_slice(shared_data, tmp_path):
    """30 Japan rows of the shared dev file; two are marked to fail in the scripted LLM."""
    option_map = load_option_map()
    rows = [json.loads(line) for line in
            (shared_data / "globalopinionqa" / "dev_groups.jsonl").open(encoding="utf-8")]
    japan = [r for r in rows if r["group"] == "Japan"][:30]
    mapped = [r for r in japan if all(o in option_map for o in r["options"])]
    mapped[0]["question"] += " " + FAIL_MARK
    mapped[1]["question"] += " " + GARBAGE_MARK
    path = tmp_path / "slice.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in japan), encoding="utf-8")
    unmapped = {o for r in japan for o in r["options"] if o not in option_map}
    return path, len(japan), len(mapped), unmapped


def test_opinions_build_on_shared_slice(goqa_slice, tmp_path):
    path, n_rows, n_mapped, unmapped = goqa_slice
    assert unmapped, "the slice should include rows with unmapped options"
    server = ScriptedServer(respond).start()
    try:
        config = OpinionsConfig(source=str(path), groups=["Japan"], writer="paper", n_styles=2,
                                pairs_per_question=12, seed=3)
        result = BUILDERS.get("opinions")(config, stub_backend(server))
    finally:
        server.stop()
    report = result.report
    assert report.counts["llm requests"] == n_mapped
    assert report.counts["llm failures"] == 1
    assert report.counts["style parse failures"] == 1
    assert report.skipped["row has unmapped options"] == n_rows - n_mapped
    assert report.skipped["no usable style from the LLM"] == 2
    assert set(report.unmapped_options) == unmapped
    assert report.counts["questions kept"] == n_mapped - 2
    assert result.total == (n_mapped - 2) * 12

    split_of = {}
    for name, examples in result.splits.items():
        for e in examples:
            assert split_of.setdefault(e.question_id, name) == name  # one split per question
            assert e.group == "Japan" and e.chosen_belief != e.rejected_belief
            assert e.chosen_response.startswith(e.style) and e.rejected_response.startswith(
                e.style)  # same style for both responses
            assert e.chosen_response.endswith(f"<{e.belief(e.chosen_belief).description}>")
            assert e.prompt.startswith(f"({e.style})")
            assert abs(sum(e.target_distribution) - 1) < 1e-6
    assert all(result.splits[s] for s in ("train", "eval", "test"))

    paths = save_build(result, tmp_path / "out", title="t", description="d")
    card = paths["card"].read_text(encoding="utf-8")
    assert "by question" in card and "Japan" in card and "seed: 3" in card
    assert f"## Unmapped options ({len(unmapped)})" in card
    assert "llm failures | 1" in card and '"writer": "paper"' in card
    assert len(read_examples(paths["train"])) == len(result.splits["train"])


def test_uniform_switch_and_split_by_example(goqa_slice):
    path, *_ = goqa_slice
    server = ScriptedServer(respond).start()
    try:
        config = OpinionsConfig(source=str(path), writer="paper", n_styles=2,
                                pairs_per_question=200, uniform=True, split_by="example",
                                max_questions=8)
        result = build_opinions(config, stub_backend(server))
    finally:
        server.stop()
    examples = [e for split in result.splits.values() for e in split]
    # Uniform-SFT: each belief of a question is chosen about equally often.
    by_question = Counter((e.question_id, e.chosen_belief) for e in examples)
    for (qid, _), count in by_question.items():
        k = next(e.num_beliefs for e in examples if e.question_id == qid)
        assert abs(count / 200 - 1 / k) < 0.1
    questions = [{e.question_id for e in split} for split in result.splits.values()]
    assert questions[0] & questions[2]  # split by example: questions are shared


def test_confidence_and_amount_scales_are_mapped():
    # "Some confidence" was the most frequent unmapped option on the US/PK/SA rows.
    scale = {"A lot of confidence": 5, "Some confidence": 4, "Not too much confidence": 2,
             "No confidence at all": 1, "A fair amount": 4, "Fair amount": 4}
    assert {o: classify_option(o) for o in scale} == scale
    default = load_option_map()
    assert all(default[o] == c for o, c in scale.items())
