"""The server's parts without a model or a socket: belief sampling, stream deltas, the
batch worker, request checks, the config."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from pluralign.data.records import Belief
from pluralign.eval.generate import split_description
from pluralign.serve import ServeConfig, parse_belief_set
from pluralign.serve.batching import BatchWorker, Job, ModelError, QueueFullError
from pluralign.serve.engine import belief_sampling_probs
from pluralign.serve.protocol import ChatCompletionRequest
from pluralign.serve.streaming import DeltaTracker, visible_response

# ----------------------------------------------------------------- belief sampling


def test_belief_sampling_probs_apply_temperature_and_top_k():
    logits = torch.tensor([2.0, 1.0, 0.0])
    assert torch.allclose(belief_sampling_probs(logits), torch.softmax(logits, -1))
    assert torch.allclose(belief_sampling_probs(logits, 0.5), torch.softmax(logits * 2, -1))
    top2 = belief_sampling_probs(logits, 1.0, top_k=2)
    assert top2[2] == 0 and torch.allclose(top2[:2], torch.softmax(logits[:2], -1))
    assert belief_sampling_probs(logits, 0.0).tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(belief_sampling_probs(logits, 1.0, top_k=5), torch.softmax(logits, -1))


# ------------------------------------------------------------------ stream deltas


def _stream(pieces: list[str], *, has_description: bool = True) -> tuple[list[str], str]:
    tracker = DeltaTracker(has_description=has_description)
    text, deltas = "", []
    for piece in pieces:
        text += piece
        deltas.append(tracker.update(text))
    final = split_description(text, 1, has_description=has_description).response
    deltas.append(tracker.finish(final))
    return deltas, final


def test_stream_holds_the_description_back_and_adds_up_to_the_response():
    deltas, final = _stream([" <Sup", "port", "> Cars", " are", " loud", ". ", "\n"])
    assert final == "Cars are loud."
    assert deltas[:2] == ["", ""]  # still inside <description>
    assert "".join(deltas) == final
    assert deltas[2] == "Cars"


def test_stream_without_a_description_sends_the_text_from_the_start():
    deltas, final = _stream(["Hello", " world", " "], has_description=False)
    assert deltas == ["Hello", " world", "", ""] and final == "Hello world"
    deltas, final = _stream(["No", " marker"])  # a format with descriptions, none written
    assert "".join(deltas) == final == "No marker"


def test_stream_never_closed_description_is_sent_whole_at_the_end():
    deltas, final = _stream(["<Sup", "port and on"])
    assert deltas == ["", "", "<Support and on"] and final == "<Support and on"


def test_stream_holds_a_cut_character():
    tracker = DeltaTracker(has_description=False)
    assert tracker.update("caf\ufffd") == ""
    assert tracker.update("café") == "café"
    assert visible_response("  <a> b ") == "b"


# ------------------------------------------------------------------ batch worker


def _spec(n: int = 1) -> object:
    return type("Spec", (), {"n": n})()


def test_worker_batches_waiting_jobs_and_carries_one_that_does_not_fit():
    sizes, release = [], threading.Event()

    def run(specs, listeners):
        release.wait(5)  # the first batch blocks while the others queue up
        sizes.append([s.n for s in specs])
        return [s.n for s in specs]

    worker = BatchWorker(run, max_rows=4, max_wait_s=0.05).start()
    try:
        futures = [worker.submit(Job(_spec(n))) for n in (1, 2, 1, 3, 1)]
        time.sleep(0.2)
        release.set()
        assert [f.result(5) for f in futures] == [1, 2, 1, 3, 1]
    finally:
        worker.stop()
    # 1+2+1 fill the first batch (4 rows); 3 is carried into the next, with 1.
    assert sizes == [[1, 2, 1], [3, 1]]
    assert (worker.stats.batches, worker.stats.requests, worker.stats.largest) == (2, 5, 3)


def test_worker_fails_only_the_failing_batch():
    calls = []

    def run(specs, listeners):
        calls.append(len(specs))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return ["ok"] * len(specs)

    worker = BatchWorker(run, max_rows=4, max_wait_s=0.0).start()
    try:
        with pytest.raises(ModelError, match="RuntimeError: boom"):
            worker.submit(Job(_spec())).result(5)
        assert worker.submit(Job(_spec())).result(5) == "ok"
    finally:
        worker.stop()
    assert worker.stats.failed_batches == 1


def test_worker_refuses_jobs_beyond_its_queue():
    release = threading.Event()
    worker = BatchWorker(lambda specs, listeners: release.wait(5) and [0] * len(specs),
                         max_rows=1, max_wait_s=0.0, max_queue=1).start()
    try:
        first = worker.submit(Job(_spec()))
        time.sleep(0.1)  # the worker took the first; the queue is empty again
        worker.submit(Job(_spec()))
        with pytest.raises(QueueFullError, match="busy"):
            worker.submit(Job(_spec()))
        release.set()
        assert first.result(5) == 0
    finally:
        release.set()
        worker.stop()


# ------------------------------------------------------------------ requests


def _request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Q?"}],
                                 **fields)


def test_request_extra_fields_are_checked():
    assert _request(user="u", stop=None, logprobs=False).unsupported() is None
    assert "not supported" in _request(stop=["\n"]).unsupported()
    assert _request(belief_temprature=0.5).unsupported().startswith(
        'belief_temprature: unknown field. Did you mean "belief_temperature"')


def test_request_question_is_the_last_user_message():
    request = ChatCompletionRequest(model="m", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Is the EU "},
                                     {"type": "text", "text": "good?"}]}])
    assert request.question() == "Is the EU good?"
    with pytest.raises(ValueError, match="last message must be the user's"):
        ChatCompletionRequest(model="m", messages=[
            {"role": "assistant", "content": "Hi"}]).question()


# ------------------------------------------------------------------ config


def test_belief_sets_parse_from_text_and_lists():
    expected = (Belief(1, "Oppose"), Belief(2, "Support"))
    assert parse_belief_set("1:Oppose, 2:Support") == expected
    assert parse_belief_set([{"class_id": 1, "description": "Oppose"},
                             {"class_id": 2, "description": "Support"}]) == expected
    with pytest.raises(ValueError, match="at least two"):
        parse_belief_set("1:Oppose")
    with pytest.raises(ValueError, match="unique"):
        parse_belief_set("1:a,1:b")
    with pytest.raises(ValueError, match="not CLASS:DESCRIPTION"):
        parse_belief_set("one:a,2:b")


def test_serve_config_checks_and_names(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="default_max_tokens: 600 is above max_tokens_limit"):
        ServeConfig(default_max_tokens=600)
    with pytest.raises(ValueError, match="beliefs: a belief set needs at least two"):
        ServeConfig(beliefs="1:Oppose")
    (tmp_path / "gdpo" / "final").mkdir(parents=True)
    assert ServeConfig(model=str(tmp_path / "gdpo" / "final")).model_name() == "gdpo"
    assert ServeConfig(model="tiny", served_model_name="x").model_name() == "x"
    monkeypatch.setenv("PLURALIGN_API_KEY", "from-env")
    assert ServeConfig().resolved_api_key() == "from-env"
    config = ServeConfig(api_key="on-the-line")
    assert config.resolved_api_key() == "on-the-line"
    assert "on-the-line" not in repr(config)
    assert ServeConfig(api_key_env="").resolved_api_key() is None


# ------------------------------------------------------------------ command line


def test_serve_command_checks_its_options_before_loading_anything():
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    runner = CliRunner()
    assert "serve" in runner.invoke(app, ["--help"]).output
    result = runner.invoke(app, ["serve", "tiny", "--port", "70000"])
    assert result.exit_code == 2
    assert "port: must be in 0..65535, got 70000" in result.output
    result = runner.invoke(app, ["serve", "--fields"])
    assert result.exit_code == 0 and "api_key_env" in result.output
