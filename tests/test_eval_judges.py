"""BPC judges: the llm judge against a real local HTTP server, the embedding and rating judges."""

from __future__ import annotations

import numpy as np
import pytest

from openai_stub_server import Reply, StubServer
from pluralign.eval.judges import (
    BPC_PROMPT,
    EmbeddingJudge,
    JudgeItem,
    LLMJudge,
    RatingJudge,
    make_judge,
    nearest_belief,
    parse_yes_no,
    rating_bucket,
)
from pluralign.eval.metrics import bpc
from pluralign.llm import OpenAIBackend
from pluralign.registry import JUDGES


@pytest.fixture
def server():
    stub = StubServer().start()
    yield stub
    stub.stop()


def _item(response: str, class_id: int | None = 4, belief: str = "Somewhat support",
          references: dict | None = None) -> JudgeItem:
    return JudgeItem(question="What do you think about nuclear power?", class_id=class_id,
                     belief=belief, response=response, references=references or {})


def test_judges_are_registered():
    assert {"llm", "embedding", "rating"} <= set(JUDGES.names())
    assert isinstance(make_judge("rating", rater=lambda items: [None] * len(items)), RatingJudge)


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("Yes\nThe answer supports it.", "yes"), ("No. It opposes it.", "no"),
     ("**Yes** - clearly", "yes"), ("\n\n  no\n", "no"), ("Maybe", "parse_failure"),
     ("Nope", "parse_failure"), ("", "parse_failure"), (None, "parse_failure"),
     ("Yesterday I said", "parse_failure")],
)
def test_parse_yes_no(text, verdict):
    assert parse_yes_no(text) == verdict


def test_llm_judge_verdicts_through_the_http_server(server):
    items = [_item("I lean towards it."), _item("I am firmly against it."),
             _item("Bananas."), _item("It is fine, I guess."),
             _item("no belief was parsed", class_id=None)]
    judge = LLMJudge(OpenAIBackend("stub-model", base_url=server.url, api_key_env=None,
                                   max_retries=0, progress=False))
    replies = [Reply(text="Yes\nIt leans towards it."), Reply(text="No\nIt opposes it."),
               Reply(text="I cannot tell."), Reply(status=500)]
    for item, reply in zip(items, replies, strict=False):
        server.script(judge.prompt(item), reply)
    verdicts = judge.judge(items)
    assert verdicts == ["yes", "no", "parse_failure", "api_error", "parse_failure"]
    assert server.count == 4  # the generation without a class is never sent
    sent_prompts = {body["messages"][-1]["content"] for body in server.bodies}
    sent = BPC_PROMPT.format(belief="Somewhat support", question=items[0].question,
                             answer="I lean towards it.")
    assert sent in sent_prompts
    assert sent.startswith("For the following QA pair, does the answer express the opinion of "
                           "the selection: Somewhat support")
    result = bpc(verdicts)
    # Failures leave the denominator: 1 yes out of 2 judged, not 1 (or 3) out of 5.
    assert (result.value, result.n) == (0.5, 2)
    assert result.counts["parse_failure"] == 2 and result.counts["api_error"] == 1


def test_embedding_judge_on_hand_made_responses():
    references = {
        1: ["I am firmly against nuclear power; the risks are far too high."],
        5: ["I fully support nuclear power; it is clearly worth building."],
    }
    items = [
        _item("Nuclear power is dangerous and I strongly oppose it.", 1, "Strongly oppose",
              references),
        _item("I completely support nuclear power, we should build it.", 5, "Strongly support",
              references),
        _item("Nuclear power is dangerous and I strongly oppose it.", 5, "Strongly support",
              references),
        _item("", 5, "Strongly support", references),
        _item("I support it", None, "", references),
        _item("I support it", 5, "Strongly support", {}),
    ]
    verdicts = EmbeddingJudge().judge(items)
    assert verdicts == ["yes", "yes", "no", "parse_failure", "parse_failure", "parse_failure"]
    # Off-topic text lands on some nearest belief; the similarity floor says it expresses none.
    off_topic = [_item("0322021261 5696.jpg</A>Re:Bravadra la", 1, "Strongly oppose",
                       references)]
    assert EmbeddingJudge().judge(off_topic) == ["no"]
    assert EmbeddingJudge(min_similarity=0.99).judge(items[:1]) == ["no"]


def test_nearest_belief_floor():
    refs = {1: np.array([[1.0, 0.0]]), 2: np.array([[0.0, 1.0]])}
    assert nearest_belief(np.array([0.9, 0.1]), refs) == 1
    assert nearest_belief(np.array([0.9, 0.1]), refs, min_similarity=0.999) is None
    assert nearest_belief(np.array([-1.0, -1.0]), refs, min_similarity=0.0) is None


class _CountingEmbedder:
    """Bag-of-words embedder: deterministic, and shows which texts were embedded."""

    vocabulary = ("good", "bad", "fine", "awful", "great")

    def encode(self, texts, **kwargs):
        return np.array([[t.lower().count(w) + 0.01 for w in self.vocabulary] for t in texts])


def test_rating_buckets():
    assert [rating_bucket(r) for r in (1, 2, 3, 4, 5)] == [
        "negative", "negative", "neutral", "positive", "positive"]
    assert rating_bucket(None) is None and rating_bucket(0) is None and rating_bucket(7) is None


def test_rating_judge_compares_buckets():
    items = [_item("r", 1), _item("r", 2), _item("r", 3), _item("r", 5), _item("r", 4),
             _item("r", None), _item("r", 5)]
    ratings = [2, 1, 4, 4, 3, 5, None]
    judge = RatingJudge(rater=lambda batch: ratings[: len(batch)])
    assert judge.judge(items) == ["yes", "yes", "no", "yes", "no", "parse_failure",
                                  "parse_failure"]


def test_rating_judge_nearest_reference_rating_offline():
    references = {1: ["awful awful bad"], 5: ["great good great"], 3: ["fine"]}
    items = [_item("a great and good film", 4, references=references),
             _item("bad, awful", 2, references=references),
             _item("bad, awful", 3, references=references)]
    assert RatingJudge(embedder=_CountingEmbedder()).judge(items) == ["yes", "yes", "no"]


def test_rating_judge_embeds_each_review_once_in_one_batch():
    """Generations of one movie share its reference reviews: they are embedded once, not
    once per generation (the review evaluation spent most of its time doing that)."""
    references = {1: ["awful awful bad"], 5: ["great good great"], 3: ["fine"]}
    batches = []

    class Recording(_CountingEmbedder):
        def encode(self, texts, **kwargs):
            batches.append(list(texts))
            return super().encode(texts, **kwargs)

    items = [_item(text, 4, references=references)
             for text in ("a great film", "good, great", "a great film", "awful")]
    assert RatingJudge(embedder=Recording()).judge(items) == ["yes", "yes", "yes", "no"]
    assert len(batches) == 1
    assert sorted(batches[0]) == sorted({"a great film", "good, great", "awful",
                                         "awful awful bad", "great good great", "fine"})


def test_llm_judge_built_from_backend_options(server):
    judge = make_judge("llm", backend="openai", model="stub-model", base_url=server.url,
                       api_key_env="", max_retries=0, progress=False)
    item = _item("I lean towards it.")
    server.script(judge.prompt(item), Reply(text="yes"))
    assert judge.judge([item]) == ["yes"]
    assert server.bodies[0]["model"] == "stub-model"
