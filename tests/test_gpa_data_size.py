"""Issue 22, item 3: GPA-CT against GPA-FT by data size (subsampling, table, CLI stage)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gpa_fixtures import conv, write_log
from gpa_llm_server import start
from pluralign.cli.gpa import gpa_app
from pluralign.eval.metrics import proportion_with_interval
from pluralign.gpa import GPAConfig, run_classify, run_ingest
from pluralign.gpa.data_size import (
    TABLE_HEADER,
    blind_win_rates,
    data_size_markdown,
    prepare_share,
    subsample_mined,
    table_rows,
)
from pluralign.gpa.io import read_json, read_jsonl, stage_path


def _ingested(tmp_path) -> tuple[GPAConfig, list[dict]]:
    """12 conversations of A (3 held out, 9 mined) and 4 of B, each reacting "shorter"."""
    rows = [conv(f"{g.lower()}{i}", g, f"Question {i}", "Answer " * 90, "Shorter please", "Ok.")
            for g, n in (("A", 12), ("B", 4)) for i in range(n)]
    config = GPAConfig(inputs=[str(write_log(tmp_path, rows))], work_dir=str(tmp_path / "w"),
                       heldout_fraction=0.25, use_llm_labels=False)
    return config, run_ingest(config).conversations


def _ids(rows: list[dict], group: str, split: str) -> set[str]:
    return {c["conversation_id"] for c in rows if c["group"] == group and c["split"] == split}


def test_subsampling_is_by_conversation_seeded_nested_and_never_mines_heldout(tmp_path):
    _, conversations = _ingested(tmp_path)
    heldout, mined = _ids(conversations, "A", "heldout"), _ids(conversations, "A", "mine")
    assert (len(heldout), len(mined)) == (3, 9)
    kept = {share: _ids(subsample_mined(conversations, "A", share, seed=0), "A", "mine")
            for share in (0.25, 0.5, 1.0)}
    assert [len(kept[s]) for s in (0.25, 0.5, 1.0)] == [3, 5, 9]  # ceil(2.25), ceil(4.5)
    assert kept[0.25] < kept[0.5] < kept[1.0] == mined
    for share in (0.25, 0.5, 1.0):
        rows = subsample_mined(conversations, "A", share, seed=0)
        assert _ids(rows, "A", "heldout") == heldout and not heldout & kept[share]
        assert _ids(rows, "A", "unused") == mined - kept[share]
        assert _ids(rows, "B", "mine") == _ids(conversations, "B", "mine")  # B stays whole
    assert conversations[0]["split"] in ("mine", "heldout")  # the input is not modified
    assert _ids(subsample_mined(conversations, "A", 0.25, seed=0), "A", "mine") == kept[0.25]
    other_seeds = {frozenset(_ids(subsample_mined(conversations, "A", 0.25, seed), "A", "mine"))
                   for seed in range(1, 6)}
    assert len(other_seeds | {frozenset(kept[0.25])}) > 1
    with pytest.raises(ValueError, match=r"data_sizes: a share must be in \(0, 1\], got 0"):
        subsample_mined(conversations, "A", 0, seed=0)


def test_a_share_mines_only_its_kept_conversations(tmp_path):
    config, conversations = _ingested(tmp_path)
    share_config, rows = prepare_share(config, conversations, "A", 0.25)
    assert share_config.work_dir.endswith("data_size/25pct")
    report = read_json(stage_path(share_config.work_dir, "ingest_report"))["groups"]
    assert (report["A"]["mine"], report["A"]["heldout"], report["A"]["eligible"]) == (3, 3, True)
    # B stays mined (the contrast of A's rules) but gets no rubric of its own here.
    assert (report["B"]["mine"], report["B"]["eligible"]) == (3, False)
    assert report["B"]["reason"] == "data size: only A's rubric is built here"
    run_classify(share_config, None)
    signals = list(read_jsonl(stage_path(share_config.work_dir, "signals")))
    mined_a = {s["conversation_id"] for s in signals if s["group"] == "A"}
    assert mined_a == _ids(rows, "A", "mine") and len(mined_a) == 3


def _item(item_id: str, attribute: str, direction: str) -> dict:
    return {"item_id": item_id, "attribute": attribute, "direction": direction,
            "text": f"{attribute} {direction}"}


#: The reference rubric: short answers, lists, the user's language; tone cannot be measured.
REFERENCE = [_item("A#1", "length", "less"), _item("A#2", "format", "more"),
             _item("A#3", "language", "more"), _item("A#4", "tone", "more")]
PROMPTS = [{"conversation_id": "h0", "prompt": "Explain tides"},
           {"conversation_id": "h1", "prompt": "Объясни приливы"}]
LIST = "- one\n- two"


def _shares() -> dict:
    rubric = {"items": [_item("A#1", "length", "less"), _item("A#9", "length", "more")]}
    return {"50%": {"mined": 2, "rubric": rubric, "finetune": {"status": "trained"}},
            "100%": {"mined": 4, "rubric": {"items": REFERENCE},
                     "finetune": {"status": "no usable pairs: nothing to train on"}}}


def test_the_table_measures_the_reference_items_it_can_and_nothing_else():
    baselines = {"zero_shot": ["word " * 70, "Short."], "persona": [None, LIST]}
    answers = {"50%": {"gpa_ct": [LIST, "- раз\n- два"], "gpa_ft": ["Short.", "Short."]},
               "100%": {"gpa_ct": [LIST, "Plain."]}}
    rows = table_rows(_shares(), baselines, answers, PROMPTS, REFERENCE)
    assert [(r["method"], r["share"]) for r in rows] == [
        ("zero_shot", None), ("persona", None), ("gpa_ct", "50%"), ("gpa_ft", "50%"),
        ("gpa_ct", "100%"), ("gpa_ft", "100%")]
    by = {(r["method"], r["share"]): r for r in rows}
    # zero-shot: 70 words fail length, "Short." passes; no list; the Latin "Short." does
    # not answer the Russian prompt in its language, the English answer the English one.
    zero = by[("zero_shot", None)]
    assert zero["by_attribute"] == {"length": [1, 2], "format": [0, 2], "language": [1, 2]}
    assert (zero["checks"], zero["adherence"]) == (6, pytest.approx(2 / 6))
    assert (zero["low"], zero["high"]) == pytest.approx(proportion_with_interval(2, 6)[1:])
    assert by[("persona", None)]["by_attribute"] == {"length": [1, 1], "format": [1, 1],
                                                      "language": [0, 1]}
    ct = by[("gpa_ct", "50%")]
    assert ct["by_attribute"] == {"length": [2, 2], "format": [2, 2], "language": [2, 2]}
    assert (ct["adherence"], ct["mined"], ct["rubric_items"], ct["shared_items"]) == (1.0, 2, 2, 1)
    assert by[("gpa_ct", "100%")]["by_attribute"]["format"] == [1, 2]
    missing = by[("gpa_ft", "100%")]
    assert missing["missing"].startswith("no usable pairs") and "adherence" not in missing

    result = {"group": "A", "seed": 3, "prompts": 2, "reference_share": "100%",
              "reference_items": REFERENCE, "shares": _shares(), "rows": rows, "win_rates": [],
              "judge": {"asked": False, "usable": False, "problems": ["the judge is bundled"]}}
    markdown = data_size_markdown(result)
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert table[0] == TABLE_HEADER and len(table) == 2 + len(rows)
    assert {line.count("|") for line in table} == {13}  # 12 columns on every line
    assert "| zero_shot | none | 0 | - | 1/2 | 0/2 | - | 1/2 | 33% [" in markdown
    assert "| gpa_ct | 50% | 2 | 2 (1) | 2/2 | 2/2 | - | 2/2 | 100% [" in markdown
    assert "needs a capable judge | needs a capable judge |" in markdown
    assert "| gpa_ft | 100% | 4 | 4 (4) | not available: no usable pairs" in markdown
    assert "- A#4" not in markdown and "- A#3 (language: more)" in markdown  # measurable only
    assert "Blind win rates were not asked: the judge is bundled." in markdown


def test_a_capable_judge_gets_win_rates_per_share_and_the_bundled_one_no_request():
    asked = blind_win_rates(GPAConfig(), None, "A", PROMPTS, {}, {}, None)
    assert asked == ([], {"asked": False, "usable": False,
                          "problems": [asked[1]["problems"][0]]})
    assert "bundled smollm2-135m" in asked[1]["problems"][0]
    rows = [{"share": "50%", "method": "gpa_ct", "baseline": "zero_shot", "win_rate": 0.75,
             "low": 0.3, "high": 0.95}]
    result = {"group": "A", "seed": 0, "prompts": 2, "reference_share": "100%",
              "reference_items": REFERENCE, "shares": {}, "win_rates": rows,
              "rows": [{"method": "gpa_ct", "share": "50%", "mined": 2, "rubric_items": 1,
                        "shared_items": 1, "by_attribute": {}, "adherence": 0.5, "low": 0.1,
                        "high": 0.9, "checks": 2}],
              "judge": {"asked": True, "usable": True, "problems": []}}
    assert "| 2 | 75% [30%, 95%] | n/a |" in data_size_markdown(result)
    result["judge"] = {"asked": True, "usable": False, "problems": ["the judge is one-sided"]}
    markdown = data_size_markdown(result)
    assert "| 2 | unusable | unusable |" in markdown and "75%" not in markdown
    assert "UNUSABLE, not results: the judge is one-sided." in markdown


def _data_size_command(tmp_path, common: list[str]):
    """``pluralign gpa ingest`` then ``data-size`` on the small log, the LLM a stub server
    (which always answers "A" as a judge) and GPA-FT's base model the tiny one."""
    runner, server = CliRunner(), start()
    try:
        assert runner.invoke(gpa_app, ["ingest", str(write_log(tmp_path)), *common]
                             ).exit_code == 0
        return runner.invoke(gpa_app, [
            "data-size", *common, "--llm-backend", "openai", "--llm-model", "stub",
            "--base-url", server.url, "-s", "llm.api_key_env=", "--relevance", "keywords",
            "--ft_model", "tiny", "--ft_lora_r", "4", "--ft_max_steps", "1",
            "--ft_max_length", "96", "--answer_max_tokens", "6", "--ft_pairs_per_group", "2"])
    finally:
        server.stop()


