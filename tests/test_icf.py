"""Leak-free shots (k-shot and ICF) and in-context fine-tuning as a method (issue 16)."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from openai_stub_server import StubServer
from pluralign.beliefs.formats import SEPARATED_FORMAT
from pluralign.beliefs.shots import KSHOT_SYSTEM, ShotPool, in_context_records, sample_shots
from pluralign.beliefs.tokenize import encode_prompt, tokenize_example
from pluralign.data.records import GroupPreferenceExample, RecordFileError, read_examples
from pluralign.data.records import write_examples as write_records
from pluralign.data.toy import conflicting_opinions
from pluralign.eval.evaluate import EvalConfig, evaluate, group_prompts
from pluralign.eval.prompting import in_context_prompts
from pluralign.train.config import TrainConfig
from pluralign.train.methods import get_method

WORDINGS = ("What do you think about {t}?", "How do you feel about {t}?", "Your view on {t}?")


def styled(n_questions: int, pairs: int, *, seed: int = 0, first: int = 0,
           ) -> list[GroupPreferenceExample]:
    """Records of ``n_questions`` questions, each asked in three wordings that share its
    question_id (as the builders' styled paraphrases do)."""
    records = conflicting_opinions(first + n_questions, pairs * len(WORDINGS), seed=seed)
    out = []
    for i, record in enumerate(r for r in records if int(r.question_id[4:]) >= first):
        topic = record.prompt.removeprefix("What do you think about ").removesuffix("?")
        wording = WORDINGS[i % len(WORDINGS)]
        out.append(dataclasses.replace(record, prompt=wording.format(t=topic),
                                       style=f"style-{i % len(WORDINGS)}"))
    return out


def shot_prompts(context: str) -> list[str]:
    """The questions of the shot lines of a context or k-shot text."""
    lines = [line for line in context.split("\n\n") if line.startswith("Question: ")]
    return [line.removeprefix("Question: ").split(", Answer: ")[0] for line in lines]


def question_of(records: list[GroupPreferenceExample]) -> dict[str, str]:
    return {r.prompt: r.question_id for r in records}


# ------------------------------------------------------------------ leak-free shots


def test_no_shot_shares_a_question_with_its_target():
    records = styled(4, 2)
    assert len({r.prompt for r in records}) == 12  # 4 questions x 3 wordings
    rng = random.Random(0)
    leaks = sum(shot.question_id == target.question_id
                for target in records for shot in sample_shots(records, 3, rng, target=target))
    assert leaks == 0
    # Three other questions exist, so three shots cover each of them exactly once.
    shots = sample_shots(records, 3, random.Random(1), target=records[0])
    assert sorted(s.question_id for s in shots) == ["toy-1", "toy-2", "toy-3"]


def test_icf_records_never_hold_their_own_question():
    records = styled(5, 2)
    icf = in_context_records(records, k=3, seed=0)
    questions = question_of(records)
    in_context = [questions[p] for r in icf for p in shot_prompts(r.context)]
    assert len(in_context) == 3 * len(records)
    own = sum(questions[p] == r.question_id for r in icf for p in shot_prompts(r.context))
    assert own == 0
    assert all(r.question_id not in r.metadata["icf_shots"] for r in icf)


def test_records_without_a_question_id_are_matched_by_their_wording():
    records = [dataclasses.replace(r, question_id=None) for r in conflicting_opinions(3, 2)]
    for target in records:
        shots = sample_shots(records, 4, random.Random(0), target=target)
        assert target.prompt not in {s.prompt for s in shots}
    # A target with an id leaves out pool records of its wording that lack one, and a
    # target without one leaves out the whole question its wording belongs to.
    pool = styled(2, 1)
    anonymous = dataclasses.replace(pool[0], question_id=None)
    assert ShotPool(pool).same_question(anonymous) == {"toy-0"}
    mixed = [dataclasses.replace(pool[0], question_id=None), *pool[1:]]
    assert ShotPool(mixed).same_question(pool[0]) == {"toy-0", pool[0].prompt}


def test_a_pool_of_only_the_target_question_is_an_error():
    records = styled(1, 2)
    with pytest.raises(ValueError, match="only records of that question"):
        sample_shots(records, 2, random.Random(0), target=records[0])


def test_kshot_eval_needs_a_training_pool(tmp_path):
    data = tmp_path / "test.jsonl"
    write_records(data, styled(2, 1))
    with pytest.raises(ValueError, match="kshot_pool: the k-shot baseline draws its shots"):
        EvalConfig(kshot=3, data=str(data))
    with pytest.raises(ValueError, match="is the evaluated file itself"):
        EvalConfig(kshot=3, data=str(data), kshot_pool=str(tmp_path / "." / "test.jsonl"))


def test_cli_kshot_without_a_pool_fails_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    data = tmp_path / "test.jsonl"
    write_records(data, styled(2, 1))
    result = CliRunner().invoke(app, ["eval", "--kshot", "3", "--data", str(data)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "kshot_pool" in lines[0] and "--kshot-pool" in lines[0]


def test_kshot_eval_draws_shots_from_the_pool_never_from_the_evaluated_file(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    # Test questions reappear in the training split in other wordings (a split by example).
    train_records, test_records = styled(5, 2), styled(3, 1, seed=0)[::3]
    write_records(train, train_records)
    write_records(test, test_records)
    questions = question_of(train_records)
    stub = StubServer().start()
    try:
        config = EvalConfig(data=str(test), output_dir=str(tmp_path / "out"), kshot=3,
                            kshot_model="stub", kshot_base_url=stub.url, kshot_pool=str(train),
                            n_samples=2, progress=False)
        evaluate(config, judge=_YesJudge(), embedder=None)
        users = [b["messages"][-1]["content"] for b in stub.bodies]
    finally:
        stub.stop()
    assert len(users) == 2 * len({r.prompt for r in test_records})
    for user in users:
        target = user.rsplit("Question: ", 1)[1].removesuffix(", Answer: ")
        target_id = next(r.question_id for r in test_records if r.prompt == target)
        shots = shot_prompts(user)[:-1]
        assert len(shots) == 3
        assert all(p in questions for p in shots)  # from the pool file
        assert all(questions[p] != target_id for p in shots)


class _YesJudge:
    def judge(self, items):
        return ["yes"] * len(items)


# ------------------------------------------------------------------ the context column


def test_context_column_is_parsed_kept_and_checked(tmp_path):
    record = styled(1, 1)[0]
    row = {**record.to_dict(), "context": "Question: A?, Answer: 1<No>Nope.\n\n"}
    path = tmp_path / "icf.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "context": ["a list"]}) + "\n")
    with pytest.raises(RecordFileError) as error:
        read_examples(path)
    assert error.value.line_number == 2 and error.value.field == "context"
    assert str(error.value).startswith(f"{path}:2: field 'context': must be a string")
    path.write_text(json.dumps(row) + "\n")
    (parsed,) = read_examples(path)
    assert parsed.context == row["context"]
    assert GroupPreferenceExample.from_dict(parsed.to_dict()) == parsed
    assert "context" not in record.to_dict()  # files without contexts keep their layout
    # ICF keeps a context the data brings instead of drawing shots.
    pool = styled(3, 1)
    (kept,) = in_context_records([parsed], k=2, pool=pool)
    assert kept.context == row["context"]


def test_released_icf_rows_keep_their_context():
    from pluralign.data.builders.cards import BuildReport
    from pluralign.data.builders.mmoqa import convert_rows

    base = {"question": "Is trade good?", "options": ["Good", "Bad"], "probabilities": [0.7, 0.3],
            "options_map": "{'Good': 4, 'Bad': 2}", "prompt": "Trade?", "accept_choice_id": 4,
            "reject_choice_id": 2, "accept_choice": "Good", "reject_choice": "Bad",
            "accept_response": "Yes.", "reject_response": "No.", "style": "Casual"}
    context = "Question: Tea?, Answer: 4<Good>Yes.\n\n"
    report = BuildReport("mmoqa", "rows", 0)
    rows = [{**base, "context": context}, base, {**base, "context": 7}]
    with_context, without, *rest = convert_rows(rows, "US", report, "rows")
    assert with_context.context == context and without.context is None
    assert rest == [] and report.skipped["row that could not be converted"] == 1
    assert "context: must be a string" in " ".join(report.warnings)


def test_icf_context_goes_before_the_q_wrapper(tiny_lm):
    _, tokenizer = tiny_lm
    from pluralign.beliefs.tokenize import add_format_tokens

    tokenizer = _with_separator(tokenizer, add_format_tokens)
    records = styled(3, 1)
    (record, *_) = in_context_records(records, k=2, seed=0)
    ids = encode_prompt(tokenizer, record.prompt, SEPARATED_FORMAT, context=record.context)
    text = tokenizer.decode(ids)
    assert text == f"{record.context}<Q>{record.prompt}<A><|belief|>"
    assert text.startswith(KSHOT_SYSTEM)
    assert text.count("<Q>") == 1 and text.rindex("Question: ") < text.index("<Q>")
    # Training sequences carry the same prompt, and only the answer is learnt.
    pair = tokenize_example(record, tokenizer, SEPARATED_FORMAT)
    assert pair["prompt_input_ids"] == ids
    assert pair["chosen"]["labels"][: len(ids)] == [-100] * len(ids)


def _with_separator(tokenizer, add_format_tokens):
    import copy

    tokenizer = copy.deepcopy(tokenizer)
    add_format_tokens(tokenizer, None, SEPARATED_FORMAT)
    return tokenizer


# ------------------------------------------------------------------ icf as a method


def test_icf_is_a_registered_sft_method_with_a_validated_shot_count():
    method = get_method("icf")
    assert (method.family, method.in_context) == ("sft", True)
    assert not get_method("sft").in_context
    assert TrainConfig(method="icf", icf_shots=5).icf_shots == 5
    with pytest.raises(ValueError, match="icf_shots: must be >= 1"):
        TrainConfig(method="icf", icf_shots=0)


def test_icf_model_without_its_pool_fails_clearly(tmp_path):
    records = styled(2, 1)
    groups = group_prompts(records)
    info = {"method": "icf", "in_context": {"shots": 3, "pool": str(tmp_path / "gone.jsonl")}}
    with pytest.raises(FileNotFoundError, match="--kshot-pool"):
        in_context_prompts(groups, records, info, "digit")
    same_groups, same_records = in_context_prompts(groups, records, {"method": "sft"}, "digit")
    assert same_groups == groups and same_records == records


def test_cli_trains_icf_and_evaluation_prompts_with_training_shots(tmp_path, tiny_lm):
    from datasets import load_from_disk
    from typer.testing import CliRunner

    from pluralign.beliefs.readout import belief_distributions
    from pluralign.beliefs.tokenize import belief_marker_ids
    from pluralign.cli.main import app
    from pluralign.eval.generate import load_sequence_format
    from pluralign.models import load_model

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train_records = styled(4, 1)
    test_records = styled(2, 1, seed=3, first=4)  # other questions than the training ones
    write_records(train, train_records)
    write_records(test, test_records)
    run = tmp_path / "icf"
    result = CliRunner().invoke(app, [
        "train", "--method", "icf", "--icf_shots", "2", "--train_file", str(train),
        "--output_dir", str(run), "--model.model", "tiny", "--model.lora_r", "2",
        "--model.device", "cpu", "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--save_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-3"])
    assert result.exit_code == 0, result.output
    info = json.loads((run / "final" / "pluralign_format.json").read_text())
    assert info["method"] == "icf"
    assert info["in_context"] == {"shots": 2, "pool": str(train.resolve())}

    _, tokenizer = load_model(str(run / "final"))
    questions = question_of(train_records)
    trained = [tokenizer.decode(row["input_ids"]) for row in load_from_disk(
        str(run / "tokenized" / "train"))]
    assert len(trained) == len(train_records)
    for text, record in zip(trained, train_records, strict=True):
        context, rest = text.split("<Q>", 1)
        assert context.startswith(KSHOT_SYSTEM) and rest.startswith(record.prompt + "<A>")
        shots = shot_prompts(context)
        assert len(shots) == 2 and all(questions[p] != record.question_id for p in shots)

    out = tmp_path / "eval"
    config = EvalConfig(models=[str(run / "final")], data=str(test), output_dir=str(out),
                        n_samples=1, belief_samples=0, max_new_tokens=2, device="cpu",
                        progress=False)
    evaluated = evaluate(config, judge=_YesJudge())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len({r.prompt for r in test_records})
    for row in rows:
        shots = shot_prompts(row["context"])
        assert len(shots) == 2 and all(p in questions for p in shots)  # the training file's
    # The reading was taken on the prompt with its shots before <Q>, not on the bare prompt.
    model, tokenizer = load_model(str(run / "final"), device="cpu")
    fmt = load_sequence_format(run / "final")
    prediction = evaluated.evaluations[0].predictions[0]
    group = prediction.group
    markers = [belief_marker_ids(tokenizer, list(group.class_ids), fmt.marker)]
    with_shots, bare = (belief_distributions(
        model, [encode_prompt(tokenizer, group.prompt, fmt, context=context)], markers,
        pad_token_id=tokenizer.pad_token_id).probs[0] for context in (group.context, None))
    assert prediction.predicted == pytest.approx(with_shots, abs=1e-5)
    assert prediction.predicted != pytest.approx(bare, abs=1e-5)
    # `pluralign generate` prompts the icf model the same way: its "model p" column is the
    # reading with shots, not the bare one.
    result = CliRunner().invoke(app, [
        "generate", "--model", str(run / "final"), "--data", str(test), "--index", "0",
        "--n", "2", "--max-new-tokens", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "in-context shots go before the question" in result.output
    record = test_records[0]
    markers = [belief_marker_ids(tokenizer, [b.class_id for b in record.beliefs], fmt.marker)]
    context = in_context_prompts(group_prompts([record]), [], info, fmt.marker,
                                 seed=0)[0][0].context
    with_shots, bare = (belief_distributions(
        model, [encode_prompt(tokenizer, record.prompt, fmt, context=c)], markers,
        pad_token_id=tokenizer.pad_token_id).probs[0] for c in (context, None))
    # histogram rows: class (5), description (24), count (5), sampled (8), model p (8), ...
    printed = [float(line[47:55]) for line in result.output.splitlines()
               if line[:5].strip().isdigit()]
    assert printed == pytest.approx(with_shots, abs=2e-3)
    assert printed != pytest.approx(bare, abs=2e-3)
