"""``pluralign serve`` over a real socket, called with the openai client: the protocol,
the belief fields, streaming, the API key, bad requests, a model error, batching.

The server runs in this process (uvicorn on a thread, a free localhost port) around
the tiny model, with the belief set 1:Oppose, 2:Neutral, 3:Support.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from pluralign.beliefs.formats import OPINION_FORMAT
from pluralign.beliefs.readout import belief_distributions
from pluralign.beliefs.tokenize import belief_marker_ids, encode_prompt
from pluralign.serve import ServeConfig, parse_belief_set
from pluralign.serve.app import create_app
from pluralign.serve.engine import Engine
from pluralign.serve.server import running_server

BELIEFS = "1:Oppose,2:Neutral,3:Support"
NAME = "tiny-gdpo"
QUESTION = "Should cities ban cars from their centres?"
MESSAGES = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def engine(tiny_lm) -> Engine:
    model, tokenizer = tiny_lm
    return Engine(copy.deepcopy(model), tokenizer, OPINION_FORMAT,
                  default_beliefs=parse_belief_set(BELIEFS), seed=0)


@contextmanager
def served(engine: Engine, *, log_level: str = "warning", **fields: Any
           ) -> Iterator[tuple[str, Any]]:
    """(base URL, app) of a server around ``engine`` with ServeConfig ``fields``."""
    settings = {"model": "tiny", "served_model_name": NAME, "api_key_env": "",
                "max_tokens_limit": 64, "default_max_tokens": 8, "max_body_bytes": 20_000,
                "max_wait_ms": 5.0, **fields}
    app = create_app(engine, ServeConfig(**settings))
    with running_server(app, log_level=log_level) as url:
        yield url, app


@pytest.fixture(scope="module")
def server(engine) -> Iterator[tuple[str, Any]]:
    with served(engine) as running:
        yield running


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def ask(url: str, **params: Any) -> Any:
    return client(url).chat.completions.create(**{"model": NAME, "messages": MESSAGES,
                                                  **params})


def raw(url: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
        ) -> tuple[int, Any]:
    """(status, JSON body, else text) of a plain HTTP request, for what the openai client
    cannot send."""
    request = urllib.request.Request(url.removesuffix("/v1") + path, data=body,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        return error.code, json.loads(text) if text.startswith("{") else text


# ------------------------------------------------------------------ protocol


def test_models_and_health_name_the_served_model(server):
    url, _ = server
    models = client(url).models.list()
    assert [m.id for m in models.data] == [NAME]
    assert models.data[0].beliefs == [{"class_id": 1, "description": "Oppose"},
                                      {"class_id": 2, "description": "Neutral"},
                                      {"class_id": 3, "description": "Support"}]
    assert client(url).models.retrieve(NAME).id == NAME
    status, health = raw(url, "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == NAME


def test_chat_completion_carries_beliefs_and_the_model_distribution(server, engine):
    url, _ = server
    reply = ask(url, n=3, max_tokens=6, seed=1)
    assert reply.object == "chat.completion" and reply.model == NAME
    assert [c.index for c in reply.choices] == [0, 1, 2]
    # The distribution is the model's one-forward reading at the belief slot.
    ids = encode_prompt(engine.tokenizer, QUESTION, OPINION_FORMAT)
    markers = belief_marker_ids(engine.tokenizer, [1, 2, 3])
    expected = belief_distributions(engine.model, [ids], [markers],
                                    pad_token_id=engine.tokenizer.pad_token_id).probs[0]
    served = reply.belief_distribution
    assert [b["class_id"] for b in served] == [1, 2, 3]
    assert [b["description"] for b in served] == ["Oppose", "Neutral", "Support"]
    assert [b["probability"] for b in served] == pytest.approx(expected, abs=1e-5)
    for choice in reply.choices:
        belief = choice.belief
        assert belief["description"] == {1: "Oppose", 2: "Neutral", 3: "Support"}[
            belief["class_id"]]
        assert belief["probability"] == pytest.approx(expected[belief["class_id"] - 1],
                                                      abs=1e-5)
        assert isinstance(choice.message.content, str) and choice.message.role == "assistant"
        assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == len(ids)
    assert 3 <= reply.usage.completion_tokens <= 3 * (6 + 1)
    assert reply.belief_sampling == {"temperature": 1.0, "top_k": None, "belief": None,
                                     "probabilities": pytest.approx(expected, abs=1e-5)}


def test_answers_beliefs_follow_the_distribution_they_are_drawn_from(server):
    url, _ = server
    counts: Counter[int] = Counter()
    for seed in range(12):
        reply = ask(url, n=50, max_tokens=1, seed=seed, extra_body={"belief_temperature": 0.1})
        counts.update(c.belief["class_id"] for c in reply.choices)
    model_p = [b["probability"] for b in reply.belief_distribution]
    sampling = reply.belief_sampling["probabilities"]
    # Temperature 0.1 sharpens the model's distribution: softmax(log p / 0.1).
    sharpened = [p ** (1 / 0.1) for p in model_p]
    assert sampling == pytest.approx([p / sum(sharpened) for p in sharpened], abs=1e-4)
    assert max(sampling) - min(sampling) > 0.3  # far from uniform, so the check can fail
    empirical = [counts[c] / 600 for c in (1, 2, 3)]
    assert max(abs(e - s) for e, s in zip(empirical, sampling, strict=True)) < 0.06


def test_top_k_one_and_a_fixed_belief(server):
    url, _ = server
    reply = ask(url, n=8, max_tokens=1, extra_body={"belief_top_k": 1})
    model_p = [b["probability"] for b in reply.belief_distribution]
    top = 1 + max(range(3), key=model_p.__getitem__)
    assert {c.belief["class_id"] for c in reply.choices} == {top}
    reply = ask(url, n=4, max_tokens=1, extra_body={"belief": 2})
    assert [c.belief["class_id"] for c in reply.choices] == [2, 2, 2, 2]
    assert reply.belief_sampling["belief"] == 2
    assert reply.belief_sampling["probabilities"] == [0.0, 1.0, 0.0]


def test_a_request_may_bring_its_own_belief_set(server):
    url, _ = server
    reply = ask(url, n=4, max_tokens=1, extra_body={
        "beliefs": [{"class_id": 4, "description": "No"}, {"class_id": 5, "description": "Yes"}]})
    assert [b["description"] for b in reply.belief_distribution] == ["No", "Yes"]
    assert {c.belief["class_id"] for c in reply.choices} <= {4, 5}
    assert math.isclose(sum(b["probability"] for b in reply.belief_distribution), 1.0,
                        abs_tol=1e-6)


# ------------------------------------------------------------------ streaming


def test_streamed_chunks_add_up_to_the_answer(server):
    url, _ = server
    params = {"n": 2, "max_tokens": 12, "temperature": 0, "extra_body": {"belief": 3}}
    full = ask(url, **params)
    chunks = list(ask(url, stream=True, stream_options={"include_usage": True}, **params))
    texts: dict[int, str] = defaultdict(str)
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert dict(texts) == {c.index: c.message.content for c in full.choices}
    assert all(texts.values()) and len(chunks) > 6  # really sent piece by piece
    first = chunks[0].choices
    assert [c.delta.role for c in first] == ["assistant", "assistant"]
    assert [c.belief["class_id"] for c in first] == [3, 3]
    assert [b["class_id"] for b in chunks[0].belief_distribution] == [1, 2, 3]
    finishing = [c for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert sorted((c.index, c.finish_reason) for c in finishing) == sorted(
        (c.index, c.finish_reason) for c in full.choices)
    assert all(c.belief["description"] == "Support" for c in finishing)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens


# ------------------------------------------------------------------ API key


def test_api_key_is_checked_on_every_request_and_never_logged(engine, caplog, capfd):
    key = "sk-serve-test-7f3a9c1e"
    caplog.set_level(logging.DEBUG)
    with served(engine, api_key=key, log_level="debug") as (url, _):
        status, body = raw(url, "/health")
        assert status == 401 and "missing API key" in body["error"]["message"]
        status, _ = raw(url, "/v1/models", headers={"Authorization": "Basic abc"})
        assert status == 401
        with pytest.raises(openai.AuthenticationError, match="invalid API key") as error:
            client(url, key="sk-wrong").chat.completions.create(model=NAME, messages=MESSAGES)
        assert error.value.status_code == 401
        reply = client(url, key=key).chat.completions.create(model=NAME, messages=MESSAGES,
                                                              max_tokens=2)
        assert reply.choices[0].belief["class_id"] in (1, 2, 3)
        assert raw(url, "/health", headers={"Authorization": f"Bearer {key}"})[0] == 200
    captured = capfd.readouterr()
    assert "POST /v1/chat/completions" in captured.err + captured.out + caplog.text
    assert key not in caplog.text + captured.err + captured.out


# ------------------------------------------------------------------ bad requests


@pytest.mark.parametrize(("params", "message"), [
    ({"messages": []}, "messages: List should have at least 1 item"),
    ({"max_tokens": 1000}, "max_tokens: 1000 is above this server's limit of 64"),
    ({"n": 65}, "n: 65 is above this server's limit of 64"),
    ({"extra_body": {"belief": 9}}, "belief: 9 is not in the belief set [1, 2, 3]"),
    ({"extra_body": {"beliefs": [{"class_id": 12, "description": "x"},
                                 {"class_id": 1, "description": "y"}]}},
     "beliefs: belief marker '12' is 2 tokens"),
    ({"extra_body": {"beliefs": "1:Oppose"}}, "beliefs: a belief set needs at least two"),
    ({"extra_body": {"group": "Japan"}}, "group: this model was not trained with "
                                         "group_in_prompt"),
    ({"extra_body": {"belief_temprature": 0.5}}, "belief_temprature: unknown field."),
    ({"messages": [{"role": "assistant", "content": "Hi"}]},
     "messages: the last message must be the user's question"),
    ({"temperature": -1}, "temperature: Input should be greater than or equal to 0"),
    ({"stop": ["\n"]}, "stop: not supported by pluralign serve"),
])
def test_bad_requests_get_a_400_that_says_what_is_wrong(server, params, message):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as error:
        ask(url, **params)
    assert error.value.status_code == 400
    assert message in error.value.message


def test_other_bad_requests(server, engine):
    url, _ = server
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4o' is not served here"):
        ask(url, model="gpt-4o")
    status, body = raw(url, "/v1/chat/completions", b"{not json")
    assert status == 400
    assert body["error"]["message"].startswith("the body is not valid JSON: Expecting")
    huge = json.dumps({"model": NAME, "messages": [{"role": "user", "content": "x" * 50_000}]})
    assert raw(url, "/v1/chat/completions", huge.encode()) == (413, "Content Too Large")
    bare = Engine(engine.model, engine.tokenizer, OPINION_FORMAT)  # no default belief set
    with served(bare) as (bare_url, _), pytest.raises(openai.BadRequestError,
                                                      match="no default belief set"):
        ask(bare_url)


# ------------------------------------------------------------------ model errors


def test_a_model_error_is_a_500_and_the_server_goes_on(server, monkeypatch):
    url, app = server
    engine = app.state.engine
    original, failures = engine._generate, []

    def fail_twice(*args: Any, **kwargs: Any) -> Any:
        if len(failures) < 2:
            failures.append(1)
            raise RuntimeError("out of memory (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "_generate", fail_twice)
    with pytest.raises(openai.InternalServerError) as error:
        ask(url, max_tokens=2)
    assert error.value.status_code == 500
    assert "model error: RuntimeError: out of memory (simulated)" in error.value.message
    with pytest.raises(openai.APIError, match="out of memory"):
        list(ask(url, max_tokens=2, stream=True))
    assert ask(url, max_tokens=2).choices[0].belief["class_id"] in (1, 2, 3)
    assert raw(url, "/health")[1]["failed_batches"] == 2


# ------------------------------------------------------------------ batching


def test_concurrent_requests_are_answered_in_shared_batches(engine):
    with served(engine, max_wait_ms=300.0) as (url, app):
        start = threading.Barrier(8)

        def one(seed: int) -> Any:
            start.wait()
            return ask(url, max_tokens=4, seed=seed)

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(one, range(8)))
        stats = app.state.worker.stats
    assert all(len(r.choices) == 1 for r in replies)
    assert stats.requests == 8
    assert stats.batches < 8 and stats.largest >= 2
