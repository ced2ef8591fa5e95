"""k-shot prompting baselines (local model and OpenAI-compatible server) and ICF data."""

from __future__ import annotations

import random

import pytest

from openai_stub_server import Reply, StubServer
from pluralign.data.records import GroupPreferenceExample
from pluralign.data.toy import STANCES, conflicting_opinions
from pluralign.eval.evaluate import group_prompts, score_predictions
from pluralign.eval.generate import SamplingOptions
from pluralign.eval.prompting import (
    KSHOT_SYSTEM,
    in_context_records,
    kshot_api,
    kshot_local,
    kshot_prompt,
    kshot_user_text,
    sample_shots,
)
from pluralign.llm import OpenAIBackend


def _record(prompt: str, chosen: int, response: str) -> GroupPreferenceExample:
    return GroupPreferenceExample(
        prompt=prompt, beliefs=STANCES, target_distribution=(0.1, 0.2, 0.3, 0.4),
        chosen_belief=chosen, rejected_belief=1 if chosen != 1 else 2,
        chosen_response=response, rejected_response="other", group="G", question_id=prompt[:3])


def test_kshot_prompt_follows_the_paper_template():
    shots = [_record("Is tea good?", 5, "Tea is great."),
             _record("Are taxes fair?", 2, "Not quite.")]
    expected = (
        "You are a helpful assistant and can generate the same format as the examples in the "
        "context.\n\n"
        "Question: Is tea good?, Answer: 5<Strongly support>Tea is great.\n\n"
        "Question: Are taxes fair?, Answer: 2<Somewhat oppose>Not quite.\n\n"
        "Question: Is coffee good?, Answer: "
    )
    assert kshot_prompt("Is coffee good?", shots) == expected
    paper = kshot_user_text("Is coffee good?", shots, include_class=False)
    assert paper == (
        "Question: Is tea good?, Answer: <Strongly support>Tea is great.\n\n"
        "Question: Are taxes fair?, Answer: <Somewhat oppose>Not quite.\n\n"
        "Question: Is coffee good?, Answer: "
    )
    assert KSHOT_SYSTEM.startswith("You are a helpful assistant")


def test_shots_come_from_other_questions():
    records = conflicting_opinions(4, 2)
    shots = sample_shots(records, 3, random.Random(0), target=records[0])
    assert len(shots) == 3
    assert records[0].prompt not in {s.prompt for s in shots}
    assert len({s.prompt for s in shots}) == 3  # one per question while there are enough


def test_icf_records_get_k_examples_as_their_context():
    records = conflicting_opinions(4, 2)
    icf = in_context_records(records, k=2, seed=0)
    assert len(icf) == len(records)
    for original, new in zip(records, icf, strict=True):
        assert new.prompt == original.prompt  # the shots are not inside the question
        assert new.context is not None and new.context.endswith("\n\n")
        system, *lines = new.context.rstrip("\n").split("\n\n")
        assert system == KSHOT_SYSTEM
        assert len(lines) == 2 and all(line.startswith("Question: ") for line in lines)
        assert original.prompt not in new.context
        assert len(new.metadata["icf_shots"]) == 2
        # Everything but the context is the original record: SFT trains on it unchanged.
        assert (new.chosen_belief, new.chosen_response, new.target_distribution) == (
            original.chosen_belief, original.chosen_response, original.target_distribution)
    assert in_context_records(records, k=2, seed=0) == icf
    with pytest.raises(ValueError):
        in_context_records(records, k=0)


def test_kshot_local_scores_like_a_trained_model(tiny_lm):
    model, tokenizer = tiny_lm
    records = conflicting_opinions(3, 2)
    groups = group_prompts(records)
    predictions = kshot_local(model, tokenizer, groups, records, k=2, n=2,
                              options=SamplingOptions(max_new_tokens=4))
    assert len(predictions) == 3
    for p in predictions:
        assert sum(p.predicted) == pytest.approx(1.0)
        assert {g.class_id for g in p.generations} <= set(p.group.class_ids)
        assert all("\n" not in g.response for g in p.generations)
    metrics = score_predictions(predictions)
    assert metrics["jsd"].n == 3 and metrics["cbc"].n == 6


@pytest.fixture
def server():
    stub = StubServer().start()
    yield stub
    stub.stop()


def test_kshot_api_distribution_is_the_sampled_estimate(server):
    records = conflicting_opinions(2, 3)
    groups = group_prompts(records)
    rng = random.Random(0)
    users = [kshot_user_text(g.prompt, sample_shots(records, 2, rng, target=g)) for g in groups]
    server.script(users[0], Reply(text="4<Somewhat support>I lean."), Reply(text="4<x>Yes"),
                  Reply(text="1<Strongly oppose>No.\nQuestion: next"), Reply(text="garbage"))
    server.script(users[1], *[Reply(text="5<Strongly support>Yes!")] * 3, Reply(status=500))
    backend = OpenAIBackend("stub-model", base_url=server.url, api_key_env=None, max_retries=0,
                            progress=False)
    first, second = kshot_api(backend, groups, records, k=2, n=4, seed=0)
    assert first.sampled == pytest.approx([1 / 3, 0, 2 / 3, 0])
    assert first.off_belief == 1 and first.api_errors == 0
    assert sorted(g.class_id or 0 for g in first.generations) == [0, 1, 4, 4]
    assert "Question" not in " ".join(g.response for g in first.generations)
    assert second.sampled == pytest.approx([0, 0, 0, 1])
    assert second.api_errors == 1
    system = server.bodies[0]["messages"][0]
    assert system == {"role": "system", "content": KSHOT_SYSTEM}


def test_kshot_api_without_class_reads_the_belief_from_the_description(server):
    records = conflicting_opinions(2, 2)
    groups = group_prompts(records)[:1]
    rng = random.Random(0)
    user = kshot_user_text(groups[0].prompt, sample_shots(records, 1, rng, target=groups[0]),
                           include_class=False)
    server.script(user, Reply(text="<Somewhat oppose>Hmm."), Reply(text="<Unknown>?"))
    backend = OpenAIBackend("stub-model", base_url=server.url, api_key_env=None, max_retries=0,
                            progress=False)
    (prediction,) = kshot_api(backend, groups, records, k=1, n=2, include_class=False)
    assert prediction.sampled == pytest.approx([0, 1, 0, 0])
    assert sorted(g.class_id or 0 for g in prediction.generations) == [0, 2]
