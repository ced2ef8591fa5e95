"""Dynamic batching: one worker thread owns the model and answers queued requests together.

Requests wait in a bounded queue. The worker takes the first, then whatever else
arrives within ``max_wait_s`` up to ``max_rows`` answers, and runs them as one batch
(:meth:`pluralign.serve.engine.Engine.run`); requests that arrive while a batch runs
make up the next one. Each request awaits a :class:`concurrent.futures.Future`.
A failing batch fails its own requests only: the worker goes on with the next.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """Too many requests are waiting for the model (HTTP 503)."""


class ModelError(RuntimeError):
    """The model failed on a batch (HTTP 500); the server goes on serving."""


@dataclass
class Job:
    """One request waiting for the model: what to answer, where the answer goes."""

    spec: Any  #: an AnswerSpec; ``spec.n`` answers count towards a batch's rows
    listener: Any = None  #: a StreamListener for streaming requests
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker did: batches run, requests answered, the largest batch."""

    batches: int = 0
    requests: int = 0
    failed_batches: int = 0
    largest: int = 0


_STOP = object()


class BatchWorker:
    """Feeds queued jobs to ``run`` in batches, on one thread of its own."""

    def __init__(self, run: Callable[[Sequence[Any], Sequence[Any]], Sequence[Any]], *,
                 max_rows: int = 16, max_wait_s: float = 0.01, max_queue: int = 256) -> None:
        self._run = run
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._carry: Job | None = None  # taken from the queue but too big for the last batch
        self._thread: threading.Thread | None = None
        self.stats = BatchStats()

    def start(self) -> BatchWorker:
        self._thread = threading.Thread(target=self._loop, name="pluralign-batcher",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in progress, fail the waiting jobs, end the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, job: Job) -> Future:
        if self._thread is None:
            raise RuntimeError("the batch worker is not running")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"the server is busy ({self._queue.maxsize} requests "
                                 "waiting); retry later") from None
        return job.future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _loop(self) -> None:
        while True:
            first = self._carry if self._carry is not None else self._queue.get()
            self._carry = None
            if first is _STOP:
                break
            batch, stopping = self._collect(first)
            self._execute(batch)
            if stopping:
                break
        self._fail_waiting()

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` and the jobs that arrive within max_wait_s, up to max_rows answers."""
        batch, rows = [first], first.spec.n
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_rows:
            try:
                job = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            if rows + job.spec.n > self.max_rows:
                self._carry = job
                break
            batch.append(job)
            rows += job.spec.n
        return batch, False

    def _execute(self, batch: list[Job]) -> None:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        try:
            results = self._run([j.spec for j in batch], [j.listener for j in batch])
        except Exception as exc:
            self.stats.failed_batches += 1
            logger.exception("the model failed on a batch of %d requests", len(batch))
            error = ModelError(f"{type(exc).__name__}: {exc}")
            for job in batch:
                job.future.set_exception(error)
            return
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)

    def _fail_waiting(self) -> None:
        pending = [self._carry] if self._carry is not None else []
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for job in pending:
            if job is not _STOP:
                job.future.set_exception(ModelError("the server is shutting down"))
