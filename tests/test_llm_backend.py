"""The LLM backend: OpenAI-compatible HTTP (against a real local stub server) and local HF."""

from __future__ import annotations

import copy
import logging
import time
import warnings

import pytest

from openai_stub_server import Reply, StubServer
from pluralign.config import ConfigError
from pluralign.generation import generate_text
from pluralign.llm import (
    ChatRequest,
    HFBackend,
    LLMConfig,
    LLMError,
    OpenAIBackend,
    make_backend,
    require_texts,
)

SECRET = "sk-test-0123456789-do-not-leak"
KEY_ENV = "PLURALIGN_TEST_LLM_KEY"
#: The openai client waits as long as a positive Retry-After says (1 ms here); without
#: one, or with "Retry-After: 0", it backs off from 0.5 s, which would slow the tests.
SOON = {"retry-after-ms": "1"}


@pytest.fixture
def server():
    stub = StubServer().start()
    yield stub
    stub.stop()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def http_backend(server: StubServer, **options) -> OpenAIBackend:
    options = {"max_retries": 3, "timeout": 5.0, "progress": False, **options}
    return OpenAIBackend("stub-model", base_url=server.url, api_key_env=KEY_ENV, **options)


# ------------------------------------------------------------------ OpenAI-compatible


def test_answers_come_back_in_order_with_the_requested_parameters(server):
    prompts = [f"question {i}" for i in range(10)]
    backend = http_backend(server, max_concurrency=4)
    results = backend.complete_prompts(prompts, system="Be brief.", max_tokens=7, seed=3)
    assert [r.text for r in results] == [f"echo: {p}" for p in prompts]
    assert all(r.ok and r.attempts == 1 and r.finish_reason == "stop" for r in results)
    assert server.count == 10
    body = server.bodies[0]
    assert body["model"] == "stub-model"
    assert body["max_tokens"] == 7
    assert body["seed"] == 3
    assert body["temperature"] == 0.0  # the backend default fills what the request left unset
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert {h["authorization"] for h in server.headers} == {f"Bearer {SECRET}"}
    stats = backend.stats
    assert (stats.requests, stats.cache_hits, stats.retries, stats.failures) == (10, 0, 0, 0)


def test_concurrency_never_exceeds_max_concurrency(server):
    server.delay = 0.1
    backend = http_backend(server, max_concurrency=3)
    results = backend.complete_prompts([f"p{i}" for i in range(12)])
    assert [r.text for r in results] == [f"echo: p{i}" for i in range(12)]
    assert server.max_in_flight == 3


def test_transient_errors_are_retried_until_success(server):
    server.script("flaky", Reply(status=500, headers=SOON), Reply(status=502, headers=SOON),
                  Reply())
    server.script("limited", Reply(status=429, headers=SOON), Reply())
    backend = http_backend(server)
    flaky, limited, fine = backend.complete_prompts(["flaky", "limited", "fine"])
    assert (flaky.text, flaky.attempts) == ("echo: flaky", 3)
    assert (limited.text, limited.attempts) == ("echo: limited", 2)
    assert (fine.text, fine.attempts) == ("echo: fine", 1)
    assert server.count_for("flaky") == 3 and server.count_for("limited") == 2
    # Each request's own retries, though the three ran at once in different threads.
    assert backend.stats.retries == 3
    assert backend.stats.failures == 0


def test_rate_limits_are_retried_by_the_client_after_retry_after(server):
    limited = Reply(status=429, headers={"Retry-After": "0.1"})
    server.script("busy", limited, limited, Reply())
    backend = http_backend(server, max_retries=2)
    started = time.perf_counter()
    (result,) = backend.complete_prompts(["busy"])
    waited = time.perf_counter() - started
    assert (result.text, result.attempts) == ("echo: busy", 3)
    assert server.count_for("busy") == 3
    # The server's 0.1 s, twice, rather than the client's backoff (0.5 s, then 1 s).
    assert 0.2 <= waited < 1.0
    stats = backend.stats
    assert (stats.requests, stats.retries, stats.failures, stats.generated) == (1, 2, 0, 1)