def test_data_size_command_mines_tunes_and_tables_every_share(tmp_path):
    work = tmp_path / "w"
    common = ["-w", str(work), "--heldout_fraction", "0.4"]
    result = _data_size_command(tmp_path, common)
    assert result.exit_code == 0, result.output + repr(result.exception)

    out = read_json(stage_path(work, "data_size"))
    assert out["group"] == "A" and out["prompts"] == 2 and out["reference_share"] == "100%"
    assert {label: s["mined"] for label, s in out["shares"].items()} == \
        {"25%": 1, "50%": 2, "100%": 3}
    heldout = _ids(list(read_jsonl(stage_path(work, "ingest"))), "A", "heldout")
    for share in out["shares"].values():
        signals = read_jsonl(stage_path(share["work_dir"], "signals"))
        assert not heldout & {s["conversation_id"] for s in signals}
    full = out["shares"]["100%"]
    assert full["finetune"]["status"] == "trained" and full["rubric"]["items"]
    assert [(r["method"], r["share"]) for r in out["rows"]][:2] == [("zero_shot", None),
                                                                     ("persona", None)]
    ct_rows = {r["share"]: r for r in out["rows"] if r["method"] == "gpa_ct"}
    assert list(ct_rows) == ["25%", "50%", "100%"]
    # The stub's GPA-CT answer "- Short.\n- Clear." keeps the reference's "shorter" item.
    assert ("A", "length", "less") in {("A", i["attribute"], i["direction"])
                                       for i in out["reference_items"]}
    assert ct_rows["100%"]["by_attribute"]["length"] == [2, 2]
    # The stub judge always says "A": asked (not the bundled model), but one-sided, and
    # with both orders asked every pair is a tie.
    assert out["judge"]["asked"] and not out["judge"]["usable"]
    assert out["win_rates"] and {r["share"] for r in out["win_rates"]} <= set(ct_rows)
    assert all((r["wins"], r["losses"], r["usable"]) == (0, 0, False) for r in out["win_rates"])
    responses = list(read_jsonl(stage_path(work, "data_size_responses")))
    assert len([r for r in responses if r["method"] == "zero_shot"]) == 2
    assert "# GPA-CT against GPA-FT by data size" in result.output and "| unusable |" in \
        result.output
    bad = CliRunner().invoke(gpa_app, ["data-size", *common, "--data_size_group", "C"])
    assert bad.exit_code == 2 and "data_size_group: 'C' gets no rubric (too few" in bad.output
    help_text = CliRunner().invoke(gpa_app, ["data-size", "--help"], terminal_width=200).output
    assert "Examples:" in help_text and "pluralign gpa data-size" in help_text
