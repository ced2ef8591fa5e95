"""Benchmark runs as a graph of stages on a pool of worker processes.

A task is one data set trained with several methods, seed by seed: its data is
built once, then each method trains from the bundled model or from another
method's weights, and once every method of a seed is trained the seed is
evaluated. Each stage is submitted the moment what it starts from exists, so
on a small CPU two one-thread workers stay busy to the end (whole seeds as
jobs left one worker idle for the last seed). ``opinion_repro.py`` and
``paper_tables.py`` run their tasks through it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _opinions import StageResult, train_stage

from pluralign.train.recipe import Recipe

#: What a method with start "base" trains from.
BASE_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Task:
    """One data set and what is trained and evaluated on it. ``build`` and ``evaluate``
    run in a worker, so they must pickle (module-level functions or partials of them)."""

    name: str  #: folder under the run's output folder, and the key of its results
    #: () -> (data files by split name, seconds the build took)
    build: Callable[[], tuple[dict[str, Path], float]]
    #: method -> "base" (the bundled model) or the method whose final weights it starts from
    methods: dict[str, str]
    #: (files, finals by method, seed, seed folder) -> the seed's evaluation results
    evaluate: Callable[..., dict[str, Any]]
    #: TrainConfig fields of every stage of this task (e.g. ``too_long``)
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for method, start in self.methods.items():
            if start != "base" and start not in self.methods:
                raise ValueError(f"{self.name}: {method} starts from {start!r}, which is "
                                 "not one of the task's methods")


def seed_folder(out: Path, task: str, seed: int) -> Path:
    """Where one seed of one task trains and evaluates."""
    return out / task / f"seed{seed}"


def worker_threads(workers: int) -> int:
    """Threads of each of ``workers`` parallel jobs: an equal share of the cores."""
    return max(1, (os.cpu_count() or 1) // workers)


class SerialPool:
    """A pool of one that runs each job as it is submitted, in this process (a GPU, or a
    one-core machine): the same graph, without the cost of a worker process."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:  # re-raised by result(), as a process pool does
            future.set_exception(error)
        return future


class StageGraph:
    """Every task's data, its seeds' stages and evaluations, on ``pool``. After
    :meth:`run`: ``built[task]`` = (files, build seconds), ``done[(task, seed)]`` = the
    evaluation's results plus ``seconds`` and ``stages`` (each method's StageResult)."""

    def __init__(self, pool: Any, tasks: Sequence[Task], seeds: Sequence[int], recipe: Recipe,
                 out: Path) -> None:
        self.pool, self.recipe, self.out = pool, recipe, out
        self.tasks = {task.name: task for task in tasks}
        self.seeds = list(seeds)
        self.pending: dict[Future, tuple[str, str, int]] = {}
        self.built: dict[str, tuple[dict[str, Path], float]] = {}
        self.stages: dict[tuple[str, int], dict[str, StageResult]] = {}
        self.done: dict[tuple[str, int], dict[str, Any]] = {}

    def _submit(self, kind: str, task: str, seed: int, fn: Any, *fn_args: Any) -> None:
        self.pending[self.pool.submit(fn, *fn_args)] = (kind, task, seed)

    def _train_from(self, task: Task, seed: int, start: str, start_weights: str) -> None:
        """Submit every method of ``task`` that starts from ``start``."""
        for method, start_from in task.methods.items():
            if start_from == start:
                self._submit(method, task.name, seed, partial(train_stage, **task.overrides),
                             self.built[task.name][0], self.recipe, seed,
                             seed_folder(self.out, task.name, seed), method, start_weights)

    def _finished(self, kind: str, name: str, seed: int, result: Any) -> None:
        task = self.tasks[name]
        if kind == "data":
            self.built[name] = result
            for s in self.seeds:
                self._train_from(task, s, "base", BASE_MODEL)
            return
        stages = self.stages.setdefault((name, seed), {})
        if kind == "evaluate":
            seconds = {m: stage.seconds for m, stage in stages.items()}
            self.done[(name, seed)] = {**result, "seconds": seconds, "stages": stages}
            return
        stages[kind] = result
        self._train_from(task, seed, kind, str(result.final))
        if len(stages) == len(task.methods):
            finals = {m: stages[m].final for m in task.methods}
            self._submit("evaluate", name, seed, task.evaluate, self.built[name][0], finals,
                         seed, seed_folder(self.out, name, seed))

    def run(self) -> StageGraph:
        for task in self.tasks.values():
            self._submit("data", task.name, -1, task.build)
        while self.pending:
            finished, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            for future in finished:
                self._finished(*self.pending.pop(future), future.result())
        return self


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_tasks(tasks: Sequence[Task], seeds: Sequence[int], recipe: Recipe, out: Path,
              workers: int) -> StageGraph:
    """Run ``tasks`` for every seed, ``workers`` stages at a time, each worker on its share
    of the cores (one worker: in this process)."""
    if workers == 1:
        return StageGraph(SerialPool(), tasks, seeds, recipe, out).run()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_set_threads,
                             initargs=(worker_threads(workers),)) as pool:
        return StageGraph(pool, tasks, seeds, recipe, out).run()


def default_workers() -> int:
    """2 stages at a time on a CPU of 2 or more cores; 1 on a GPU (one device) or one core."""
    import torch

    cores = os.cpu_count() or 1
    return 1 if torch.cuda.is_available() or cores < 2 else 2
