"""All GPA stages in order, each writing its own output into ``config.work_dir``.

``run_pipeline`` is what ``pluralign gpa run`` calls. Stages can also be run
alone (``STAGES[name](config, backend)``); each reads the files the stages
before it wrote, so a stage is re-run or inspected without the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pluralign.config import save_config
from pluralign.gpa.attributes import run_attributes
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.context import run_context
from pluralign.gpa.evaluate import run_evaluate
from pluralign.gpa.finetune import run_finetune
from pluralign.gpa.ingest import run_ingest
from pluralign.gpa.io import stage_path, write_json
from pluralign.gpa.rubrics import run_rubrics
from pluralign.gpa.rules import run_rules
from pluralign.gpa.signals import run_classify
from pluralign.llm import LLMBackend, make_backend

StageFn = Callable[[GPAConfig, LLMBackend, Any], dict[str, Any]]


def _ingest(config: GPAConfig, backend: LLMBackend, embedder: Any) -> dict[str, Any]:
    result = run_ingest(config)
    return {**result.counts, "groups": result.groups,
            "problems": [p.__dict__ for p in result.problems[:20]]}


#: Stage name -> runner, in pipeline order.
STAGES: dict[str, StageFn] = {
    "ingest": _ingest,
    "classify": lambda c, b, e: run_classify(c, b),
    "attributes": lambda c, b, e: run_attributes(c, b),
    "rules": lambda c, b, e: run_rules(c),
    "rubrics": lambda c, b, e: run_rubrics(c, b),
    "context": lambda c, b, e: run_context(c, b, e),
    "finetune": lambda c, b, e: run_finetune(c, b),
    "evaluate": lambda c, b, e: run_evaluate(c, b, e),
}


def run_pipeline(config: GPAConfig, backend: LLMBackend | None = None, *,
                 stages: Sequence[str] | None = None, embedder: Any = None,
                 log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Run ``stages`` (default: all) and return, and save, their summaries and timings."""
    names = list(stages or STAGES)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    Path(config.work_dir).mkdir(parents=True, exist_ok=True)
    save_config(config, Path(config.work_dir) / "gpa_config.yaml")
    own = backend is None
    backend = backend if backend is not None else make_backend(config.llm)
    report: dict[str, Any] = {"stages": {}, "seconds": {}, "llm_failures": {}}
    start = time.perf_counter()
    try:
        for name in names:
            t0 = time.perf_counter()
            log(f"[gpa] {name} ...")
            before = (backend.stats.requests, backend.stats.failures)
            report["stages"][name] = STAGES[name](config, backend, embedder)
            report["seconds"][name] = round(time.perf_counter() - t0, 2)
            asked = backend.stats.requests - before[0]
            failed = backend.stats.failures - before[1]
            if failed:
                report["llm_failures"][name] = {"failed": failed, "requests": asked}
                log(f"[gpa] {name}: {failed} of {asked} LLM requests failed")
            log(f"[gpa] {name} done in {report['seconds'][name]:.1f}s")
    finally:
        report["seconds"]["total"] = round(time.perf_counter() - start, 2)
        report["backend"] = backend.stats.summary()
        write_json(stage_path(config.work_dir, "pipeline"), report)
        if own:
            backend.close()
    _report_llm_failures(config, report)
    return report


class LLMStageFailed(ValueError):
    """Every LLM request of a stage failed: its output is empty for want of answers."""


def _report_llm_failures(config: GPAConfig, report: dict[str, Any]) -> None:
    """Name the failures in evaluation.md, and fail when a stage got no answer at all."""
    failures = report["llm_failures"]
    if not failures:
        return
    lines = [f"- {stage}: {f['failed']} of {f['requests']} LLM requests failed"
             for stage, f in failures.items()]
    evaluation = stage_path(config.work_dir, "evaluate_md")
    if evaluation.is_file():
        evaluation.write_text(evaluation.read_text() + "\n## LLM failures\n\n"
                              + "\n".join(lines) + f"\n\nBackend: {report['backend']}\n")
    total = [stage for stage, f in failures.items() if f["failed"] == f["requests"]]
    if total:
        raise LLMStageFailed(
            f"every LLM request of {', '.join(total)} failed ({report['backend']}); the tables "
            f"in {evaluation} are empty for want of answers. Check the server, model name and "
            "key (see pipeline_report.json).")
