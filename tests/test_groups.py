"""One model for several groups: the group line, group routing, the group context and the
evaluation per group (issue 20, items 1-3)."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math

import pytest

from pluralign.beliefs.formats import (
    BELIEF_SEPARATOR,
    GROUP_LINE,
    SEPARATED_FORMAT,
    GroupLineError,
    SequenceFormat,
)
from pluralign.beliefs.group_context import (
    GROUP_CONTEXT_METADATA_KEY,
    GroupContextError,
    distribution_text,
    with_group_context,
)
from pluralign.beliefs.tokenize import add_format_tokens, encode_prompt, tokenize_example
from pluralign.data.records import (
    Belief,
    GroupPreferenceExample,
    RecordFileError,
    question_key,
    read_examples,
    write_examples,
)
from pluralign.data.toy import conflicting_opinions
from pluralign.eval.by_group import group_breakdown
from pluralign.eval.config import EvalConfig
from pluralign.eval.metrics import MetricResult
from pluralign.eval.predictions import (
    ModelEvaluation,
    PromptGroup,
    PromptPrediction,
    group_prompts,
)
from pluralign.eval.prompting import group_context_prompts
from pluralign.eval.report import write_report
from pluralign.eval.report_groups import group_table, groups_figure
from pluralign.eval.writing import write_outputs
from pluralign.train.config import TrainConfig
from pluralign.train.dataset import belief_eval_inputs, preference_rows, uniform_belief_records
from pluralign.train.groups import first_conflict, prepare_groups
from pluralign.train.selection import carve_validation

GROUPED = dataclasses.replace(SEPARATED_FORMAT, group_template=GROUP_LINE)


def two_groups(n_questions: int = 3, pairs: int = 2) -> list[GroupPreferenceExample]:
    """The same questions (same prompts, same ids) for two groups, with other targets."""
    return (conflicting_opinions(n_questions, pairs, seed=0, group="Northvale")
            + conflicting_opinions(n_questions, pairs, seed=5, group="Southmere"))


@pytest.fixture
def separator_tokenizer(tiny_lm):
    tokenizer = copy.deepcopy(tiny_lm[1])
    add_format_tokens(tokenizer, None, SEPARATED_FORMAT)
    return tokenizer


# ------------------------------------------------------------------ format


def test_group_line_comes_right_before_the_question_and_the_separator_stays_unique(
        separator_tokenizer):
    tok = separator_tokenizer
    record = two_groups(1, 1)[0]
    pair = tokenize_example(record, tok, GROUPED)
    prompt_length = pair["chosen"]["prompt_length"]
    text = tok.decode(pair["prompt_input_ids"])
    assert text == f"<Q>Group: Northvale\n{record.prompt}<A>{BELIEF_SEPARATOR}"
    separator = tok.convert_tokens_to_ids(BELIEF_SEPARATOR)
    for side in ("chosen", "rejected"):
        ids = pair[side]["input_ids"]
        assert ids.count(separator) == 1 and ids[prompt_length - 1] == separator
    # With a group context before it, the separator is still the one token before the slot.
    [with_context] = with_group_context([record], conflicting_opinions(3, 1, group="Northvale"),
                                        2, seed=0)
    ids = tokenize_example(with_context, tok, GROUPED)["chosen"]["input_ids"]
    assert ids.count(separator) == 1
    # Off (every format as registered): the prompt is what it always was.
    assert encode_prompt(tok, record.prompt, SEPARATED_FORMAT, group="Northvale") == \
        encode_prompt(tok, record.prompt, SEPARATED_FORMAT)


def test_a_group_the_line_cannot_write_is_an_error(separator_tokenizer):
    with pytest.raises(GroupLineError, match="name the group"):
        encode_prompt(separator_tokenizer, "Is it good?", GROUPED)
    with pytest.raises(GroupLineError, match="occur only before the belief slot"):
        encode_prompt(separator_tokenizer, "Is it good?", GROUPED, group=f"A{BELIEF_SEPARATOR}")
    with pytest.raises(ValueError, match="group_template must contain"):
        SequenceFormat(group_template="Group:\n")
    # In a training file: one line naming file, line and field, before any model loads.
    records = (conflicting_opinions(1, 1, group="Fine")
               + conflicting_opinions(1, 1, group=f"X{BELIEF_SEPARATOR}"))
    with pytest.raises(RecordFileError, match=r"train\.jsonl:2: field 'group'"):
        prepare_groups(list(enumerate(records, start=1)), [], train_file="train.jsonl",
                       eval_file=None, fmt=GROUPED, group_context=0, seed=0)
    assert SequenceFormat.from_info(GROUPED.to_info()) == GROUPED
    assert "group_template" not in SEPARATED_FORMAT.to_info()  # one-group runs' files unchanged


# ------------------------------------------------------------------ routing


def test_two_groups_rows_of_one_question_stay_apart(separator_tokenizer):
    records = two_groups(3, 2)
    targets = {(r.group, r.prompt): r.target_distribution for r in records}
    grouped = belief_eval_inputs(records, separator_tokenizer, GROUPED)
    assert len(grouped["prompt_ids"]) == 6  # 3 questions x 2 groups
    by_prompt = {tuple(ids): t for ids, t in zip(grouped["prompt_ids"], grouped["target_probs"],
                                                  strict=True)}
    assert len(by_prompt) == 6  # six different prompts, each with its own group's target
    for ids, target in by_prompt.items():
        text = separator_tokenizer.decode(list(ids))
        group = text.split("Group: ")[1].split("\n")[0]
        prompt = text.split("\n", 1)[1].removesuffix(f"<A>{BELIEF_SEPARATOR}")
        assert list(target) == list(targets[(group, prompt)])
    assert targets[("Northvale", records[0].prompt)] != targets[("Southmere", records[0].prompt)]
    # Without the group line the two groups' prompts are one prompt (the old behaviour).
    assert len(belief_eval_inputs(records, separator_tokenizer, SEPARATED_FORMAT)["prompt"]) == 3
    rows = preference_rows(records, separator_tokenizer, GROUPED, pairing="gdpo")
    assert len({tuple(r["prompt_ids"]) for r in rows}) == 6


def test_uniform_beliefs_and_validation_are_drawn_per_group():
    records = two_groups(2, 2)
    # Southmere answered the first question with one belief pair only.
    first = records[0].prompt
    records = [r for r in records if not (r.group == "Southmere" and r.prompt == first)] + [
        dataclasses.replace(records[4], chosen_belief=1, rejected_belief=2,
                            chosen_response="only one", rejected_response="only two")]
    drawn = uniform_belief_records(records, seed=0, by_group=True)
    southmere = {(c, text) for r, c, text in drawn if r.group == "Southmere" and r.prompt == first}
    assert southmere <= {(1, "only one"), (2, "only two")}  # never Northvale's responses
    wordings = [dataclasses.replace(r, prompt=f"{r.prompt} ({i % 2})")
                for i, r in enumerate(records)]
    carve = carve_validation(wordings, 0.5, seed=0, by_group=True)
    held = {(r.group, r.prompt) for r in carve.validation}
    trained = {(r.group, r.prompt) for r in carve.train}
    assert carve.by == "wording" and held and not held & trained
    assert {g for g, _ in held} == {"Northvale", "Southmere"}  # each group holds out its own


def test_a_multi_group_file_without_the_group_line_is_warned_about(caplog):
    numbered = list(enumerate(two_groups(2, 2), start=1))
    assert first_conflict(numbered)[0] == 5  # Southmere's first record of question 0
    with caplog.at_level(logging.WARNING, logger="pluralign.train.groups"):
        prepare_groups(numbered, [], train_file="t.jsonl", eval_file=None,
                       fmt=SEPARATED_FORMAT, group_context=0, seed=0)
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith("t.jsonl:5: field 'group':") and "group_in_prompt" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pluralign.train.groups"):
        prepare_groups(numbered, [], train_file="t.jsonl", eval_file=None, fmt=GROUPED,
                       group_context=0, seed=0)
    assert not caplog.records
    assert first_conflict(list(enumerate(conflicting_opinions(2, 2), start=1))) is None


def test_group_options_are_checked_at_config_time():
    assert TrainConfig(group_in_prompt=True, group_context=3).group_context == 3
    with pytest.raises(ValueError, match=r"group_context: .* set group_in_prompt"):
        TrainConfig(group_context=2)
    with pytest.raises(ValueError, match="group_context: method icf"):
        TrainConfig(method="icf", group_in_prompt=True, group_context=2)
    with pytest.raises(ValueError, match="group_context: must be >= 0"):
        TrainConfig(group_in_prompt=True, group_context=-1)
    with pytest.raises(ValueError, match=r"group_context_pool: .* the evaluated file itself"):
        EvalConfig(models=["m"], data="test.jsonl", group_context_pool="./test.jsonl")


# ------------------------------------------------------------------ group context


def test_group_context_shows_only_the_groups_own_other_questions():
    pool = two_groups(5, 2)
    targets = [r for r in two_groups(5, 1)]
    contexts = with_group_context(targets, pool, 3, seed=7)
    for record in contexts:
        shown = record.metadata[GROUP_CONTEXT_METADATA_KEY]
        assert len(shown) == 3 == len(set(shown))
        assert question_key(record) not in shown  # never the question asked
        assert record.prompt not in record.context
        assert record.context.startswith(f"Answers of the group {record.group} ")
        own = {question_key(r): distribution_text(r) for r in pool if r.group == record.group}
        for key in shown:  # the group's own distribution, not the other group's
            assert own[key] in record.context
    assert with_group_context(targets, pool, 3, seed=7) == contexts  # seeded
    assert with_group_context(targets, pool, 3, seed=8) != contexts
    # Fewer other questions than asked for: fewer examples, never a repeat.
    [few] = with_group_context(targets[:1], pool, 10, seed=0)
    assert len(few.metadata[GROUP_CONTEXT_METADATA_KEY]) == 4


def test_distribution_text_writes_the_targets_as_shares():
    record = GroupPreferenceExample(
        prompt="Is it good?", beliefs=(Belief(1, "Bad"), Belief(2, "Good")),
        target_distribution=(0.3, 0.7), chosen_belief=2, rejected_belief=1,
        chosen_response="yes", rejected_response="no", group="Japan")
    assert distribution_text(record) == (
        "Question: Is it good?\nAnswers: 1 = Bad: 30%; 2 = Good: 70%\n")


def test_group_context_without_examples_of_the_group_names_file_line_and_field(tmp_path):
    train = conflicting_opinions(3, 2, group="Northvale")
    heldout = conflicting_opinions(3, 2, group="Eastfold")
    with pytest.raises(RecordFileError, match=r"eval\.jsonl:1: field 'group': group 'Eastfold' "
                                              r"has no records in the training file"):
        prepare_groups(list(enumerate(train, 1)), list(enumerate(heldout, 1)),
                       train_file="train.jsonl", eval_file="eval.jsonl", fmt=GROUPED,
                       group_context=2, seed=0)
    only_its_question = conflicting_opinions(1, 2, group="Northvale")
    with pytest.raises(GroupContextError, match="no other question"):
        with_group_context(only_its_question, only_its_question, 2)
    # Evaluation: the context comes from the recorded pool (the training file), never from the
    # evaluated file; a group missing there is named with the evaluated file's line.
    pool, data = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_examples(pool, train)
    write_examples(data, conflicting_opinions(3, 2, group="Northvale") + heldout)
    records = read_examples(data)
    info = {"group_context": {"shots": 2, "pool": str(pool)}}
    with pytest.raises(RecordFileError, match=rf"{data}:7: field 'group': group 'Eastfold'"):
        group_context_prompts(group_prompts(records), records, info, data=str(data))
    kept = [r for r in records if r.group == "Northvale"]
    prompts, with_context = group_context_prompts(group_prompts(kept), kept, info, data=str(data))
    for g in prompts:
        assert g.prompt not in g.context and g.context.count("Question: ") == 2
    assert all(r.context == next(g.context for g in prompts if g.prompt == r.prompt)
               for r in with_context)


# ------------------------------------------------------------------ evaluation per group


def _case() -> tuple[list[PromptGroup], ModelEvaluation]:
    """Group A: two prompts read exactly (JSD 0); group B: one prompt with p* = (1, 0)
    read as (0.5, 0.5)."""
    beliefs = (Belief(1, "No"), Belief(2, "Yes"))
    prompts = [PromptGroup("Q1?", "A", "q1", beliefs, [0.5, 0.5]),
               PromptGroup("Q2?", "A", "q2", beliefs, [0.2, 0.8]),
               PromptGroup("Q1?", "B", "q1", beliefs, [1.0, 0.0])]
    predicted = [[0.5, 0.5], [0.2, 0.8], [0.5, 0.5]]
    predictions = [PromptPrediction(g, p) for g, p in zip(prompts, predicted, strict=True)]
    metric = MetricResult("jsd", 0.0, 3, 0.0, 0.0)
    return prompts, ModelEvaluation("gdpo", "runs/gdpo/final", "gdpo", predictions,
                                    {"jsd": metric})


#: Jensen-Shannon distance (natural log) between (1, 0) and (0.5, 0.5), by hand:
#: M = (0.75, 0.25); KL(P||M) = ln(4/3); KL(Q||M) = 0.5 ln(2/3) + 0.5 ln 2.
B_JSD = math.sqrt(0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2)))


def test_per_group_jsd_and_reference_lines_on_a_known_case(tmp_path):
    prompts, evaluation = _case()
    by_group = group_breakdown([evaluation], prompts)
    assert by_group.groups == ["A", "B"] and by_group.prompts == {"A": 2, "B": 1}
    assert by_group.jsd["gdpo"]["A"].value == pytest.approx(0.0, abs=1e-7)
    assert by_group.jsd["gdpo"]["B"].value == pytest.approx(B_JSD, abs=1e-6)
    assert pytest.approx(0.4645, abs=1e-4) == B_JSD
    # The mean over groups counts each group once (the mean over prompts would be B_JSD / 3).
    assert by_group.mean_jsd("gdpo") == pytest.approx(B_JSD / 2, abs=1e-6)
    # Reference lines on each group's own targets: B's uniform line is the model's reading.
    assert by_group.reference_lines["B"]["uniform"].value == pytest.approx(B_JSD, abs=1e-6)
    assert by_group.reference_lines["B"]["majority"].value == pytest.approx(0.0, abs=1e-7)
    uniform_a = by_group.reference_lines["A"]["uniform"].value  # (0.2, 0.8) vs uniform; 0 for Q1
    assert 0 < uniform_a < B_JSD
    assert by_group.mean_reference_line("uniform") == pytest.approx((uniform_a + B_JSD) / 2)
    # One group: no breakdown, so a one-group evaluation writes what it always wrote.
    assert group_breakdown([evaluation], prompts[:2]) is None

    config = EvalConfig(models=["runs/gdpo/final"], data="test.jsonl")
    write_outputs(tmp_path, config, [evaluation], {}, by_group)
    groups = json.loads((tmp_path / "eval.json").read_text())["groups"]
    assert groups["models"]["gdpo"]["jsd_mean_over_groups"] == pytest.approx(B_JSD / 2)
    assert groups["reference_lines"]["B"]["uniform"]["value"] == pytest.approx(B_JSD)
    write_outputs(tmp_path, config, [evaluation], {}, None)
    assert "groups" not in json.loads((tmp_path / "eval.json").read_text())


def test_report_has_a_table_and_a_plot_of_jsd_per_group(tmp_path):
    prompts, evaluation = _case()
    by_group = group_breakdown([evaluation], prompts)
    rows = group_table(by_group)
    assert rows[0][:3] == ["group", "prompts", "gdpo JSD ↓"]
    assert rows[-1][0] == "mean over groups" and rows[-1][2] == f"{B_JSD / 2:.3f}"
    assert rows[2][2].startswith(f"{B_JSD:.3f} ")
    figure = groups_figure(by_group)
    heights = [p.get_height() for p in figure.axes[0].patches]
    assert heights == pytest.approx([0.0, B_JSD], abs=1e-6)
    files = write_report(tmp_path, [evaluation], {}, by_group=by_group)
    plot = tmp_path / "plots" / "jsd_per_group.png"
    assert plot.is_file() and plot.read_bytes()[:4] == b"\x89PNG"
    markdown = files["report_md"].read_text(encoding="utf-8")
    assert "## JSD per group" in markdown and "plots/jsd_per_group.png" in markdown
    assert "| mean over groups |" in markdown
    single = tmp_path / "single"
    write_report(single, [evaluation], {})
    assert "JSD per group" not in (single / "report.md").read_text(encoding="utf-8")
    assert not (single / "plots" / "jsd_per_group.png").exists()


# ------------------------------------------------------------------ a run of one model, two groups


@pytest.fixture(scope="module")
def group_run(tmp_path_factory):
    """A 2-step GDPO run of the tiny model on two groups, with the group line and context."""
    from pluralign.models import ModelConfig
    from pluralign.train.api import train

    root = tmp_path_factory.mktemp("groups")
    write_examples(root / "train.jsonl", two_groups(4, 2))
    write_examples(root / "test.jsonl", two_groups(4, 1))
    config = TrainConfig(method="gdpo", train_file=str(root / "train.jsonl"),
                         output_dir=str(root / "run"), group_in_prompt=True, group_context=2,
                         model=ModelConfig(model="tiny", lora_r=2, lora_alpha=4.0, device="cpu"),
                         max_steps=2, per_device_train_batch_size=4, validation_fraction=0.25,
                         eval_steps=1, logging_steps=1, save_steps=10, seed=0)
    return root, train(config, console_logs=False)


def test_one_model_trains_on_two_groups_and_is_evaluated_per_group(group_run):
    from datasets import load_from_disk

    from pluralign.eval.evaluate import evaluate
    from pluralign.models import load_model

    root, result = group_run
    assert result.global_step == 2
    info = json.loads((result.final_dir / "pluralign_format.json").read_text())
    assert info["group_template"] == GROUP_LINE
    assert info["group_context"] == {"shots": 2, "pool": str((root / "train.jsonl").resolve())}
    _, tokenizer = load_model(str(result.final_dir))
    rows = load_from_disk(str(root / "run" / "tokenized" / "train"))
    prompts = [tokenizer.decode(row["prompt_ids"]) for row in rows]
    for group in ("Northvale", "Southmere"):
        own = [p for p in prompts if f"<Q>Group: {group}\n" in p]
        assert own and all(p.startswith(f"Answers of the group {group} ") for p in own)
    card = (result.final_dir / "README.md").read_text(encoding="utf-8")
    assert "<Q>Group: {group}\n{prompt}<A><|belief|>" in card and "--group" in card

    out = root / "eval"
    evaluated = evaluate(EvalConfig(models=[str(result.final_dir)], data=str(root / "test.jsonl"),
                                    output_dir=str(out), n_samples=0, belief_samples=0,
                                    device="cpu", progress=False), judge=object())
    by_group = evaluated.by_group
    assert by_group.groups == ["Northvale", "Southmere"] and by_group.prompts == {
        "Northvale": 4, "Southmere": 4}
    [evaluation] = evaluated.evaluations
    predictions = evaluation.predictions
    # One prompt per question and group, none merged.
    assert evaluation.label == "run" and len(predictions) == 8
    for group in by_group.groups:
        own = [p for p in predictions if p.group.group == group]
        assert all(p.group.context.startswith(f"Answers of the group {group} ") for p in own)
        mean = sum(jsd_of(p) for p in own) / len(own)
        assert by_group.jsd["run"][group].value == pytest.approx(mean)
    # Same question, two groups: the readings differ because the prompts name the group.
    first = {p.group.group: p.predicted for p in predictions if p.group.question_id == "toy-0"}
    assert first["Northvale"] != pytest.approx(first["Southmere"], abs=1e-6)
    assert (out / "plots" / "jsd_per_group.png").is_file()
    assert "groups" in json.loads((out / "eval.json").read_text())


def jsd_of(prediction: PromptPrediction) -> float:
    from pluralign.eval.metrics import jsd

    return float(jsd(prediction.predicted, prediction.group.target).value)


def test_generate_answers_for_the_group_it_is_asked_for(group_run):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    root, result = group_run
    base = ["generate", "--model", str(result.final_dir), "--data", str(root / "test.jsonl"),
            "--index", "0", "--n", "2", "--max-new-tokens", "2", "--device", "cpu"]
    done = CliRunner().invoke(app, base)
    assert done.exit_code == 0, done.output
    assert "in-context shots go before the question" in done.output  # the group's context
    asked = CliRunner().invoke(app, ["generate", "Is it good?", "--model",
                                     str(result.final_dir), "--beliefs", "1:No,2:Yes"])
    assert asked.exit_code != 0 and "group: this sequence format writes a group line" in \
        asked.output


# ------------------------------------------------------------------ builder


def test_the_opinions_builder_writes_several_groups_into_one_dataset(tmp_path):
    import re

    from data_llm_server import scripted_backend
    from pluralign.data.builders import OpinionsConfig, build_opinions

    options = ["Very good", "Somewhat good", "Somewhat bad", "Very bad"]
    rows = [{"question": "Is the economy doing well?", "options": options, "group": group,
             "distribution": shares} for group, shares in
            (("Japan", [0.1, 0.2, 0.3, 0.4]), ("Mexico", [0.4, 0.3, 0.2, 0.1]),
             ("Kenya", [0.25, 0.25, 0.25, 0.25]))]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    view = re.compile(r"view: '(.+)'\.$")

    def respond(prompt: str) -> str:
        return f"I answer from the view {view.search(prompt)[1]}."

    config = OpinionsConfig(source=str(source), groups=["Japan", "Mexico"], writer="framed",
                            n_styles=2, pairs_per_question=4, seed=0)
    with scripted_backend(respond) as (backend, server):
        result = build_opinions(config, backend)
        requests = len(server.bodies)
    records = [r for split in result.splits.values() for r in split]
    assert requests == 4  # one response per belief, written once for both groups
    by_group = {g: [r for r in records if r.group == g] for g in ("Japan", "Mexico")}
    assert {r.group for r in records} == {"Japan", "Mexico"} and all(by_group.values())
    assert {r.prompt for r in by_group["Japan"]} == {r.prompt for r in by_group["Mexico"]}
    assert {r.question_id for r in records} == {records[0].question_id}
    targets = {g: rs[0].target_distribution for g, rs in by_group.items()}
    assert targets["Japan"][0] == pytest.approx(0.4) and targets["Mexico"][0] == pytest.approx(0.1)
