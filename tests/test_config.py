from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from pluralign.config import (
    ConfigError,
    YamlConfig,
    describe_fields,
    load_config,
    missing_help,
    parse_overrides,
    read_yaml,
)
from pluralign.models import ModelConfig


@dataclass
class Optim(YamlConfig):
    lr: float = field(default=1e-4, metadata={"help": "learning rate"})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "betas"})


@dataclass
class Run(YamlConfig):
    name: str = field(default="run", metadata={"help": "run name"})
    steps: int = field(default=10, metadata={"help": "training steps"})
    beta: float = field(default=0.1, metadata={"help": "DPO beta"})
    use_lora: bool = field(default=False, metadata={"help": "LoRA on/off"})
    method: Literal["sft", "dpo", "gdpo"] = field(default="gdpo", metadata={"help": "method"})
    groups: list[str] = field(default_factory=list, metadata={"help": "groups"})
    eval_every: int | None = field(default=None, metadata={"help": "eval interval"})
    output_dir: Path = field(default=Path("runs/x"), metadata={"help": "where outputs go"})
    weights: dict[str, float] = field(default_factory=dict, metadata={"help": "loss weights"})
    optim: Optim = field(default_factory=Optim, metadata={"help": "optimiser"})

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps: must be > 0, got {self.steps}")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


YAML = """\
name: us-gdpo
steps: 200
method: dpo
groups: [United States, Pakistan]
weights: {calibration: 1.0, nll: 0.5}
optim:
  lr: 5.0e-6
"""


def test_yaml_then_cli_overrides_then_dataclass(tmp_path):
    path = write(tmp_path, YAML)
    cfg = load_config(
        Run, path,
        ["--steps", "50", "--use-lora", "--method=gdpo", "--optim.betas", "0.8,0.9",
         "--eval_every", "none", "--beta", "1e-2"],
    )
    assert cfg == Run(
        name="us-gdpo", steps=50, beta=0.01, use_lora=True, method="gdpo",
        groups=["United States", "Pakistan"], eval_every=None, output_dir=Path("runs/x"),
        weights={"calibration": 1.0, "nll": 0.5}, optim=Optim(lr=5e-6, betas=[0.8, 0.9]),
    )


def test_round_trip_through_yaml_is_exact(tmp_path):
    cfg = load_config(Run, write(tmp_path, YAML), ["--eval_every", "25"])
    saved = cfg.save(tmp_path / "out" / "config.yaml")
    again = Run.load(saved)
    assert again == cfg
    assert again.optim.lr == 5e-6 and again.eval_every == 25
    assert saved.read_text().startswith("name: us-gdpo\n")


def test_defaults_without_yaml():
    assert load_config(Run) == Run()
    assert load_config(Run, None, {"optim.lr": "0.5"}).optim.lr == 0.5


