"""A small, real OpenAI-compatible HTTP server for tests (127.0.0.1, free port).

It answers ``POST /v1/chat/completions`` in the OpenAI response format with
``echo: <last user message>``, unless the test scripted replies for that
message: an HTTP error status, a malformed body or a slow answer. It records
every request and the most requests it ever had in flight at once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: ``status`` != 200 sends an OpenAI-style error body."""

    status: int = 200
    text: str | None = None  # None: the echo answer
    delay: float = 0.0
    malformed: bool = False
    null_content: bool = False  # a well-formed reply whose message content is null
    headers: dict[str, str] = field(default_factory=dict)


class StubServer:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # added to every request, to make requests overlap
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # names lower-cased
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.bodies)

    def count_for(self, prompt: str) -> int:
        with self._lock:
            return sum(last_user(b) == prompt for b in self.bodies)

    def script(self, prompt: str, *replies: Reply) -> None:
        """Answer the next requests whose last user message is ``prompt`` with ``replies``."""
        with self._lock:
            self._script[prompt].extend(replies)

    def start(self) -> StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.bodies.append(body)
            self.headers.append(headers)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            queue = self._script.get(last_user(body))
            return queue.popleft() if queue else Reply()

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = server._next_reply(body, headers)
                try:
                    time.sleep(server.delay + reply.delay)
                    self._answer(body, reply)
                finally:
                    server._done()

            def _answer(self, body: dict[str, Any], reply: Reply) -> None:
                if reply.malformed:
                    self._send(200, None, raw=b'{"id": "x", "choices": [{"mess', **reply.headers)
                elif reply.status != 200:
                    error = {"message": f"scripted {reply.status}", "type": "stub_error",
                             "code": str(reply.status)}
                    self._send(reply.status, {"error": error}, **reply.headers)
                else:
                    text = reply.text if reply.text is not None else f"echo: {last_user(body)}"
                    if reply.null_content:
                        text = None
                    self._send(200, completion(body, text), **reply.headers)

            def _send(self, status: int, payload: Any, raw: bytes | None = None,
                      **headers: str) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                # The client may have given up (the timeout test): nothing left to answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        return Handler


def last_user(body: dict[str, Any]) -> str:
    users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def completion(body: dict[str, Any], text: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
