"""``report_to``: backends checked at config time; metrics reach them as metrics.jsonl has them."""

from __future__ import annotations

import importlib.util
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app
from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.models import ModelConfig
from pluralign.train import report_to
from pluralign.train.config import TrainConfig
from pluralign.train.metrics import read_metrics

MISSING = 'report_to: tensorboard is not installed; pip install "pluralign[tensorboard]"'
UNKNOWN = ("report_to: unknown backend 'tensorbord'. Did you mean \"tensorboard\"? Known: "
           "tensorboard, wandb, all, azure_ml, clearml, codecarbon, comet_ml, dagshub, dvclive, "
           "flyte, kubeflow, mlflow, neptune, swanlab, trackio, none")


@pytest.fixture
def no_tensorboard(monkeypatch):
    """Neither package that provides the tensorboard backend is installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in ("tensorboard", "tensorboardX") else real(name, *args, **kwargs)

    monkeypatch.setattr(report_to.importlib.util, "find_spec", find_spec)


def test_a_missing_backend_fails_in_one_line_with_its_install_command(no_tensorboard):
    with pytest.raises(ValueError) as raised:
        TrainConfig(report_to=["tensorboard"])
    assert str(raised.value) == MISSING


def test_the_cli_prints_the_one_line_before_anything_loads(no_tensorboard, tmp_path):
    result = CliRunner().invoke(app, ["train", "--report_to", "tensorboard", "--train_file",
                                      str(tmp_path / "absent.jsonl"),
                                      "--output_dir", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert MISSING in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_an_unknown_backend_fails_in_one_line_with_the_closest_name():
    with pytest.raises(ValueError) as raised:
        TrainConfig(report_to=["tensorbord"])
    assert str(raised.value) == UNKNOWN
    with pytest.raises(ValueError, match="cannot be combined"):
        TrainConfig(report_to=["none", "wandb"])


def test_transformers_other_backends_pass_through_to_transformers():
    # No extra for them: transformers checks them when the trainer is built, as before.
    assert TrainConfig(report_to=["mlflow"]).report_to == ["mlflow"]
    assert TrainConfig(report_to="all").report_to == ["all"]


def test_report_to_spellings_of_no_backend_and_a_plain_string():
    assert TrainConfig(report_to=["none"]).report_to == []
    assert TrainConfig(report_to="none").report_to == []
    if report_to.backend_available("tensorboard"):
        assert TrainConfig(report_to="tensorboard").report_to == ["tensorboard"]


def _tensorboard_scalars(run_dir):
    """{(tag, step): [values]} of every event file under ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = defaultdict(list)
    folders = {path.parent for path in run_dir.rglob("events.out.tfevents.*")}
    assert folders, f"no tensorboard event files under {run_dir}"
    for folder in folders:
        events = EventAccumulator(str(folder))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            for event in events.Scalars(tag):
                found[tag, event.step].append(event.value)
    return found


def _jsonl_scalars(run_dir):
    """The same map from metrics.jsonl, under the tags transformers gives tensorboard."""
    from transformers.integrations.integration_utils import rewrite_logs

    expected = defaultdict(list)
    for record in read_metrics(run_dir):
        if "selected_step" in record:  # written at the end of training, not a trainer log
            continue
        logged = {k: v for k, v in record.items() if k not in ("step", "epoch", "time")}
        for tag, value in rewrite_logs(logged).items():
            expected[tag, record["step"]].append(value)
    return expected


@pytest.mark.slow
def test_tensorboard_gets_belief_jsd_margins_and_tokens_per_second(tmp_path):
    pytest.importorskip("tensorboard")  # in the dev extra; a bare environment skips
    from pluralign.train.api import train

    write_examples(tmp_path / "train.jsonl", conflicting_opinions(4, 4, seed=0))
    write_examples(tmp_path / "eval.jsonl", conflicting_opinions(4, 2, seed=1))
    config = TrainConfig(
        method="gdpo", train_file=str(tmp_path / "train.jsonl"),
        eval_file=str(tmp_path / "eval.jsonl"), output_dir=str(tmp_path / "run"),
        model=ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0, device="cpu"),
        max_steps=3, eval_steps=2, logging_steps=1, save_steps=3,
        per_device_train_batch_size=4, learning_rate=5e-3, report_to=["tensorboard"])
    result = train(config)

    expected = _jsonl_scalars(result.output_dir)
    found = _tensorboard_scalars(result.output_dir)
    tags = {tag for tag, _ in expected}
    # What this change routes (belief JSD, tokens/s) and what the trainer logs (margins).
    assert {"eval/belief/jsd", "eval/belief/mass", "train/tokens_per_second",
            "eval/rewards/margins_majority", "eval/rewards/margins_minority"} <= tags
    assert any(tag.startswith("train/rewards/margins_") for tag in tags)
    # Every value metrics.jsonl holds reached tensorboard at its step (float32 there) ...
    for key, values in expected.items():
        assert key in found, f"{key} is in metrics.jsonl but not in tensorboard"
        assert found[key] == pytest.approx(values, rel=1e-6), key
    # ... and metrics.jsonl holds one belief record per evaluation, none written twice.
    records = read_metrics(result.output_dir)
    belief_steps = [r["step"] for r in records if "eval_belief/jsd" in r]
    assert belief_steps == [r["step"] for r in records if "eval_loss" in r]
    assert belief_steps[:2] == [0, 2]
    assert all(set(r) == {"step", "epoch", "time", "eval_belief/jsd", "eval_belief/mass"}
               for r in records if "eval_belief/jsd" in r)