def test_unknown_yaml_key_names_file_line_and_suggests(tmp_path):
    path = write(tmp_path, "name: a\nstesp: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(Run, path)
    assert str(err.value) == f"{path}:2: Run has no field 'stesp'. Did you mean \"steps\"?"


def test_wrong_type_names_file_line_and_field(tmp_path):
    path = write(tmp_path, "name: a\n\nsteps: many\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3 \(field 'steps'\): expected an integer"):
        load_config(Run, path)


def test_nested_wrong_type_points_at_nested_line(tmp_path):
    path = write(tmp_path, "optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"field 'lr'.*expected a number, got 'fast'"):
        load_config(Run, path)


def test_bad_literal_lists_choices(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Run, None, ["--method", "gdpp"])
    assert "command line --method" in str(err.value)
    assert "['sft', 'dpo', 'gdpo']" in str(err.value)
    assert 'Did you mean "gdpo"' in str(err.value)


def test_unknown_cli_option_suggests():
    with pytest.raises(ConfigError, match=r"command line --setps: Run has no field 'setps'"):
        load_config(Run, None, ["--setps", "3"])


def test_post_init_validation_is_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid Run: steps: must be > 0, got 0"):
        load_config(Run, write(tmp_path, "steps: 0\n"))


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    path = write(tmp_path, "steps: 1\nname: a\nsteps: 2\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: key 'steps' repeats the one on line 1"):
        read_yaml(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_yaml(write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("no", False), ("1", True), ("False", False)]
)
def test_bool_spellings(value, expected):
    assert load_config(Run, None, ["--use_lora", value]).use_lora is expected


def test_bool_rejects_other_words():
    with pytest.raises(ConfigError, match="expected true or false, got 'maybe'"):
        load_config(Run, None, ["--use_lora", "maybe"])


def test_int_field_rejects_fraction_and_bool():
    with pytest.raises(ConfigError, match=r"expected an integer, got 2\.5"):
        load_config(Run, None, {"steps": 2.5})
    with pytest.raises(ConfigError, match="expected an integer, got True"):
        load_config(Run, None, {"steps": True})


def test_parse_overrides_forms():
    parsed = parse_overrides(["--a", "1", "--b=x y", "--flag", "--c-d", "2"])
    assert {k: v.value for k, v in parsed.items()} == {"a": "1", "b": "x y", "flag": "true",
                                                       "c_d": "2"}
    with pytest.raises(ConfigError, match="expected an option like --key value, got 'stray'"):
        parse_overrides(["stray"])


def test_model_config_validation_and_help():
    assert missing_help(ModelConfig) == []
    assert missing_help(Run) == []
    with pytest.raises(ValueError, match="lora_r: must be >= 0"):
        ModelConfig(lora_r=-1)
    with pytest.raises(ValueError, match="lora_dropout"):
        ModelConfig(lora_dropout=1.0)


def test_model_config_yaml_and_override(tmp_path):
    path = write(tmp_path, "model: tiny\nlora_r: 8\nlora_target_modules: [q_proj, v_proj]\n")
    cfg = ModelConfig.load(path, ["--lora_alpha", "32", "--dtype", "bfloat16"])
    assert (cfg.model, cfg.lora_r, cfg.lora_alpha, cfg.dtype) == ("tiny", 8, 32.0, "bfloat16")
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]


def test_missing_help_finds_undocumented_fields():
    @dataclass
    class Bad:
        documented: int = field(default=1, metadata={"help": "yes"})
        bare: int = 2

    assert missing_help(Bad) == ["Bad.bare"]


def test_describe_fields_flattens_nested():
    rows = {key: (tp, default, help_) for key, tp, default, help_ in describe_fields(Run)}
    assert rows["optim.lr"] == ("float", "0.0001", "learning rate")
    assert rows["steps"] == ("int", "10", "training steps")


def test_tuple_and_optional_list_fields():
    @dataclass
    class Shapes:
        dims: tuple[int, ...] = field(default=(1,), metadata={"help": "dims"})
        names: list[str] | None = field(default=None, metadata={"help": "names"})

    cfg = load_config(Shapes, None, ["--dims", "[2, 3]", "--names", "a,b"])
    assert cfg == Shapes(dims=(2, 3), names=["a", "b"])
    assert load_config(Shapes, None, ["--names", "null"]).names is None
    expected = r"--dims \(field 'dims'\) item 1: expected an integer, got 'x'"
    with pytest.raises(ConfigError, match=expected):
        load_config(Shapes, None, ["--dims", "1,x"])


# --------------------------------------------- nested overrides keep the field's own default


@dataclass
class Tuned(YamlConfig):
    """A nested field whose default differs from its class's defaults (like TrainConfig.model)."""

    optim: Optim = field(default_factory=lambda: Optim(lr=3e-3, betas=[0.5, 0.6]),
                         metadata={"help": "optimiser"})


def test_a_cli_override_of_one_nested_field_keeps_its_siblings():
    config = load_config(Tuned, None, ["--optim.lr", "1e-2"])
    assert config.optim == Optim(lr=1e-2, betas=[0.5, 0.6])  # not Optim's [0.9, 0.999]


def test_a_yaml_override_of_one_nested_field_keeps_its_siblings(tmp_path):
    config = load_config(Tuned, write(tmp_path, "optim:\n  betas: [0.1, 0.2]\n"))
    assert config.optim == Optim(lr=3e-3, betas=[0.1, 0.2])


def test_yaml_and_cli_nested_overrides_combine_on_the_field_default(tmp_path):
    config = load_config(Tuned, write(tmp_path, "optim:\n  betas: [0.1, 0.2]\n"),
                         ["--optim.lr", "1e-2"])
    assert config.optim == Optim(lr=1e-2, betas=[0.1, 0.2])


def test_describe_fields_shows_the_nested_defaults_a_run_uses():
    rows = {key: default for key, _, default, _ in describe_fields(Tuned)}
    assert rows == {"optim.lr": "0.003", "optim.betas": "[0.5, 0.6]"}


def test_train_config_keeps_lora_when_only_the_start_model_changes(tmp_path):
    # The README's GDPO command: `--model.model runs/sft/final` used to rebuild ModelConfig
    # from its class defaults, so lora_r fell from 8 to 0 and every weight was trained.
    from pluralign.train.config import TrainConfig

    from_cli = TrainConfig.load(None, ["--model.model", "runs/sft/final"])
    from_yaml = TrainConfig.load(write(tmp_path, "model:\n  model: runs/sft/final\n"))
    for config in (from_cli, from_yaml):
        assert (config.model.model, config.model.lora_r, config.model.lora_alpha) == (
            "runs/sft/final", 8, 16.0)
    rows = {key: default for key, _, default, _ in describe_fields(TrainConfig)}
    assert (rows["model.model"], rows["model.lora_r"]) == ("'smollm2-135m'", "8")