def test_a_server_that_always_fails_ends_in_one_counted_failure(server):
    server.script("broken", *[Reply(status=500, headers=SOON)] * 5)
    backend = http_backend(server, max_retries=2)
    (result,) = backend.complete_prompts(["broken"])
    assert not result.ok and result.attempts == 3 and server.count_for("broken") == 3
    assert result.error.startswith(f"InternalServerError: HTTP 500 from {server.url} after "
                                   "3 attempts: ")
    assert "scripted 500" in result.error  # the server's own message is kept
    stats = backend.stats
    assert (stats.requests, stats.failures, stats.retries) == (1, 1, 2)
    assert stats.errors == {"InternalServerError": 1}
    assert "1 failed, 2 retries (InternalServerError: 1)" in stats.summary()


def test_401_fails_at_once_and_is_counted(server, caplog):
    server.script("secret", *[Reply(status=401)] * 5)
    backend = http_backend(server)
    with caplog.at_level(logging.WARNING, logger="pluralign.llm"):
        bad, good = backend.complete_prompts(["secret", "open"])
    assert not bad.ok and bad.text is None
    assert bad.error.startswith("AuthenticationError") and "401" in bad.error
    assert bad.attempts == 1 and server.count_for("secret") == 1
    assert good.text == "echo: open"
    stats = backend.stats
    assert (stats.failures, stats.retries, stats.errors) == (1, 0, {"AuthenticationError": 1})
    assert "1 of 2 requests failed" in caplog.text
    with pytest.raises(LLMError, match="1 of 2 LLM requests failed"):
        require_texts([bad, good])


def test_400_is_not_retried_and_exhausted_retries_fail(server):
    server.script("bad request", Reply(status=400))
    server.script("down", *[Reply(status=503, headers=SOON)] * 10)
    backend = http_backend(server, max_retries=2)
    bad, down = backend.complete_prompts(["bad request", "down"])
    assert bad.error.startswith("BadRequestError") and bad.attempts == 1
    assert down.error.startswith("InternalServerError") and down.attempts == 3
    assert server.count_for("down") == 3
    stats = backend.stats
    assert (stats.requests, stats.failures, stats.retries, stats.generated) == (2, 2, 2, 0)


def test_malformed_json_is_reported_without_retries(server):
    # The client retries transport and status errors only; a garbled 200 fails at once
    # (and is not cached, so a re-run asks again).
    server.script("garbled", Reply(malformed=True), Reply())
    backend = http_backend(server, max_retries=1)
    (garbled,) = backend.complete_prompts(["garbled"])
    assert garbled.text is None and garbled.attempts == 1
    assert f"unusable answer from {server.url}" in garbled.error
    assert (backend.stats.failures, backend.stats.retries) == (1, 0)
    assert backend.complete_prompts(["garbled"])[0].text == "echo: garbled"


def test_null_content_is_a_failure_but_an_empty_string_is_an_answer(server):
    server.script("silent", Reply(null_content=True))
    server.script("terse", Reply(text=""))
    backend = http_backend(server)
    silent, terse = backend.complete_prompts(["silent", "terse"])
    assert silent.text is None and silent.error.startswith("EmptyAnswerError")
    assert silent.attempts == 1  # the server answered; asking again would not help
    assert terse.ok and terse.text == ""
    assert backend.stats.failures == 1


def test_slow_response_times_out_and_is_retried(server):
    server.script("slow", Reply(delay=1.5), Reply())
    backend = http_backend(server, timeout=0.3)
    started = time.perf_counter()
    (result,) = backend.complete_prompts(["slow"])
    assert (result.text, result.attempts) == ("echo: slow", 2)
    assert time.perf_counter() - started < 1.4  # did not wait for the slow reply
    assert backend.stats.retries == 1


