"""GPA evaluation that can be trusted, on the WildChat sample with the bundled model (issue 22).

On ``../shared/data/conversations/wildchat_50_sample.json`` with SmolLM2-135M
(every LLM step, the judge included, and the GPA-FT base model):

- the rubric mining stages (ingest, classify, attributes, rules, rubrics) and
  the held-out validation of every rubric item (``pluralign.gpa.validation``:
  lift of the negative reactions after answers violating vs following the
  item, in conversations mining never saw, with a 95% interval);
- GPA-CT against GPA-FT by data size (``pluralign.gpa.data_size``): the
  largest group from 25%, 50% and 100% of its mined conversations, with
  zero-shot and persona baselines, measured against the measurable items of
  the 100% rubric; no blind win rate, because the bundled judge is not one;
- retention of the 100% GPA-FT model (``pluralign.gpa.retention``): answer loss
  on the HH-RLHF harmless test split before and after GPA-FT, with a paired
  bootstrap interval.

Usage: .venv/bin/python benchmarks/gpa_eval.py [--write] [--seed 0]
       .venv/bin/python benchmarks/gpa_eval.py --quick     # a smoke run; prints only
       (add --threads 1 when another process keeps the cores busy)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import publish, run_stamp

SECTION = "gpa-eval"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WILDCHAT = SHARED / "conversations" / "wildchat_50_sample.json"
HH_TEST = SHARED / "hh_rlhf" / "harmless_base_test.jsonl.gz"
MINING = ("ingest", "classify", "attributes", "rules", "rubrics")

#: --quick: every part still runs, on fewer prompts, pairs, steps and examples, without
#: the LLM labels of every user turn and the LLM phrasing of rubric items (the slowest
#: steps with a local model on a CPU).
QUICK = {"use_llm_labels": False, "rubric_phrasing": "template", "max_groups": 2,
         "prompts_per_group": 2, "answer_max_tokens": 32, "ft_pairs_per_group": 4,
         "ft_max_steps": 1, "retention_examples": 8}
#: The full run: the pipeline's own defaults, retention on 64 held-out HH-RLHF examples.
FULL = {"max_groups": 2, "retention_examples": 64}


def bench_config(quick: bool, seed: int, work_dir: str, cache_dir: str) -> Any:
    """The run's GPAConfig. Its LLM cache lives in ``cache_dir``, a folder of this run only:
    each data-size share asks again for the labels and answers no share changed, and
    a cache kept across runs would answer for a retrained GPA-FT model in the same folder."""
    from pluralign.gpa import GPAConfig

    if not WILDCHAT.is_file():
        raise SystemExit(f"{WILDCHAT} is missing: the benchmark reads ../shared/data")
    config = GPAConfig(inputs=[str(WILDCHAT)], work_dir=work_dir, seed=seed,
                       retention_data=str(HH_TEST), **(QUICK if quick else FULL))
    return dataclasses.replace(config, llm=dataclasses.replace(config.llm, cache_dir=cache_dir))


def run_parts(config: Any) -> dict[str, Any]:
    """Mining with held-out validation, the data-size experiment, retention; each timed."""
    from pluralign.gpa import run_pipeline
    from pluralign.gpa.data_size import run_data_size
    from pluralign.gpa.evaluate import retention_for
    from pluralign.gpa.rubrics import load_rubrics
    from pluralign.llm import make_backend
    from pluralign.models import load_model

    seconds: dict[str, float] = {}
    backend = make_backend(config.llm)
    try:
        started = time.perf_counter()
        run_pipeline(config, backend, stages=MINING)
        seconds["mining and held-out validation"] = time.perf_counter() - started
        started = time.perf_counter()
        data_size = run_data_size(config, backend, log=print)
        seconds["CT / FT by data size"] = time.perf_counter() - started
    finally:
        backend.close()
    started = time.perf_counter()
    tuned = data_size["shares"][data_size["reference_share"]]["finetune"]
    retention = (retention_for(config, load_model(tuned["final_dir"]))
                 if tuned.get("status") == "trained" else None)
    seconds["retention"] = time.perf_counter() - started
    return {"rubrics": load_rubrics(config), "data_size": data_size, "retention": retention,
            "seconds": seconds}


def _interval(lift: dict[str, Any] | None) -> str:
    if lift is None or lift["lift"] is None:
        return "n/a"
    return f"{lift['lift']:.2f} [{lift['low']:.2f}, {lift['high']:.2f}]"


def validation_table(rubrics: dict[str, dict[str, Any]]) -> list[str]:
    """One row per rubric item: its held-out counts, lift with interval, verdict."""
    lines = ["| group | item | attribute | negative after violating | negative after "
             "following | lift [95% CI] | other groups' lift | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for group, rubric in rubrics.items():
        for item in rubric["items"]:
            check = item.get("heldout") or {"own": None, "elsewhere": None,
                                            "verdict": "not validated"}
            own = check["own"]
            counts = (("n/a", "n/a") if own is None else
                      (f"{own['negative_violated']}/{own['violated']}",
                       f"{own['negative_followed']}/{own['followed']}"))
            lines.append(f"| {group} | {item['text']} | {item['attribute']}: "
                         f"{item['direction']} | {counts[0]} | {counts[1]} | "
                         f"{_interval(own)} | {_interval(check['elsewhere'])} | "
                         f"{check['verdict']} |")
    return lines if len(lines) > 2 else [*lines, "| (no rubric items) |" + " |" * 7]


def retention_line(retention: dict[str, Any] | None, share: str) -> str:
    if retention is None:
        return f"No GPA-FT model was trained at {share}: nothing to compare."
    verdict = "within" if retention["passed"] else "OUTSIDE"
    return (f"Base {retention['base_loss']:.4f}, after GPA-FT ({share} model) "
            f"{retention['finetuned_loss']:.4f} nats per answer token: "
            f"{100 * retention['relative_change']:+.2f}% [95% CI "
            f"{100 * retention['change_low']:+.2f}%, {100 * retention['change_high']:+.2f}%], "
            f"{verdict} the {100 * retention['margin']:.0f}% margin; "
            f"{retention['instructions']} examples of `{retention['source']}`.")


def timing_line(seconds: dict[str, float], load: float) -> str:
    parts = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    return (f"Run time {sum(seconds.values()) / 60:.1f} min ({parts}); load average "
            f"{load:.1f} on the machine's cores when it started.")


def _shown(path: str) -> str:
    """A data path as the project names it (``../shared/data/...``), not this machine's."""
    return os.path.relpath(path, Path(__file__).resolve().parents[1])


