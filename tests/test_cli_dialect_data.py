"""The one command-line dialect for ``pluralign data ...`` and ``pluralign gpa ...`` (issue 17
item 2): ``CMD [CONFIG.yaml] --field value``, ``--output_dir`` everywhere, the older
spellings through ``config_aliases``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpa_fixtures import write_log
from pluralign.cli import data as data_cli
from pluralign.cli.main import app
from pluralign.data import read_examples
from pluralign.data.builders import MiningConfig, OpinionsConfig, ReviewsConfig
from pluralign.data.demo import demo_questions

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), terminal_width=200)


def _total(out: Path) -> int:
    return sum(len(read_examples(out / f"{split}.jsonl")) for split in ("train", "eval", "test"))


# ---------------------------------------------------------------------- data demo


@pytest.mark.parametrize("pairs", ["--pairs_per_question", "--pairs-per-question"])
def test_data_demo_takes_underscores_and_dashes(tmp_path, pairs):
    out = tmp_path / "demo"
    result = invoke("data", "demo", "-g", "Northvale", pairs, "2", "--split-by", "example",
                    "--output_dir", str(out))
    assert result.exit_code == 0, result.output
    assert _total(out) == len(demo_questions()) * 2
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "pluralign demo opinions" in card and "from the region's distribution" in card


@pytest.mark.parametrize("flag", ["-o", "--out", "--output_dir", "--output-dir"])
def test_data_demo_output_folder_spellings(tmp_path, flag):
    out = tmp_path / flag.strip("-")
    result = invoke("data", "demo", "--groups", "Eastholm", "--pairs_per_question", "1",
                    flag, str(out))
    assert result.exit_code == 0, result.output
    assert f"to {out}" in result.output and (out / "train.jsonl").is_file()


def test_data_demo_yaml_config_then_an_override(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("groups: [Southmere]\npairs_per_question: 1\nuniform: true\nseed: 5\n"
                      f"output_dir: {tmp_path / 'from-yaml'}\n")
    out = tmp_path / "over"
    result = invoke("data", "demo", str(config), "--seed", "7", "--group", "Eastholm",
                    "-o", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "build_report.json").read_text())
    assert report["seed"] == 7  # the command line wins over the file
    assert {r.group for r in read_examples(out / "train.jsonl")} == {"Eastholm"}
    assert "uniformly" in (out / "README.md").read_text(encoding="utf-8")  # from the YAML
    assert not (tmp_path / "from-yaml").exists()
    yaml_only = invoke("data", "demo", str(config))  # the output folder from the file
    assert yaml_only.exit_code == 0, yaml_only.output
    assert (tmp_path / "from-yaml" / "train.jsonl").is_file()


def test_data_demo_without_an_output_folder_is_one_line(tmp_path):
    result = invoke("data", "demo", "--pairs_per_question", "1")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --output_dir DIR (-o DIR) is required")


def test_data_demo_fields_and_help_point_to_the_dialect():
    result = invoke("data", "demo", "--fields")
    assert result.exit_code == 0, result.output
    for name in ("groups", "pairs_per_question", "styles", "output_dir"):
        assert name in result.output
    help_text = invoke("data", "demo", "--help").output
    assert "--fields" in help_text and "--output_dir" in help_text
    assert "Every field is an option" in help_text


def test_data_demo_unknown_field_suggests_the_right_one(tmp_path):
    result = invoke("data", "demo", "--pairs_per_questoin", "2", "-o", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert 'Did you mean "pairs_per_question"' in result.output
    assert not (tmp_path / "x").exists()


def test_data_build_demo_reads_the_same_words_and_card(tmp_path):
    out = tmp_path / "built"
    result = invoke("data", "build", "demo", "--groups", "Northvale", "--set",
                    "pairs_per_question=1", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "pluralign demo opinions" in (out / "README.md").read_text(encoding="utf-8")
    fields = invoke("data", "build", "demo", "--fields")
    assert fields.exit_code == 0 and "pairs_per_question" in fields.output


# ------------------------------------------- builders with an LLM: the older names


@pytest.fixture
def captured(monkeypatch):
    """The config each builder command loads, caught before any LLM is asked."""
    seen: list = []

    def fake(name: str):
        cls = {"opinions": OpinionsConfig, "mine": MiningConfig, "reviews": ReviewsConfig}[name]

        def builder(config) -> None:
            seen.append(config)
            raise ValueError("caught before building")

        builder.__annotations__ = {"config": cls, "return": None}  # its config class
        return builder

    monkeypatch.setattr(data_cli, "_builder", fake)
    return seen


def test_opinions_older_options_map_onto_the_config(tmp_path, captured):
    result = invoke("data", "opinions", "--source", "rows.jsonl", "-g", "Japan", "--group",
                    "Pakistan", "--styles", "2", "--llm-backend", "openai", "--llm-model", "m",
                    "--base-url", "http://127.0.0.1:9/v1", "--api-key-env", "",
                    "--llm-cache", str(tmp_path / "cache"), "--llm-timeout", "0.5",
                    "--llm-retries", "0", "--max-questions", "3", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "caught before building" in result.output
    config = captured[0]
    assert type(config) is OpinionsConfig
    assert (config.groups, config.n_styles, config.max_questions) == (["Japan", "Pakistan"], 2, 3)
    llm = config.llm
    assert (llm.backend, llm.model, llm.base_url, llm.api_key_env) == (
        "openai", "m", "http://127.0.0.1:9/v1", "")
    assert (llm.cache_dir, llm.timeout, llm.max_retries) == (str(tmp_path / "cache"), 0.5, 0)


def test_opinions_keeps_the_old_llm_defaults(tmp_path, captured):
    invoke("data", "opinions", "-o", str(tmp_path / "o"))
    llm = captured[0].llm
    assert (llm.backend, llm.timeout, llm.max_retries, llm.cache_dir) == ("hf", 60.0, 4, None)


def test_opinions_bad_value_fails_at_config_time(tmp_path):
    result = invoke("data", "opinions", "--source", str(tmp_path / "x.jsonl"), "--llm-backend",
                    "opnai", "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "backend: unknown 'opnai'" in result.output
    assert not (tmp_path / "o").exists()


def test_mine_and_reviews_take_their_file_as_a_plain_word(tmp_path, captured):
    assert invoke("data", "mine", "hh.jsonl.gz", "--label-all", "--max-examples", "4",
                  "--llm.backend", "openai", "-o", str(tmp_path / "m")).exit_code == 2
    mined = captured[-1]
    assert (mined.source, mined.own_principle_agrees, mined.max_examples) == (
        "hh.jsonl.gz", False, 4)
    assert mined.llm.backend == "openai"
    assert invoke("data", "reviews", "-o", str(tmp_path / "r"), "reviews.jsonl",
                  "--min_reviews", "3").exit_code == 2
    assert (captured[-1].reviews, captured[-1].min_reviews) == ("reviews.jsonl", 3)
    missing = invoke("data", "reviews", "-o", str(tmp_path / "r"))
    assert missing.exit_code == 2 and "the review file (JSONL, .gz too) is required" in \
        missing.output


# ------------------------------------------------------------------------- gpa


def _saved(work: Path) -> dict:
    return yaml.safe_load((work / "gpa_config.yaml").read_text())


@pytest.mark.parametrize("flag", ["--work", "-w", "--output_dir", "--output-dir", "-o"])
def test_gpa_work_folder_spellings(tmp_path, flag):
    work = tmp_path / "work"
    result = invoke("gpa", "rules", flag, str(work), "--min-support", "3")
    assert result.exit_code == 2  # no earlier stage: one line, after the settings are saved
    assert "does not exist: run the stage that writes it first" in result.output
    saved = _saved(work)
    assert (saved["work_dir"], saved["min_support"]) == (str(work), 3)


def test_gpa_stage_reads_the_saved_config_unless_a_yaml_is_given(tmp_path):
    work = tmp_path / "w"
    log = write_log(tmp_path)
    first = invoke("gpa", "ingest", str(log), "-o", str(work), "--min_conversations", "2",
                   "--set", "llm.max_tokens=40")
    assert first.exit_code == 0, first.output
    assert _saved(work)["inputs"] == [str(log)]
    again = invoke("gpa", "rules", "--work", str(work), "--min_lift", "1.5")
    assert again.exit_code == 2  # rules still needs attributes.jsonl
    saved = _saved(work)
    assert (saved["min_conversations"], saved["llm"]["max_tokens"]) == (2, 40)  # kept
    assert saved["min_lift"] == 1.5 and saved["inputs"] == [str(log)]
    other = tmp_path / "other.yaml"
    other.write_text(f"work_dir: {work}\nmin_support: 4\n")
    invoke("gpa", "rules", str(other))
    saved = _saved(work)
    assert (saved["min_support"], saved["min_conversations"], saved["inputs"]) == (4, 3, [])


def test_gpa_run_quick_sits_above_the_yaml_and_under_the_options(tmp_path):
    config = tmp_path / "gpa.yaml"
    config.write_text(f"work_dir: {tmp_path / 'q'}\nmax_groups: 5\nseed: 9\n")
    result = invoke("gpa", "run", str(config), "--quick")  # no logs: stops at ingest
    assert result.exit_code == 2 and "inputs: name at least one" in result.output
    saved = _saved(tmp_path / "q")
    assert (saved["max_groups"], saved["use_llm_labels"], saved["seed"]) == (2, False, 9)
    invoke("gpa", "run", str(config), "--quick", "--max_groups", "3", "-o", str(tmp_path / "r"))
    assert _saved(tmp_path / "r")["max_groups"] == 3


def test_gpa_every_stage_lists_its_fields_and_points_to_them():
    for stage in ("ingest", "rules", "answer", "run"):
        result = invoke("gpa", stage, "--fields")
        assert result.exit_code == 0, result.output
        assert "GPAConfig fields" in result.output and "work_dir" in result.output
        assert "--fields" in invoke("gpa", stage, "--help").output
