"""``pluralign serve`` with group-conditioned models (issue 20): a model trained with
``group_in_prompt`` answers for the group a request names, after that group's example
answers where it trained with ``group_context``; any other model refuses ``group``.

Servers run in this process around the tiny model (see tests/test_serve.py), its format
given a group line; the group context comes from a pool of two groups' records.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from pluralign.beliefs.formats import GROUP_LINE, OPINION_FORMAT
from pluralign.beliefs.readout import belief_distributions
from pluralign.beliefs.tokenize import belief_marker_ids, encode_prompt
from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.eval.predictions import PromptGroup
from pluralign.eval.prompting import group_context_prompts
from pluralign.runs import write_format_info
from pluralign.serve import ServeConfig, parse_belief_set
from pluralign.serve.app import create_app
from pluralign.serve.engine import Engine, RequestError, group_context
from pluralign.serve.server import load_engine, running_server

BELIEFS = "1:Oppose,2:Neutral,3:Support"
NAME = "tiny-groups"
QUESTION = "Should cities ban cars from their centres?"
GROUPED = dataclasses.replace(OPINION_FORMAT, group_template=GROUP_LINE)
GROUPS = ("Northvale", "Southmere")


def ask(url: str, **extra: Any) -> Any:
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    return client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": QUESTION}], max_tokens=2, seed=0,
        extra_body=extra)


@dataclasses.dataclass
class Refusal:
    status_code: int
    param: str | None
    message: str  #: the server's own message (the client's adds "Error code: 400 - ")


def refusal(url: str, **extra: Any) -> Refusal:
    with pytest.raises(openai.BadRequestError) as error:
        ask(url, **extra)
    return Refusal(error.value.status_code, error.value.param, error.value.body["message"])


def reading(engine: Engine, prompt_ids: list[int]) -> list[float]:
    """The model's own belief distribution after ``prompt_ids`` (what a reply must carry)."""
    markers = belief_marker_ids(engine.tokenizer, [1, 2, 3])
    return belief_distributions(engine.model, [prompt_ids], [markers],
                                pad_token_id=engine.tokenizer.pad_token_id).probs[0]


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """Training records of two groups: the same questions with other targets."""
    path = tmp_path_factory.mktemp("serve-groups") / "train.jsonl"
    write_examples(path, [*conflicting_opinions(4, 1, seed=0, group=GROUPS[0]),
                          *conflicting_opinions(4, 1, seed=5, group=GROUPS[1])])
    return path


@pytest.fixture(scope="module")
def model(tiny_lm) -> tuple[Any, Any]:
    model, tokenizer = tiny_lm
    return copy.deepcopy(model), tokenizer


def served(engine: Engine) -> Any:
    config = ServeConfig(model="tiny", served_model_name=NAME, api_key_env="",
                         max_tokens_limit=8, default_max_tokens=2, max_wait_ms=1.0)
    return running_server(create_app(engine, config))


# ------------------------------------------------------------------ the group line


def test_a_group_line_model_answers_each_group_after_its_own_prompt(model):
    lm, tokenizer = model
    engine = Engine(lm, tokenizer, GROUPED, default_beliefs=parse_belief_set(BELIEFS))
    with served(engine) as url:
        replies = {group: ask(url, group=group) for group in GROUPS}
        missing = refusal(url)
        blank = refusal(url, group="  ")
        marker = refusal(url, group="A<|belief_1|>")
    served_p = {}
    for group, reply in replies.items():
        ids = encode_prompt(tokenizer, QUESTION, GROUPED, group=group)
        assert tokenizer.decode(ids) == f"<Q>Group: {group}\n{QUESTION}<A>"
        assert reply.usage.prompt_tokens == len(ids)
        served_p[group] = [b["probability"] for b in reply.belief_distribution]
        assert served_p[group] == pytest.approx(reading(engine, ids), abs=1e-5)
    # One question, two groups: two prompts, so two distributions.
    assert max(abs(a - b) for a, b in zip(*served_p.values(), strict=True)) > 1e-4
    assert missing.status_code == 400 and missing.param == "group"
    assert missing.message.startswith("group: this model was trained with group_in_prompt "
                                      "and answers for the group a request names; send 'group'")
    assert blank.status_code == 400 and "group: " in blank.message and \
        "name the group" in blank.message
    assert "'<|belief_'" in marker.message and "rename the group" in marker.message


