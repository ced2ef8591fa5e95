"""The group preference record: validation, renormalisation, helpers and JSONL files."""

from __future__ import annotations

import gzip
import json
import warnings

import pytest

from pluralign.data import (
    Belief,
    GroupPreferenceExample,
    RecordError,
    RecordFileError,
    distribution_from_counts,
    is_majority_chosen,
    majority_belief,
    read_examples,
    write_examples,
)

BELIEFS = (Belief(5, "Very good"), Belief(4, "Somewhat good"), Belief(2, "Somewhat bad"))


def make(**overrides):
    fields = {
        "prompt": "How is the EU doing?",
        "beliefs": BELIEFS,
        "target_distribution": [0.2, 0.5, 0.3],
        "chosen_belief": 2,
        "rejected_belief": 5,
        "chosen_response": "Not well.",
        "rejected_response": "Very well.",
        "group": "US",
    }
    fields.update(overrides)
    return GroupPreferenceExample(**fields)


def test_valid_record_and_accessors():
    example = make(question_id="q7", style="formal", metadata={"source": "test"})
    assert example.num_beliefs == 3
    assert example.class_ids == (5, 4, 2)
    assert example.target_distribution == (0.2, 0.5, 0.3)
    assert example.belief_index(2) == 2
    assert example.belief(4).description == "Somewhat good"
    assert example.target_probability(5) == 0.2
    with pytest.raises(KeyError, match="class id 3"):
        example.belief_index(3)


def test_beliefs_given_as_dicts_are_converted():
    example = make(
        beliefs=[{"class_id": 1, "description": "No"}, {"class_id": 0, "description": "DK"}],
        target_distribution=[0.9, 0.1],
        chosen_belief=0,
        rejected_belief=1,
    )
    assert example.beliefs == (Belief(1, "No"), Belief(0, "DK"))


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"target_distribution": [0.5, 0.5]},
            "target_distribution",
            "has 2 values but there are 3",
        ),
        ({"target_distribution": [0.6, 0.6, -0.2]}, "target_distribution", "value 2 is -0.2"),
        ({"target_distribution": [0.2, 0.5, 0.2]}, "target_distribution", "sums to 0.9"),
        ({"target_distribution": [0.2, "x", 0.8]}, "target_distribution", "not a number"),
        ({"chosen_belief": 3}, "chosen_belief", "not in the belief set"),
        ({"rejected_belief": 7}, "rejected_belief", "not in the belief set"),
        ({"chosen_belief": 2.0}, "chosen_belief", "not in the belief set"),
        (
            {
                "beliefs": (Belief(1, "a"), Belief(1, "b"), Belief(2, "c")),
                "chosen_belief": 1,
                "rejected_belief": 2,
            },
            "beliefs",
            r"unique, repeated: \[1\]",
        ),
        (
            {"beliefs": (Belief(2, "only"),), "target_distribution": [1.0], "rejected_belief": 2},
            "beliefs",
            "at least 2",
        ),
        ({"prompt": ""}, "prompt", "non-empty text"),
        ({"group": None}, "group", "non-empty text"),
        ({"metadata": [1]}, "metadata", "mapping"),
    ],
)
def test_validation_errors_name_the_field(overrides, field, message):
    with pytest.raises(RecordError, match=message) as info:
        make(**overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_belief_validation():
    with pytest.raises(RecordError, match="class_id must be >= 0"):
        Belief(-1, "x")
    with pytest.raises(RecordError, match="class_id must be an integer"):
        Belief(True, "x")


def test_sum_within_tolerance_is_accepted_unchanged():
    example = make(target_distribution=[0.2, 0.5, 0.3005])
    assert example.target_distribution == (0.2, 0.5, 0.3005)


def test_renormalize_rescales_with_a_warning():
    with pytest.warns(UserWarning, match="sums to 2"):
        example = make(target_distribution=[0.4, 1.0, 0.6], renormalize=True)
    assert example.target_distribution == pytest.approx((0.2, 0.5, 0.3))
    with pytest.raises(RecordError, match="sums to 0"):
        make(target_distribution=[0.0, 0.0, 0.0], renormalize=True)


def test_distribution_from_counts():
    assert distribution_from_counts([1, 3, 0, 4]) == [0.125, 0.375, 0.0, 0.5]
    with pytest.raises(ValueError, match="sum to 0"):
        distribution_from_counts([0, 0])


def test_majority_helpers():
    example = make()  # p* = (0.2, 0.5, 0.3) over classes (5, 4, 2); chosen 2
    assert majority_belief(example) == 4
    assert not is_majority_chosen(example)
    assert is_majority_chosen(make(chosen_belief=4))
    tie = make(target_distribution=[0.4, 0.2, 0.4])
    assert majority_belief(tie) == 5  # first in belief order
    assert is_majority_chosen(tie)  # chosen class 2 shares the maximum


def test_dict_round_trip():
    example = make(question_id="q1", metadata={"country": "US", "n": 3})
    data = example.to_dict()
    assert data["beliefs"][0] == {"class_id": 5, "description": "Very good"}
    assert data["target_distribution"] == [0.2, 0.5, 0.3]
    assert GroupPreferenceExample.from_dict(json.loads(json.dumps(data))) == example


def test_from_dict_rejects_unknown_and_missing_fields():
    data = make().to_dict()
    with pytest.raises(RecordError, match="unknown field") as info:
        GroupPreferenceExample.from_dict({**data, "chosen": "x"})
    assert info.value.field == "chosen"
    del data["group"]
    with pytest.raises(RecordError, match="required field is missing") as info:
        GroupPreferenceExample.from_dict(data)
    assert info.value.field == "group"


@pytest.mark.parametrize("name", ["train.jsonl", "train.jsonl.gz"])
def test_jsonl_round_trip(tmp_path, name):
    examples = [make(), make(chosen_belief=4, question_id="q2", style="casual")]
    path = tmp_path / "sub" / name
    assert write_examples(path, examples) == 2
    assert read_examples(path) == examples
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            assert len(handle.read().splitlines()) == 2


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_line_names_file_line_and_field(tmp_path):
    good = json.dumps(make().to_dict())
    bad = make().to_dict()
    bad["target_distribution"] = [0.1, 0.1, 0.1]
    path = _write_lines(tmp_path / "data.jsonl", [good, "", good, json.dumps(bad)])
    with pytest.raises(RecordFileError) as info:
        read_examples(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: field 'target_distribution': sums to 0.3")
    assert info.value.line_number == 4
    assert info.value.field == "target_distribution"


def test_invalid_json_line_is_an_error(tmp_path):
    path = _write_lines(tmp_path / "data.jsonl", [json.dumps(make().to_dict()), "{not json"])
    with pytest.raises(RecordFileError, match=r"data\.jsonl:2: invalid JSON"):
        read_examples(path)


def test_read_with_renormalize(tmp_path):
    data = make().to_dict()
    data["target_distribution"] = [2, 5, 3]
    path = _write_lines(tmp_path / "counts.jsonl", [json.dumps(data)])
    with pytest.raises(RecordFileError, match=r"counts\.jsonl:1: field 'target_distribution'"):
        read_examples(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (example,) = read_examples(path, renormalize=True)
    assert example.target_distribution == pytest.approx((0.2, 0.5, 0.3))
    assert any("renormalised" in str(w.message) for w in caught)
