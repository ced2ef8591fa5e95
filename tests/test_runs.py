from __future__ import annotations

import json

from pluralign.models import ModelConfig
from pluralign.runs import prepare_run_dir


def test_run_dir_holds_the_resolved_config(tmp_path):
    config = ModelConfig.load(None, ["--model", "tiny", "--lora_r", "4"])
    out = prepare_run_dir(tmp_path / "run", config, command="pluralign test")
    assert ModelConfig.load(out / "config.yaml") == config
    meta = json.loads((out / "run.json").read_text())
    assert meta["command"] == "pluralign test"
    assert meta["config_class"] == "pluralign.models.loading.ModelConfig"
    assert meta["versions"]["torch"].startswith("2.")


def test_overwrite_removes_the_earlier_runs_tensorboard_events_and_nothing_else(tmp_path):
    from pluralign.run_folder import is_owned_name, remove_own_outputs

    events = tmp_path / "runs" / "Dec03_10-00-00_host"
    events.mkdir(parents=True)
    (events / "events.out.tfevents.1").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert is_owned_name("runs") and not is_owned_name("notes.txt")
    remove_own_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
