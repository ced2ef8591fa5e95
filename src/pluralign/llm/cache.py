"""On-disk cache of LLM answers, keyed by a hash of (model, messages, parameters).

SQLite rather than JSONL: concurrent writers from a thread pool (and from
other processes sharing the folder) are safe without hand-rolled locking of
files, and a lookup does not read the whole history.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

CACHE_FILE = "llm_cache.sqlite"


def request_key(identity: dict[str, Any], request: dict[str, Any]) -> str:
    """Stable hash of what determines an answer. ``identity`` names the model (never a key)."""
    payload = json.dumps({"model": identity, "request": request}, sort_keys=True,
                         ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """Successful answers only: a failure is never cached, so a re-run tries it again."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder).expanduser() / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the pool's threads, serialised by a lock.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                "finish_reason TEXT, request TEXT NOT NULL, created REAL NOT NULL)"
            )

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """{key: (text, finish_reason)} for the keys that are cached."""
        found: dict[str, tuple[str, str | None]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # stay under SQLite's variable limit
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, text, finish_reason FROM answers WHERE key IN ({marks})", chunk
                )
                found.update({key: (text, reason) for key, text, reason in rows})
        return found

    def put(self, key: str, text: str, finish_reason: str | None, request: dict[str, Any]) -> None:
        record = json.dumps(request, ensure_ascii=False, sort_keys=True)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                (key, text, finish_reason, record, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
