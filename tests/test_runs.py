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
