"""The whole GPA pipeline from the CLI: scripted LLM server, tiny model for GPA-FT."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from gpa_fixtures import write_log
from gpa_llm_server import start
from pluralign.cli.gpa import gpa_app
from pluralign.gpa.evaluate import parse_choice, win_table
from pluralign.gpa.finetune import pair_record, strip_marker
from pluralign.gpa.io import read_json, read_jsonl, stage_path


@pytest.fixture
def server():
    server = start()
    yield server
    server.stop()


def test_run_command_builds_rubrics_answers_a_group_model_and_an_evaluation(tmp_path, server):
    work = tmp_path / "work"
    args = ["run", str(write_log(tmp_path)), "-w", str(work), "--llm-backend", "openai",
            "--llm-model", "stub", "--base-url", server.url,
            "-s", "llm.api_key_env=", "-s", "llm.max_retries=0", "-s", "relevance=keywords",
            "-s", "ft_model=tiny", "-s", "ft_lora_r=4", "-s", "ft_max_steps=1",
            "-s", "ft_max_length=96", "-s", "answer_max_tokens=6", "-s", "ft_pairs_per_group=3"]
    result = CliRunner().invoke(gpa_app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)

    rubrics = read_json(stage_path(work, "rubrics"))["rubrics"]
    assert set(rubrics) == {"A", "B"} and all(r["items"] for r in rubrics.values())
    pairs = list(read_jsonl(stage_path(work, "pairs")))
    assert pairs and all(p["follows"] != p["violates"] for p in pairs)
    assert all(p["conversation_id"].startswith("a") for p in pairs)  # the largest group: A
    finetune = read_json(stage_path(work, "finetune"))["groups"]["A"]
    assert finetune["status"] == "trained" and finetune["global_step"] == 1

    evaluation = read_json(stage_path(work, "evaluate"))
    comparisons = {(r["group"], r["method"], r["baseline"]) for r in evaluation["win_rates"]}
    assert ("A", "gpa_ft", "persona") in comparisons and ("B", "gpa_ct", "zero_shot") in comparisons
    assert ("B", "gpa_ft", "zero_shot") not in comparisons  # only A was fine-tuned
    judgments = list(read_jsonl(stage_path(work, "judgments")))
    for row in evaluation["win_rates"]:
        mine = [j for j in judgments if (j["group"], j["method"], j["baseline"]) ==
                (row["group"], row["method"], row["baseline"])]
        # The judge always answers "A" and is asked both orders: every pair is a tie.
        assert (row["wins"], row["losses"], row["ties"]) == (0, 0, len(mine)) and mine
        assert all(j["choices"] == ["A", "A"] for j in mine) and row["usable"] is False
    retention = evaluation["retention"]["A"]
    assert retention["margin"] == 0.1 and math.isfinite(retention["finetuned_loss"])
    assert evaluation["adherence"]["A"]["gpa_ct"]["checks"] > 0
    table = stage_path(work, "evaluate_md").read_text()
    assert "| A | gpa_ft | persona |" in table and "Capability retention" in table
    assert table.startswith("# GPA evaluation\n\n## What can be trusted")
    assert "Blind win rates: UNUSABLE, not results: the judge is one-sided" in table
    assert "| unusable |" in table and "held-out" in stage_path(work, "rubrics_md").read_text()
    report = read_json(stage_path(work, "pipeline"))
    assert set(report["seconds"]) >= {"ingest", "evaluate", "total"}


def test_stage_commands_rerun_alone_and_answer_a_new_prompt(tmp_path, server):
    work = tmp_path / "w"
    llm = ["--llm-backend", "openai", "--llm-model", "stub", "--base-url", server.url,
           "-s", "llm.api_key_env="]
    runner = CliRunner()
    assert runner.invoke(gpa_app, ["ingest", str(write_log(tmp_path)), "-w", str(work)]
                         ).exit_code == 0
    missing = runner.invoke(gpa_app, ["rules", "-w", str(work)])
    assert missing.exit_code == 2 and "attributes.jsonl" in missing.output
    for stage in ("classify", "attributes"):
        assert runner.invoke(gpa_app, [stage, "-w", str(work), *llm]).exit_code == 0
    assert runner.invoke(gpa_app, ["rules", "-w", str(work)]).exit_code == 0
    assert runner.invoke(gpa_app, ["rubrics", "-w", str(work), *llm]).exit_code == 0
    out = runner.invoke(gpa_app, ["answer", "-w", str(work), "-g", "A", "-p", "Plan my trip",
                                  "-s", "relevance=keywords", *llm])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["answer"] == "- Short.\n- Clear."
    bad = runner.invoke(gpa_app, ["answer", "-w", str(work), "-g", "Nope", "-p", "x", *llm])
    assert bad.exit_code == 2


def test_pair_records_markers_and_judge_parsing():
    record = pair_record({"group": "A", "prompt": "p", "follows": "good", "violates": "bad",
                          "conversation_id": "a0", "turn": 0, "items": ["A#1"]})
    assert record.target_distribution == (1.0, 0.0) and record.chosen_belief == 1
    assert strip_marker("1<follows rubric> Hello") == "Hello"
    assert strip_marker("Hello <b>") == "Hello <b>"
    assert [parse_choice(t) for t in ("A", "Response B.", "A or B", "", None)] == \
        ["A", "B", None, None, None]
    rows = win_table([{"group": "g", "method": "gpa_ct", "baseline": "persona", "outcome": o}
                      for o in ("win", "win", "loss", "undecided")])
    assert rows[0]["wins"] == 2 and rows[0]["undecided"] == 1
    assert rows[0]["low"] < 2 / 3 < rows[0]["high"]


def test_quick_run_reports_malformed_logs_and_empty_groups(tmp_path, server):
    from gpa_fixtures import small_log

    rows = [*small_log(), {"id": "bad", "metadata": {"country": "A"}, "messages": "oops"},
            "not a conversation"]
    mapping = tmp_path / "groups.json"
    mapping.write_text(json.dumps({**{c["id"]: c["metadata"]["country"] for c in small_log()},
                                   "bad": "A", "gone": "Nobody"}))
    work = tmp_path / "quick"
    args = ["run", str(write_log(tmp_path, rows)), "-w", str(work), "--quick",
            "--llm-backend", "openai", "--llm-model", "stub", "--base-url", server.url,
            "-s", "llm.api_key_env=", "-s", f"group_map={mapping}", "-s", "relevance=keywords",
            "-s", "ft_model=tiny", "-s", "ft_max_steps=1", "-s", "ft_max_length=96",
            "-s", "answer_max_tokens=6", "-s", "ft_pairs_per_group=2"]
    result = CliRunner().invoke(gpa_app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)

    saved = (work / "gpa_config.yaml").read_text()
    assert "use_llm_labels: false" in saved and "max_groups: 2" in saved  # the preset
    assert "ft_pairs_per_group: 2" in saved  # --set wins over the preset
    report = read_json(stage_path(work, "ingest_report"))
    assert [(p["index"], p["field"]) for p in report["problems"]] == [(11, "messages"),
                                                                      (12, "<root>")]
    assert report["groups"]["Nobody"]["reason"].startswith("empty")
    # Cue labels only: no classify or attribute request reached the server.
    assert not any("react to the answer" in str(b) or "Which property" in str(b)
                   for b in server.bodies)
    assert "- Nobody: empty" in stage_path(work, "rubrics_md").read_text()
    assert read_json(stage_path(work, "finetune"))["groups"]["A"]["status"] == "trained"
    table = stage_path(work, "evaluate_md").read_text()
    assert "| A | gpa_ct | zero_shot |" in table and "| B | gpa_ct | persona |" in table


@pytest.mark.parametrize(("rows", "settings", "message"), [
    (["nope", {"id": "x", "messages": []}], [], "no usable conversation"),
    (None, ["-s", "min_conversations=9"], "no group has 9 or more conversations"),
])
def test_run_stops_after_ingest_when_no_group_can_get_a_rubric(tmp_path, rows, settings,
                                                               message):
    work = tmp_path / "w"
    result = CliRunner().invoke(gpa_app, ["run", str(write_log(tmp_path, rows)), "-w",
                                          str(work), "--quick", *settings])
    assert result.exit_code == 2 and message in result.output
    assert stage_path(work, "ingest_report").is_file()  # written before the stop
    assert not stage_path(work, "signals").exists()


def test_quick_preset_and_its_help_agree():
    from pluralign.gpa import GPAConfig
    from pluralign.gpa.config import QUICK_PRESET, describe_quick

    config = GPAConfig.quick(max_groups=3)
    assert config.use_llm_labels is False and config.max_groups == 3
    assert all(getattr(GPAConfig.quick(), name) == cap.value
               for name, cap in QUICK_PRESET.items())
    help_text = CliRunner().invoke(gpa_app, ["run", "--help"], terminal_width=200).output
    for name, cap in QUICK_PRESET.items():
        assert name in describe_quick() and cap.trade_off.split(" ")[0] in help_text
        assert f"{name}={str(cap.value).lower()}" in help_text


@pytest.mark.parametrize("command", ["ingest", "classify", "attributes", "rules", "rubrics",
                                     "answer", "finetune", "evaluate", "run", "fields"])
def test_every_command_help_has_examples(command):
    result = CliRunner().invoke(gpa_app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Examples:" in result.output
    assert f"pluralign gpa {command}" in result.output or command == "fields"
