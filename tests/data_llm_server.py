"""A scripted OpenAI-compatible server for the data-builder tests.

It is :class:`openai_stub_server.StubServer` with one addition: a
``responder`` function that writes the reply from the request body, so a
test can answer each prompt with controlled text (or an error) instead of
scripting every exact message in advance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from openai_stub_server import Reply, StubServer, last_user


class ScriptedServer(StubServer):
    def __init__(self, responder: Callable[[str], Reply | str]) -> None:
        super().__init__()
        self.responder = responder

    def _next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.bodies.append(body)
            self.headers.append(headers)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        reply = self.responder(last_user(body))
        return reply if isinstance(reply, Reply) else Reply(text=reply)


def stub_backend(server: StubServer):
    """An OpenAI backend pointed at ``server``: no retries, no key, no progress bar."""
    from pluralign.llm import LLMConfig, make_backend

    return make_backend(LLMConfig(backend="openai", model="stub", base_url=server.url,
                                  api_key_env="", max_retries=0, timeout=10.0, progress=False))


@contextlib.contextmanager
def scripted_backend(
    responder: Callable[[str], Reply | str],
) -> Iterator[tuple[Any, ScriptedServer]]:
    """``(backend, server)`` for the duration of a ``with`` block; the server stops after it."""
    server = ScriptedServer(responder).start()
    try:
        yield stub_backend(server), server
    finally:
        server.stop()
