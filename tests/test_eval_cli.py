"""The eval and generate commands of the ``pluralign`` app."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from pluralign.cli.evaluate import parse_beliefs, parse_target
from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from pluralign.cli.main import app

    return app


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "test.jsonl"
    write_examples(path, conflicting_opinions(2, 3, seed=4))
    return path


runner = CliRunner()


def test_generate_prints_belief_and_response(app):
    result = runner.invoke(app, ["generate", "--model", "tiny", "--device", "cpu",
                                 "--beliefs", "1:No,2:Yes", "--max-new-tokens", "4", "Tea?"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:2] in (["belief:", "1"], ["belief:", "2"])
    assert lines[1].startswith("response:")


def test_generate_histogram_beside_the_target(app):
    result = runner.invoke(app, ["generate", "-m", "tiny", "--device", "cpu", "--n", "20",
                                 "--beliefs", "1:Oppose,2:Neutral,3:Support",
                                 "--target", "0.2,0.3,0.5", "--max-new-tokens", "3", "Tea?"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()
            if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert sum(int(r[2]) for r in rows) == 20  # counts of the 20 sampled beliefs
    assert [float(r[5]) for r in rows] == [0.2, 0.3, 0.5]  # the target column
    assert "JSD to target" in result.output


def test_generate_takes_prompt_beliefs_and_target_from_a_record(app, data):
    record = conflicting_opinions(2, 3, seed=4)[3]
    result = runner.invoke(app, ["generate", "-m", "tiny", "--device", "cpu", "--n", "5",
                                 "--data", str(data), "--index", "3", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    assert f"question: {record.prompt}" in result.output
    assert "Strongly oppose" in result.output
    assert f"{record.target_distribution[0]:.3f}" in result.output


def test_generate_reports_bad_input(app, data):
    result = runner.invoke(app, ["generate", "-m", "tiny", "--data", str(data), "--index", "99"])
    assert result.exit_code == 2 and "outside" in result.output
    result = runner.invoke(app, ["generate", "-m", "tiny", "--beliefs", "1:a,2:b",
                                 "--target", "0.5", "Q?"])
    assert result.exit_code == 2 and "--target has 1 values" in result.output


def test_eval_compares_models_in_one_report(app, data, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "--model", "tiny", "--model", "tiny", "--data",
                                 str(data), "--out", str(out), "--n", "2", "--max-new-tokens",
                                 "3", "--belief-samples", "8", "--device", "cpu",
                                 "--response-temperature", "0"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "eval.json").read_text())
    assert list(summary["models"]) == ["tiny", "tiny-2"]
    assert summary["config"]["n_samples"] == 2 and summary["config"]["belief_samples"] == 8
    assert (summary["config"]["temperature"], summary["config"]["response_temperature"]) == (
        1.0, 0.0)
    assert "tiny: jsd" in result.output and (out / "report.html").is_file()


def test_eval_config_file_with_overrides(app, data, tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text(f"models: [tiny]\ndata: {data}\nn_samples: 1\nmax_new_tokens: 2\n"
                      f"belief_samples: 0\ndevice: cpu\nprogress: false\nout: {tmp_path / 'a'}\n")
    result = runner.invoke(app, ["eval", "--config", str(config), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert "jsd_sampled" not in summary["models"]["tiny"]["metrics"]
    assert not (tmp_path / "a").exists()


def test_eval_without_data_fails_with_a_message(app):
    result = runner.invoke(app, ["eval", "--model", "tiny"])
    assert result.exit_code == 2 and "data" in result.output


def test_parsers():
    beliefs = parse_beliefs("1:Strongly oppose, 2:Somewhat oppose,5:Strongly support")
    assert [(b.class_id, b.description) for b in beliefs] == [
        (1, "Strongly oppose"), (2, "Somewhat oppose"), (5, "Strongly support")]
    assert parse_target("1,1,2", 3) == [0.25, 0.25, 0.5]
    with pytest.raises(ValueError):
        parse_beliefs("x:bad,2:b")
