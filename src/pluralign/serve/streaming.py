"""Streaming the response text of rows of a batched ``generate`` call, token by token.

transformers' own streamers serve one sequence (``TextStreamer`` refuses a batch);
the server generates many answers in one call, so :class:`RowStreamer` takes each
step's tokens for the whole batch and hands every watched row its own tokens.

Only the response is streamed: a row's text is ``<description>response`` and the
description is reported in the belief field, so :class:`DeltaTracker` holds the
text back until the description is closed, and sends what
:func:`pluralign.eval.generate.split_description` will read as the response at the
end, so that the deltas add up to exactly the final ``content``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from transformers.generation import BaseStreamer

logger = logging.getLogger(__name__)


def visible_response(text: str, *, has_description: bool = True) -> str:
    """The part of a partial continuation that is already sure to be the response's start.

    It is a prefix of what :func:`~pluralign.eval.generate.split_description` returns for
    any longer continuation, so sending it early never has to be taken back.
    """
    if not has_description:
        return text.strip()
    stripped = text.lstrip()
    if not stripped.startswith("<"):
        return stripped.strip()  # no description: the whole text is the response
    close = stripped.find(">")
    # Still inside <description>: nothing is response yet (and if it never closes, the
    # final parse reads the whole text as the response, sent at finish()).
    return "" if close < 0 else stripped[close + 1:].strip()


class DeltaTracker:
    """What of one answer's response has been sent; gives the next piece to send."""

    def __init__(self, *, has_description: bool = True) -> None:
        self.has_description = has_description
        self.sent = ""

    def update(self, text: str) -> str:
        """The new response text in ``text`` (the continuation so far), or ''."""
        # A character cut between tokens decodes to U+FFFD until its last byte arrives.
        if text.endswith("\ufffd"):
            return ""
        return self._advance(visible_response(text, has_description=self.has_description))

    def finish(self, response: str) -> str:
        """The rest of the final ``response`` (the parsed answer's text)."""
        delta = self._advance(response)
        if self.sent != response:
            logger.warning("a streamed answer's text diverged from its final text")
        return delta

    def _advance(self, visible: str) -> str:
        if not visible.startswith(self.sent):
            return ""
        delta, self.sent = visible[len(self.sent):], visible
        return delta


class RowStreamer(BaseStreamer):
    """A ``generate`` streamer for a batch: each watched row gets its tokens so far.

    ``watched`` maps a row of the batch to a callback taking that row's generated token
    ids (up to, not including, the first stop token, and at most ``limits[row]``).
    """

    def __init__(self, watched: Mapping[int, Callable[[list[int]], None]],
                 limits: Sequence[int], stop_ids: set[int]) -> None:
        self.watched = dict(watched)
        self.limits = list(limits)
        self.stop_ids = stop_ids
        self.tokens: dict[int, list[int]] = {row: [] for row in self.watched}
        self.done: set[int] = set()
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate first puts the prompt ids
            self._prompt_seen = True
            return
        step = value.reshape(len(self.limits), -1)[:, -1].tolist()
        for row, callback in self.watched.items():
            if row in self.done:
                continue
            token = step[row]
            if token in self.stop_ids:
                self.done.add(row)
                continue
            self.tokens[row].append(token)
            if len(self.tokens[row]) >= self.limits[row]:
                self.done.add(row)
            callback(self.tokens[row])

    def end(self) -> None:
        """Nothing to flush: the final text of every row is sent from the parsed answer."""
