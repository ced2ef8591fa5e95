"""The model card of a run's final/: base model, method, belief format, groups, usage."""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import re
import shlex

import pytest
from typer.testing import CliRunner

from pluralign.beliefs.formats import SequenceFormat, named_format
from pluralign.data.records import Belief, write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.models import ModelConfig
from pluralign.train.model_card import (
    ModelCardInfo,
    hub_base_model,
    model_card,
    sequence_layout,
    split_front_matter,
    usage_snippets,
)

BELIEFS = (Belief(1, "Strongly oppose"), Belief(2, "Oppose, mostly"), Belief(5, "Support"))
TRL_FRONT_MATTER = {"library_name": "transformers", "model_name": "gdpo",
                    "tags": ["generated_from_trainer", "dpo", "trl"], "licence": "license"}


def info(**overrides) -> ModelCardInfo:
    settings = dict(
        run_name="gdpo", base_model="smollm2-135m",
        base_model_hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", method="gdpo",
        method_summary="GDPO: belief calibration + DPO.", format_name="marker-options",
        fmt=named_format("marker-options"), groups=("Pakistan", "United States"),
        train_records=40, steps=60, selected_step=40, lora_r=16,
        model_path="runs/gdpo/final", example_prompt="Is nuclear power good?",
        example_beliefs=BELIEFS)
    settings.update(overrides)
    return ModelCardInfo(**settings)


def code_block(card: str, language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", card, flags=re.DOTALL)
    assert match, f"no {language} block in the card"
    return match.group(1)


def test_card_names_base_model_method_format_and_groups():
    card = model_card(info(), TRL_FRONT_MATTER)
    meta, body = split_front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["library_name"] == "transformers" and meta["model_name"] == "gdpo"
    assert meta["tags"][:3] == ["generated_from_trainer", "dpo", "trl"]  # TRL's, kept
    assert {"pluralign", "gdpo", "belief-first"} <= set(meta["tags"])
    assert "licence" not in meta  # TRL's placeholder names no licence
    assert "fine-tuned version of [None]" not in body
    assert "| base model | `smollm2-135m` ([HuggingFaceTB/SmolLM2-135M-Instruct]" in body
    assert "| method | `gdpo`: GDPO: belief calibration + DPO. |" in body
    assert "| target groups | `Pakistan`, `United States` |" in body
    assert "| sequence format | `marker-options` |" in body
    assert "final/ holds step 40's weights" in body
    assert ("<Q>{prompt}<A><|belief|>{class}(Options: {options})<{description}>{response}<eos>"
            in code_block(body, "text"))
    # The options line is the format's own rendering of the example's belief set.
    assert "1 = Strongly oppose; 2 = Oppose, mostly; 5 = Support" in body


def test_card_without_trl_front_matter_or_hub_id_still_has_the_hub_keys():
    meta, body = split_front_matter(model_card(info(base_model="tiny", base_model_hub_id=None)))
    assert "base_model" not in meta and meta["library_name"] == "transformers"
    assert meta["tags"] == ["pluralign", "gdpo", "belief-first"]
    assert "This model is `tiny` fine-tuned with `gdpo`" in body


def test_layouts_of_other_formats():
    assert sequence_layout(named_format("paper")) == (
        "<Q>{prompt}<A>{class}<{description}>{response}<eos>")
    assert sequence_layout(named_format("reviews")) == (
        "<Q>{prompt}<A><|belief|>{class}{response}<eos>")
    special = SequenceFormat(marker="special", separator="<|belief|>")
    assert "<|belief|><|belief_{class}|><{description}>" in sequence_layout(special)
    card = model_card(info(fmt=named_format("reviews"), format_name="reviews"))
    assert "no description: the response follows the marker directly" in card


def test_hub_base_model():
    assert hub_base_model("smollm2-135m", is_local=False) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_base_model("tiny", is_local=False) is None
    assert hub_base_model("Qwen/Qwen2.5-0.5B", is_local=False) == "Qwen/Qwen2.5-0.5B"
    assert hub_base_model("runs/sft/final", is_local=True) is None
    # A run trained from an earlier run keeps that run's lineage.
    sft_card = model_card(info(method="sft"))
    assert hub_base_model("runs/sft/final", is_local=True, local_card=sft_card) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct")


def test_snippets_use_the_real_api_and_quote_the_shell():
    shell, python = usage_snippets(info(example_prompt="Nuclear power: it's good?"))
    for node in ast.walk(ast.parse(python)):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
    from pluralign.eval.generate import SamplingOptions, generate_beliefs_first

    assert {"fmt", "options"} <= set(inspect.signature(generate_beliefs_first).parameters)
    assert SamplingOptions(temperature=0).temperature == 0
    first = shlex.split(shell.splitlines()[0].rstrip("\\") + shell.splitlines()[1])
    assert first[:4] == ["pluralign", "generate", "--model", "runs/gdpo/final"]
    # --beliefs splits on commas, so a description's own comma must not reach it.
    assert first[first.index("--beliefs") + 1] == "1:Strongly oppose,2:Oppose; mostly,5:Support"
    assert first[-1] == "Nuclear power: it's good?"


# ----------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-step SFT run of the tiny model on records of two groups."""
    from pluralign.train.api import train
    from pluralign.train.config import TrainConfig

    root = tmp_path_factory.mktemp("card")
    records = (conflicting_opinions(2, 2, seed=0, group="Pakistan")
               + conflicting_opinions(2, 2, seed=1, group="United States"))
    write_examples(root / "train.jsonl", records)
    config = TrainConfig(method="sft", train_file=str(root / "train.jsonl"),
                         output_dir=str(root / "sft"),
                         model=ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0, device="cpu"),
                         max_steps=1, logging_steps=1, per_device_train_batch_size=4)
    return train(config), records[0]


