"""The default sequence format keeps belief markers in the belief slot; the paper's leaks.

The paper's format ends the prompt in ``<A>`` and every description in
``>``: the calibration and belief-NLL terms teach "a belief marker follows
``>``", which spills onto the ``>`` that closes the description, and trained
models write ``4<Yes>4<Yes>...``. The default format ends the prompt with a
dedicated ``<|belief|>`` token that occurs nowhere else.
"""

from __future__ import annotations

import pytest

from pluralign.beliefs.formats import BELIEF_SEPARATOR
from pluralign.beliefs.tokenize import encode_prompt
from pluralign.data.records import read_examples, write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.eval.evaluate import group_prompts, marker_mass_after_descriptions
from pluralign.eval.generate import load_sequence_format
from pluralign.models import ModelConfig, load_model
from pluralign.train.api import train
from pluralign.train.config import TrainConfig


@pytest.fixture(scope="module")
def toy_train(tmp_path_factory):
    root = tmp_path_factory.mktemp("leak")
    write_examples(root / "train.jsonl", conflicting_opinions(8, 8, seed=0))
    return root / "train.jsonl"


def train_gdpo(train_file, root, sequence_format: str):
    """SFT then GDPO on the tiny model (fully fine-tuned, so it learns fast)."""
    common = dict(train_file=str(train_file), sequence_format=sequence_format,
                  per_device_train_batch_size=8, save_steps=10_000, logging_steps=50,
                  seed=0, learning_rate=3e-3)
    sft = train(TrainConfig(method="sft", output_dir=str(root / "sft"), max_steps=120,
                            model=ModelConfig(model="tiny", lora_r=0, device="cpu"), **common),
                console_logs=False)
    gdpo = train(TrainConfig(method="gdpo", output_dir=str(root / "gdpo"), max_steps=60,
                             model=ModelConfig(model=str(sft.final_dir), lora_r=0, device="cpu"),
                             **common), console_logs=False)
    return gdpo.final_dir


def after_description_mass(final, train_file) -> float:
    model, tokenizer = load_model(str(final), device="cpu")
    fmt = load_sequence_format(final)
    groups = group_prompts(read_examples(train_file))
    masses = marker_mass_after_descriptions(model, tokenizer, groups, fmt)
    return sum(masses) / len(masses)


@pytest.mark.slow
def test_default_format_puts_no_mass_on_markers_after_the_description(toy_train, tmp_path):
    separated = train_gdpo(toy_train, tmp_path / "separated", "separated")
    paper = train_gdpo(toy_train, tmp_path / "paper", "paper")
    separated_mass = after_description_mass(separated, toy_train)
    paper_mass = after_description_mass(paper, toy_train)
    assert separated_mass < 0.01
    assert paper_mass > 0.2  # the leak the separator removes
    # The saved format is what evaluation rebuilds: the separator ends every prompt.
    _model, tokenizer = load_model(str(separated), device="cpu")
    fmt = load_sequence_format(separated)
    assert fmt.separator == BELIEF_SEPARATOR
    ids = encode_prompt(tokenizer, "Anything?", fmt)
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == BELIEF_SEPARATOR
    assert load_sequence_format(paper).separator is None
