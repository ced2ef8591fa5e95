"""A scripted OpenAI-compatible server for the GPA tests.

Like ``data_llm_server.ScriptedServer``, but the responder sees the whole
chat (system and user messages), because GPA asks the same user prompt with
different system prompts (rubric-following vs rubric-violating answers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openai_stub_server import Reply, StubServer


class ChatScriptedServer(StubServer):
    def __init__(self, responder: Callable[[str, str], Reply | str]) -> None:
        super().__init__()
        self.responder = responder  # (system text or "", last user text) -> reply

    def _next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.bodies.append(body)
            self.headers.append(headers)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        messages = body.get("messages", [])
        system = " ".join(m["content"] for m in messages if m.get("role") == "system")
        user = [m["content"] for m in messages if m.get("role") == "user"][-1]
        reply = self.responder(system, user)
        return reply if isinstance(reply, Reply) else Reply(text=reply)


def gpa_responder(system: str, user: str) -> Reply | str:
    """Answers for every GPA prompt template; the tests check how each is used."""
    if "Does the user's message react" in user:
        return "feedback_negative" if "meh" in user else "none"
    if "Which property of the answer" in user:
        return "tone: more"
    if "Rewrite the guideline as one short instruction" in user:
        return "Keep it short, users from this group like brevity." if "short" in user else "ok"
    if "Which response would a user" in user:
        return "A"
    if "does this response follow the guideline" in user:
        return "yes"
    if user == "FAIL ME":
        return Reply(status=400)
    if "do the opposite" in system or "Answer in plain prose" in system \
            or "long, complete" in system:
        return "A long rambling answer without structure that goes on and on."
    if "Follow every one of these guidelines" in system or "prefer answers" in system:
        return "- Short.\n- Clear."
    if "You are talking to someone" in system:
        return "Persona answer."
    return "Zero-shot answer."


def start(responder: Callable[[str, str], Reply | str] = gpa_responder) -> ChatScriptedServer:
    return ChatScriptedServer(responder).start()
