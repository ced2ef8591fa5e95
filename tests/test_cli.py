from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

runner = CliRunner()
COMMANDS = ["data", "train", "eval", "generate", "gpa", "demo", "ls"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_top_level_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output
    assert "Examples" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert "pluralign " + command in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == "pluralign 0.1.0"


def test_ls_prints_registered_models():
    result = invoke("ls", "models")
    assert result.exit_code == 0
    assert "smollm2-135m" in result.output and "tiny" in result.output
    assert "metrics" not in result.output


def test_ls_unknown_registry_suggests():
    result = invoke("ls", "metric")
    assert result.exit_code == 2
    assert 'unknown registry "metric". Did you mean "metrics"?' in result.output


def test_generate_prints_belief_and_response_deterministically():
    args = ["generate", "--model", "tiny", "--max-new-tokens", "5", "--beliefs",
            "1:Oppose,2:Support", "Is nuclear power good?"]
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    belief_line = first.output.splitlines()[0]
    assert belief_line.startswith(("belief: 1 ", "belief: 2 "))


def test_generate_unknown_model_is_a_clear_error(tmp_path):
    result = invoke("generate", "--model", str(tmp_path / "nope.gguf"), "hi")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_console_script_runs_in_a_subprocess():
    out = subprocess.run(
        [sys.executable, "-m", "pluralign", "ls", "models"], capture_output=True, text=True,
        check=True,
    )
    assert "smollm2-135m" in out.stdout