def test_unreachable_server_fails_with_connection_error(server):
    url = server.url
    server.stop()  # the port is closed now: connections are refused
    backend = OpenAIBackend("m", base_url=url, api_key_env=KEY_ENV, max_retries=1,
                            progress=False)
    (result,) = backend.complete_prompts(["anyone?"])
    assert result.error.startswith(f"APIConnectionError: could not connect to {url}, after "
                                   "2 attempts")
    assert result.attempts == 2
    assert (backend.stats.retries, backend.stats.failures) == (1, 1)


def test_rerun_is_answered_from_the_cache(server, tmp_path):
    server.script("denied", Reply(status=401), Reply(status=401))
    prompts = ["a", "b", "c", "denied"]
    first = http_backend(server, cache_dir=tmp_path).complete_prompts(prompts)
    assert server.count == 4 and not first[3].ok
    again = http_backend(server, cache_dir=tmp_path)
    second = again.complete_prompts(prompts)
    assert [r.text for r in second[:3]] == ["echo: a", "echo: b", "echo: c"]
    assert all(r.cached for r in second[:3])
    # Failures are never cached: the denied request was asked again, and only it.
    assert server.count == 5 and server.count_for("denied") == 2
    assert (again.stats.cache_hits, again.stats.failures) == (3, 1)
    # Different parameters are a different request.
    (longer,) = again.complete_prompts(["a"], max_tokens=99)
    assert not longer.cached and server.count == 6


def test_duplicate_requests_in_one_call_are_asked_once(server):
    backend = http_backend(server)
    results = backend.complete_prompts(["same", "same", "other"])
    assert [r.text for r in results] == ["echo: same", "echo: same", "echo: other"]
    assert server.count == 2
    assert (backend.stats.requests, backend.stats.cache_hits) == (3, 1)


def test_api_key_stays_out_of_repr_cache_config_and_logs(server, tmp_path, caplog):
    config = LLMConfig(backend="openai", model="stub-model", base_url=server.url,
                       api_key_env=KEY_ENV, cache_dir=str(tmp_path), progress=False,
                       max_retries=1)
    server.script("fail", Reply(status=500, headers=SOON), Reply(status=500, headers=SOON))
    with caplog.at_level(logging.DEBUG):
        backend = make_backend(config)
        results = backend.complete_prompts(["hello", "fail"])
        backend.close()
    assert results[0].text == "echo: hello" and not results[1].ok
    assert server.count_for("fail") == 2  # LLMConfig.max_retries reached the client
    assert server.headers[0]["authorization"] == f"Bearer {SECRET}"
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert any(p.name == "llm_cache.sqlite" for p in files)
    cache_bytes = b"".join(p.read_bytes() for p in files)
    assert b"echo: hello" in cache_bytes  # the answer is there ...
    assert SECRET.encode() not in cache_bytes  # ... the key is not
    for text in (repr(backend), config.to_yaml(), caplog.text, str(results[1].error)):
        assert SECRET not in text
    assert KEY_ENV in config.to_yaml()


def test_progress_bar_shows_for_slow_batches_and_can_be_turned_off(server, capsys):
    server.delay = 0.05
    http_backend(server, progress=True, progress_delay=0.0).complete_prompts(["a", "b"])
    shown = capsys.readouterr().err
    assert "openai stub-model" in shown and "/2 [" in shown
    http_backend(server, progress=False).complete_prompts(["c", "d"])
    assert capsys.readouterr().err == ""


def test_missing_key_variable_is_named_in_the_error(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(LLMError, match=KEY_ENV):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env=KEY_ENV)


def test_config_from_yaml_builds_a_working_backend(server, tmp_path):
    path = tmp_path / "llm.yaml"
    path.write_text(f"backend: openai\nmodel: stub-model\nbase_url: {server.url}\n"
                    f"api_key_env: {KEY_ENV}\nmax_concurrency: 2\nmax_tokens: 5\n")
    config = LLMConfig.load(path, ["--temperature", "0.5", "--progress", "false"])
    backend = make_backend(config)
    assert isinstance(backend, OpenAIBackend) and backend.max_concurrency == 2
    assert backend.complete_prompts(["yaml"])[0].text == "echo: yaml"
    assert (server.bodies[0]["max_tokens"], server.bodies[0]["temperature"]) == (5, 0.5)


