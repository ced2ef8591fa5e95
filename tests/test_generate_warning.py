"""`pluralign generate` warns when the model was never trained with belief markers."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pluralign.cli.evaluate import UNTRAINED_WARNING
from pluralign.cli.main import app
from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.models import ModelConfig

runner = CliRunner()
ARGS = ["--device", "cpu", "--max-new-tokens", "4", "--beliefs", "1:No,2:Yes", "Tea?"]


def test_plain_model_gets_one_warning_line_on_stderr_after_the_answer():
    result = runner.invoke(app, ["generate", "--model", "tiny", *ARGS])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning == [UNTRAINED_WARNING.format(model="tiny")]
    text = warning[0]
    assert "tiny was not trained by pluralign with belief markers" in text
    assert "not meaningful" in text
    assert "`pluralign train`" in text and "`pluralign eval`" in text
    # stdout is the answer alone, belief first, as scripts read it.
    assert result.stdout.splitlines()[0].startswith("belief: ")
    assert "warning" not in result.stdout


def test_histogram_output_warns_too():
    result = runner.invoke(app, ["generate", "--model", "tiny", "--n", "3", *ARGS])
    assert result.exit_code == 0, result.output
    assert "not trained by pluralign" in result.stderr


@pytest.fixture(scope="module")
def trained_final(tmp_path_factory):
    """final/ of a one-step SFT run of the tiny model (it has pluralign_format.json)."""
    from pluralign.train.api import train
    from pluralign.train.config import TrainConfig

    root = tmp_path_factory.mktemp("warn")
    write_examples(root / "train.jsonl", conflicting_opinions(2, 2, seed=0))
    config = TrainConfig(method="sft", train_file=str(root / "train.jsonl"),
                         output_dir=str(root / "sft"),
                         model=ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0, device="cpu"),
                         max_steps=1, logging_steps=1, per_device_train_batch_size=4)
    return train(config).final_dir


def test_pluralign_trained_run_gets_no_warning(trained_final):
    assert (trained_final / "pluralign_format.json").is_file()
    result = runner.invoke(app, ["generate", "--model", str(trained_final), *ARGS])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("belief: ")
    assert "not trained by pluralign" not in result.output