def section(run: dict[str, Any], *, quick: bool, seed: int, load: float) -> str:
    """The BENCHMARKS.md section: the three tables, what needs a capable judge, timing."""
    from pluralign.gpa.data_size import data_size_table

    result, share = run["data_size"], run["data_size"]["reference_share"]
    retention = run["retention"] and {**run["retention"],
                                      "source": _shown(run["retention"]["source"])}
    return "\n".join([
        "## GPA evaluation with the bundled model (`benchmarks/gpa_eval.py`)", "",
        f"`{_shown(str(WILDCHAT))}`, every LLM step, judge and GPA-FT base model "
        f"SmolLM2-135M (bundled), seed {seed}. {timing_line(run['seconds'], load)} "
        f"{run_stamp(quick)}", "",
        "**Needs a capable judge, so not shown:** blind win rates of GPA-CT and GPA-FT "
        "against zero-shot and persona answers (the bundled 135M model answers the same "
        "letter whatever the answers say, so its win rates are not results and were not "
        "asked for), and every rubric item that cannot be measured by counting (tone, "
        "detail, accuracy, simplicity): neither validated below nor scored for adherence. "
        "Rubric phrasings and turn labels written by a 135M model are weak too. "
        "Everything below is judge-free.", "",
        "### Rubric items on held-out conversations", "",
        "Negative reactions (the labels each item was mined from) after held-out answers "
        "that violate vs follow the item; lift with a Katz 95% interval, 'replicates' "
        "only when the interval lies above 1.", "",
        *validation_table(run["rubrics"]), "",
        f"### GPA-CT against GPA-FT by data size ({result['group']})", "",
        f"The group's rubric, GPA-CT prompt and GPA-FT model from each share of its mined "
        f"conversations (nested, seeded; held-out conversations never mined), answering its "
        f"{result['prompts']} held-out prompts; cells count answers passing the measurable "
        f"items of the {share} rubric ({_measurable(result)}).", "",
        *data_size_table(result), "",
        "### Retention before and after GPA-FT", "",
        retention_line(retention, share)])


def _measurable(result: dict[str, Any]) -> str:
    from pluralign.gpa.validation import measured_adherence

    items = [f"{i['attribute']}: {i['direction']}" for i in result["reference_items"]
             if measured_adherence(i, "", "") is not None]
    return ", ".join(items) if items else "none: this table is empty of checks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="A smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    parser.add_argument("--seed", type=int, default=0, help="Of splits, shares, pairs, training.")
    parser.add_argument("--work-dir", help="Keep the GPA work folders here (default: a "
                                           "temporary folder, removed afterwards).")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: torch's, one per core). On cores shared "
                             "with another busy process, 1 avoids threads waiting on each "
                             "other: generation ran 16x faster so on 2 shared cores.")
    parser.add_argument("--write", action="store_true", help="Replace the BENCHMARKS.md section.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="gpa_eval_") as scratch:
        config = bench_config(args.quick, args.seed, args.work_dir or scratch,
                              str(Path(scratch) / "llm_cache"))
        run = run_parts(config)
    publish(SECTION, section(run, quick=args.quick, seed=args.seed, load=load),
            write=args.write)


if __name__ == "__main__":
    main()
