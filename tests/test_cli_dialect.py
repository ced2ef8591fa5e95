"""One command-line dialect: ``pluralign CMD [CONFIG.yaml] --field value`` (issue 17 item 2),
and every TRL training argument reachable from ``pluralign train``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app
from pluralign.cli.options import CommandLineError, load_from_command_line, split_command_line
from pluralign.config import ConfigError, load_config
from pluralign.eval.config import EvalConfig, GenerateConfig
from pluralign.models import ModelConfig
from pluralign.train.arguments import trainer_arguments
from pluralign.train.config import TrainConfig

runner = CliRunner()


# ------------------------------------------------------------------ the word parser


def test_split_reads_yaml_first_shorts_sets_and_operands_anywhere():
    config, words = split_command_line(
        ["run.yaml", "-m", "a", "--max-new-tokens", "4", "Tea?", "-s", "seed=3",
         "--warmup_steps", "-1"],
        short={"-m": "model"}, operand="prompt")
    assert config == "run.yaml"
    assert words == ["--model", "a", "--max-new-tokens", "4", "--prompt=Tea?", "--seed=3",
                     "--warmup_steps", "-1"]
    assert split_command_line(["--config=x.yml", "--bf16"]) == ("x.yml", ["--bf16"])
    assert split_command_line(["-c", "x.yml"]) == ("x.yml", [])


@pytest.mark.parametrize("words, message", [
    (["--set", "novalue"], "expected KEY=VALUE"),
    (["--config"], "needs a value"),
])
def test_split_names_the_bad_word(words, message):
    with pytest.raises(CommandLineError, match=message):
        split_command_line(words)


def test_a_stray_word_without_an_operand_field_is_an_error():
    with pytest.raises(ConfigError, match="expected an option like --key value, got 'stray'"):
        load_from_command_line(EvalConfig, ["stray"])


# ------------------------------------------------------------ aliases and repeats


def test_eval_takes_its_older_names_dashes_and_repeats(tmp_path):
    config = load_from_command_line(
        EvalConfig, ["--model", "a", "-m", "b", "--out", str(tmp_path), "--n", "2",
                     "--max-new-tokens", "5", "--belief_samples", "0"],
        short={"-m": "models"})
    assert config.models == ["a", "b"]
    assert (config.output_dir, config.n_samples) == (str(tmp_path), 2)
    assert (config.max_new_tokens, config.belief_samples) == (5, 0)


def test_an_alias_and_its_field_together_are_one_repeated_option():
    with pytest.raises(ConfigError, match="--output_dir: given more than once; 'output_dir' "
                                          "takes one value"):
        load_config(EvalConfig, None, ["--output_dir", "a", "--out", "b"])


def test_a_repeated_single_value_option_is_refused():
    with pytest.raises(ConfigError, match="--seed: given more than once"):
        load_config(EvalConfig, None, ["--seed", "1", "--seed", "2"])


def test_an_alias_works_in_yaml_with_its_line(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("models: [a]\nout: here\nn: nope\n")
    with pytest.raises(ConfigError, match=r"eval.yaml:3 \(field 'n_samples'\): expected an "
                                          "integer"):
        load_config(EvalConfig, path)
    path.write_text("models: [a]\nout: here\n")
    assert load_config(EvalConfig, path).output_dir == "here"


def test_layers_defaults_preset_yaml_words(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("n: 3\nseed: 7\n")
    config = load_from_command_line(GenerateConfig, [str(path), "--seed", "9"],
                                    before={"n": 2, "top_p": 0.5, "seed": 1})
    assert (config.n, config.seed, config.top_p) == (3, 9, 0.5)


# ------------------------------------------------------ every TRL argument for train


def test_trl_fields_pass_through_from_the_command_line_and_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: gdpo\nweight_decay: 0.05\ntraining_args:\n  adam_beta2: 0.99\n"
                    "model:\n  lora_r: 4\n")
    config = load_config(TrainConfig, path, ["--max-grad-norm", "0.5", "--share_prefix",
                                             "false", "--model.model", "x"])
    assert config.training_args == {"adam_beta2": 0.99, "weight_decay": 0.05,
                                    "max_grad_norm": 0.5, "share_prefix": False}
    assert (config.model.model, config.model.lora_r) == ("x", 4)
    arguments = trainer_arguments(config, has_eval=False)
    assert (arguments["weight_decay"], arguments["adam_beta2"], arguments["max_grad_norm"],
            arguments["share_prefix"]) == (0.05, 0.99, 0.5, False)
    # The resolved config keeps them, so a saved config.yaml reproduces the run.
    assert load_config(TrainConfig, config.save(tmp_path / "saved.yaml")) == config


@pytest.mark.parametrize("words, message", [
    (["--weight_decai", "1"], 'no field \'weight_decai\'. Did you mean "weight_decay"'),
    (["--max_grad_norm", "abc"], r"--max_grad_norm \(field 'max_grad_norm'\): expected a "
                                 "number"),
    (["--eval_strategy", "no"], "training_args.eval_strategy: pluralign sets it; use "
                                "eval_steps"),
    (["--method", "sft", "--share_prefix", "false"], "training_args.share_prefix: not an "
                                                     "option of SFTConfig"),
    (["--load_best_model_at_end", "true"], "use select_best_by"),
])
def test_bad_pass_through_options_fail_in_one_line(words, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, words)


@pytest.mark.parametrize("method", ["sft", "gdpo", "kto"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_trl_configs_build_without_the_deprecated_checkpointing_alias(method, checkpointing,
                                                                     tmp_path):
    import warnings

    from pluralign.train.trl_options import family_config_class

    config = TrainConfig(method=method, output_dir=str(tmp_path),
                         gradient_checkpointing=checkpointing)
    family = config.method_spec.family
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*gradient_checkpointing.*deprecated")
        args = family_config_class(family)(
            **trainer_arguments(config, has_eval=False))
    assert args.activation_checkpointing is checkpointing
    assert args.gradient_checkpointing is checkpointing  # the old name mirrors it


def test_the_python_api_checks_training_args_too():
    assert TrainConfig(method="sft", training_args={"weight_decay": "0.1"}).training_args == {
        "weight_decay": 0.1}
    with pytest.raises(ValueError, match=r"training_args\.learning_rate: a TrainConfig field"):
        TrainConfig(training_args={"learning_rate": 1e-4})


def test_loss_type_takes_each_familys_type_from_the_command_line(tmp_path):
    # SFTConfig's loss_type is a string, DPOConfig's a list: both read before the method is
    # known, and the family's own type decides when the trainer's config is built.
    rpo = load_from_command_line(TrainConfig, [
        "--loss_type", "sigmoid", "--loss_type", "sft", "--loss_weights", "1",
        "--loss_weights", "0.5", "--output_dir", str(tmp_path)])
    assert rpo.training_args == {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}
    arguments = trainer_arguments(rpo, has_eval=False)
    from pluralign.train.preference import GDPOConfig

    assert GDPOConfig(**arguments).chosen_nll_weight == 0.5
    sft = load_from_command_line(TrainConfig, ["--method", "sft", "--loss_type", "dft"])
    assert sft.training_args == {"loss_type": "dft"}
    with pytest.raises(ValueError, match=r"training_args\.loss_type: expected a string"):
        TrainConfig(method="sft", training_args={"loss_type": ["sigmoid", "sft"]})


def test_a_passed_through_option_reaches_the_trainer(tmp_path):
    from pluralign.data.toy import conflicting_opinions
    from pluralign.train.api import build_trainer

    config = load_from_command_line(TrainConfig, [
        "--method", "sft", "--output_dir", str(tmp_path / "run"), "--weight-decay", "0.1",
        "--adam_epsilon", "1e-6", "--max_steps", "1"])
    config.model = ModelConfig(model="tiny", device="cpu")
    trainer = build_trainer(config, train_records=conflicting_opinions(2, 2, seed=0))
    assert (trainer.args.weight_decay, trainer.args.adam_epsilon) == (0.1, 1e-6)


# ----------------------------------------------------------------- the commands


@pytest.mark.parametrize("command", ["train", "eval", "generate", "demo"])
def test_every_config_command_points_help_to_fields(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--fields" in result.output and "--field value" in result.output


@pytest.mark.parametrize("command, field", [("train", "training_args"),
                                            ("eval", "output_dir"),
                                            ("generate", "max_new_tokens"),
                                            ("demo", "preference_steps")])
def test_fields_lists_each_commands_fields(command, field):
    result = runner.invoke(app, [command, "--fields"], terminal_width=200)
    assert result.exit_code == 0 and field in result.output


def test_eval_refuses_an_unknown_option_with_a_suggestion():
    result = runner.invoke(app, ["eval", "-m", "tiny", "--judge_modle", "x"])
    assert result.exit_code == 2
    assert 'no field \'judge_modle\'. Did you mean "judge_model"' in result.output


def test_build_trainers_options_are_checked_as_training_args(tmp_path):
    from pluralign.train.api import build_trainer

    config = TrainConfig(method="sft", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"training_args\.share_prefix: not an option of "
                                         "SFTConfig"):
        build_trainer(config, train_records=[], trainer_options={"share_prefix": False})


def test_a_bare_flag_before_the_operand_leaves_the_operand_alone():
    config = load_from_command_line(GenerateConfig, ["--trust_remote_code", "Tea?"],
                                    operand="prompt")
    assert (config.trust_remote_code, config.prompt) == (True, "Tea?")
    config = load_from_command_line(GenerateConfig, ["--trust-remote-code", "off", "Tea?"],
                                    operand="prompt")
    assert (config.trust_remote_code, config.prompt) == (False, "Tea?")
    config = load_from_command_line(GenerateConfig, ["--model", "tiny", "Tea?"],
                                    operand="prompt")
    assert (config.model, config.prompt) == ("tiny", "Tea?")