def test_old_backoff_settings_still_load_but_warn_that_they_do_nothing(server, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LLMConfig(backend="openai", model="m")  # not set: no warning
    path = tmp_path / "old.yaml"
    path.write_text("backend: openai\nmodel: stub-model\nretry_base_delay: 0.5\n"
                    "retry_max_delay: 30.0\n")
    with pytest.warns(FutureWarning, match="retry_base_delay, retry_max_delay: deprecated"):
        config = LLMConfig.load(path)
    assert config.retry_max_delay == 30.0
    with pytest.warns(FutureWarning, match="retry_max_delay: deprecated and ignored"):
        OpenAIBackend("m", base_url=server.url, api_key_env=KEY_ENV, retry_max_delay=1.0)


def test_unknown_backend_kind_suggests_the_closest():
    # Refused when the config is built, not later at the first request.
    with pytest.raises(ValueError, match=r'backend: unknown .opanai.\. Did you mean "openai"'):
        LLMConfig(backend="opanai")


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="max_concurrency"):
        LLMConfig.load(overrides=["--max_concurrency", "0"])
    with pytest.raises(ValueError, match="role"):
        ChatRequest(({"role": "robot", "content": "hi"},))


# ----------------------------------------------------------------------- Hugging Face


PROMPTS = ["Is the EU good", "Hi", "Should taxes on fuel be raised for everyone?", "x", "Why not"]


def test_hf_batched_generation_equals_unbatched(tiny_lm):
    model, tokenizer = tiny_lm
    # Without a chat template the random model echoes prompt-specific tokens ("????",
    # "xxxx"); through the template every prompt ends in the same newline, which it repeats.
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    batched = HFBackend("tiny", loaded=(model, plain), batch_size=4, max_tokens=6,
                        progress=False)
    results = batched.complete_prompts(PROMPTS)
    assert len(results) == len(PROMPTS) and all(r.ok for r in results)
    texts = [r.text for r in results]
    expected = [generate_text(model, plain, p, max_new_tokens=6, chat=False) for p in PROMPTS]
    assert texts == expected
    assert len(set(texts)) == len(PROMPTS) and all(texts)
    one_by_one = HFBackend("tiny", loaded=(model, plain), batch_size=1, max_tokens=6,
                           progress=False)
    assert [r.text for r in one_by_one.complete_prompts(PROMPTS)] == texts
    assert [r.text for r in batched.complete_prompts(PROMPTS)] == texts  # deterministic


def test_hf_uses_the_chat_template(tiny_lm):
    model, tokenizer = tiny_lm
    backend = HFBackend("tiny", loaded=tiny_lm, batch_size=3, max_tokens=5, progress=False)
    results = backend.complete_prompts(PROMPTS)
    expected = [generate_text(model, tokenizer, p, max_new_tokens=5) for p in PROMPTS]
    assert [r.text for r in results] == expected
    # Five newlines and no end-of-turn token: the answer ran into max_tokens.
    assert [r.finish_reason for r in results] == ["length"] * len(PROMPTS)


def test_hf_sampling_is_seeded_per_request(tiny_lm):
    backend = HFBackend("tiny", loaded=tiny_lm, max_tokens=8, temperature=1.0, progress=False)
    a, b, c = backend.complete([ChatRequest.from_prompt("x", seed=s) for s in (5, 5, 6)])
    again = backend.complete_one(ChatRequest.from_prompt("x", seed=5))
    assert a.text == b.text == again.text
    assert a.text != c.text


def test_hf_through_make_backend_with_cache(tmp_path):
    config = LLMConfig(backend="hf", model="tiny", device="cpu", max_tokens=4,
                       cache_dir=str(tmp_path), progress=False)
    backend = make_backend(config)
    assert isinstance(backend, HFBackend)
    first = backend.complete_prompts(PROMPTS[:3])
    second = make_backend(config).complete_prompts(PROMPTS[:3])
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached for r in second) and not any(r.cached for r in first)
    assert backend.stats.requests == 3 and backend.stats.generated == 3