def test_trained_run_writes_the_card_with_trls_front_matter(trained_run):
    result, first = trained_run
    card = (result.final_dir / "README.md").read_text(encoding="utf-8")
    meta, body = split_front_matter(card)
    assert meta["library_name"] == "transformers"
    assert {"trl", "sft", "pluralign", "belief-first"} <= set(meta["tags"])
    assert "base_model" not in meta  # tiny is no Hub model
    assert "| base model | `tiny` |" in body
    assert "| method | `sft`:" in body
    assert "| target groups | `Pakistan`, `United States` |" in body
    assert "| sequence format | `separated` |" in body
    assert "<Q>{prompt}<A><|belief|>{class}<{description}>{response}<eos>" in body
    assert "Quick start" not in body and "pipeline(" not in body  # TRL's body is gone
    assert repr(first.prompt) in code_block(body, "python")
    assert not (result.output_dir / "final.partial").exists()


def test_the_cards_python_snippet_generates_belief_then_response(trained_run):
    result, first = trained_run
    python = code_block((result.final_dir / "README.md").read_text(encoding="utf-8"), "python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(python, "model-card-snippet", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("belief: ") and lines[1].startswith("response: ")
    assert int(lines[0].split()[1]) in {b.class_id for b in first.beliefs}


def test_the_cards_command_runs_without_the_untrained_warning(trained_run):
    from pluralign.cli.main import app

    result, _ = trained_run
    shell = code_block((result.final_dir / "README.md").read_text(encoding="utf-8"), "bash")
    args = shlex.split(shell.split("\n#")[0].replace("\\\n", " "))
    assert args[:2] == ["pluralign", "generate"]
    out = CliRunner().invoke(app, [*args[1:], "--max-new-tokens", "4", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("belief: ")
    assert "not trained by pluralign" not in out.output


def test_a_failing_card_keeps_trls_and_never_costs_the_weights(tmp_path, monkeypatch, caplog):
    import pluralign.train.model_card as model_card
    from pluralign.train.api import train
    from pluralign.train.config import TrainConfig

    def broken(*args, **kwargs):
        raise RuntimeError("card bug")

    monkeypatch.setattr(model_card, "card_info", broken)
    write_examples(tmp_path / "train.jsonl", conflicting_opinions(2, 2, seed=0))
    config = TrainConfig(method="sft", train_file=str(tmp_path / "train.jsonl"),
                         output_dir=str(tmp_path / "sft"),
                         model=ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0, device="cpu"),
                         max_steps=1, logging_steps=1, per_device_train_batch_size=4)
    with caplog.at_level("WARNING"):
        result = train(config)
    final = result.final_dir
    assert (final / "adapter_model.safetensors").is_file()
    assert (final / "pluralign_format.json").is_file()
    assert "belief-first model trained with pluralign" not in (final / "README.md").read_text()
    assert "pluralign's failed (card bug)" in caplog.text