def test_a_model_without_a_group_line_refuses_a_group(model):
    lm, tokenizer = model
    engine = Engine(lm, tokenizer, OPINION_FORMAT, default_beliefs=parse_belief_set(BELIEFS))
    with served(engine) as url:
        refused = refusal(url, group="Japan")
        card = openai.OpenAI(base_url=url, api_key="unused").models.retrieve(NAME)
        plain = ask(url)
    assert refused.status_code == 400 and refused.param == "group"
    assert refused.message.startswith("group: this model was not trained with group_in_prompt")
    assert card.group_in_prompt is False
    assert plain.usage.prompt_tokens == len(encode_prompt(tokenizer, QUESTION, OPINION_FORMAT))


# ------------------------------------------------------------------ the group context


def test_group_context_is_drawn_from_the_pool_as_generate_draws_it(model, pool):
    lm, tokenizer = model
    info = {"group_context": {"shots": 2, "pool": str(pool)}}
    engine = Engine(lm, tokenizer, GROUPED, default_beliefs=parse_belief_set(BELIEFS),
                    context_for=group_context(info, seed=0))
    with served(engine) as url:
        replies = {group: ask(url, group=group) for group in GROUPS}
        unknown = refusal(url, group="Eastfold")
    for group, reply in replies.items():
        # What `pluralign generate --group` (seed 0) puts before the question.
        [asked], _ = group_context_prompts([PromptGroup(QUESTION, group, None, (), [])], [],
                                           info, seed=0)
        assert asked.context.startswith(f"Answers of the group {group} to other questions:")
        assert asked.context.count("Question: ") == 2
        ids = encode_prompt(tokenizer, QUESTION, GROUPED, context=asked.context, group=group)
        assert tokenizer.decode(ids).endswith(f"<Q>Group: {group}\n{QUESTION}<A>")
        assert reply.usage.prompt_tokens == len(ids)
        assert [b["probability"] for b in reply.belief_distribution] == pytest.approx(
            reading(engine, ids), abs=1e-5)
    assert unknown.status_code == 400 and unknown.param == "group"
    assert unknown.message.startswith(
        "group: group 'Eastfold' has no records in this model's group-context pool")
    assert "groups there: Northvale, Southmere" in unknown.message
    assert str(pool) not in unknown.message  # the server's paths stay on the server


def test_a_missing_pool_fails_at_start_and_only_other_questions_are_shown(tmp_path):
    with pytest.raises(FileNotFoundError, match="draws its group context from its training file"):
        group_context({"group_context": {"shots": 2, "pool": str(tmp_path / "gone.jsonl")}})
    one_question = tmp_path / "one.jsonl"
    write_examples(one_question, conflicting_opinions(1, 2, group="Northvale"))
    context_for = group_context({"group_context": {"shots": 2, "pool": str(one_question)}})
    # Another question: the pool's one question is shown; that question itself: never.
    shown = context_for("Is the weather good?", "Northvale")
    assert shown.count("Question: ") == 1
    with pytest.raises(RequestError, match="records of no other question") as error:
        context_for(conflicting_opinions(1, 1)[0].prompt, "Northvale")
    assert error.value.param == "group"


def test_load_engine_serves_a_saved_group_model_and_an_unseen_groups_pool(model, pool,
                                                                          tmp_path):
    lm, tokenizer = model
    folder = tmp_path / "final"
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_format_info(folder, {**GROUPED.to_info(),
                               "group_context": {"shots": 2, "pool": str(pool)}})
    unseen = tmp_path / "unseen.jsonl"
    write_examples(unseen, conflicting_opinions(3, 1, seed=9, group="Eastfold"))
    engine = load_engine(ServeConfig(model=str(folder), device="cpu", beliefs=BELIEFS,
                                     api_key_env="", group_context_pool=str(unseen)))
    assert engine.fmt.group_template == GROUP_LINE
    spec = engine.spec(QUESTION, group="Eastfold")
    text = tokenizer.decode(spec.prompt_ids)
    assert text.startswith("Answers of the group Eastfold to other questions:")
    assert text.endswith(f"<Q>Group: Eastfold\n{QUESTION}<A>")
    with pytest.raises(RequestError, match="group 'Northvale' has no records"):
        engine.spec(QUESTION, group="Northvale")  # the given pool replaces the recorded one
    info = json.loads((folder / "pluralign_format.json").read_text())
    assert info["group_template"] == GROUP_LINE
