"""GPA-CT against GPA-FT by data size: one group's rubric mined from less or more of its logs.

The paper's central claim is that GPA-FT pays off with enough data while
GPA-CT is more robust with little. Here one group's mined conversations are
cut to each share of ``data_sizes`` (25%, 50%, 100% by default): a seeded
order of the group's mined conversations, of which each share keeps a prefix,
so the shares are nested and rerunning with the same seed gives the same
cut. Only mined conversations are cut; the held-out ones stay held out at
every share, so no share mines the conversations its answers are scored on.
The cut conversations are marked ``split: "unused"`` in the share's own work
folder, which every stage skips. The other groups stay whole: rules still
contrast against all of them.

For each share the existing stages run in ``WORK/data_size/<share>``
(classify, attributes, rules, rubrics, then GPA-FT for the group alone), and
the group's held-out prompts are answered zero-shot, with a persona prompt
(once: they use no mined data), with GPA-CT and with GPA-FT. Every answer is
measured, without a judge, against the measurable items (length, format,
examples, language) of the largest share's rubric: the best estimate of what
the group wants, where scoring each share against its own rubric would
reward following a rubric that little data got wrong. Blind win rates are
asked only of a judge that ``trust`` does not rule out (not the bundled
model), and shown as unusable when the judge turns out one-sided.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pluralign.eval.metrics import proportion_with_interval
from pluralign.gpa.common import StepStats
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.context import load_prompts
from pluralign.gpa.evaluate import (
    baseline_responses,
    judge_pairs,
    judge_sides,
    load_group_model,
    make_judge,
    method_responses,
    percent_interval,
    win_table,
)
from pluralign.gpa.finetune import finetune_group
from pluralign.gpa.ingest import group_table, seeded_order
from pluralign.gpa.io import read_json, read_jsonl, stage_path, write_json, write_jsonl
from pluralign.gpa.pipeline import run_pipeline
from pluralign.gpa.rubrics import load_rubrics
from pluralign.gpa.rules import eligible_groups
from pluralign.gpa.trust import bundled_judge_problem, judge_is_bundled
from pluralign.gpa.validation import measured_adherence
from pluralign.llm import LLMBackend, make_backend

#: The split of a mined conversation a smaller share leaves out (every stage skips it).
UNUSED = "unused"
#: The stages that turn a share's conversations into its rubric.
MINING_STAGES = ("classify", "attributes", "rules", "rubrics")
#: Attributes whose items ``measured_adherence`` checks by counting (no judge).
MEASURED_ATTRIBUTES = ("length", "format", "examples", "language")


def size_label(share: float) -> str:
    """``25%``: how a share is named in tables, files and folders."""
    return f"{100 * share:g}%"


def subsample_mined(conversations: list[dict[str, Any]], group: str, share: float,
                    seed: int) -> list[dict[str, Any]]:
    """Copies of ``conversations`` in which ``share`` of ``group``'s mined conversations
    stay mined (at least one) and the rest are marked unused; nothing else changes.

    The kept ones are a prefix of one seeded order, so a smaller share's conversations
    are always among a larger share's.
    """
    if not 0 < share <= 1:
        raise ValueError(f"data_sizes: a share must be in (0, 1], got {share}")
    mined = [c for c in conversations if c["group"] == group and c.get("split") == "mine"]
    keep = max(1, math.ceil(share * len(mined) - 1e-9))  # 0.07 * 100 is 7.000000000000001
    kept = {c["conversation_id"] for c in seeded_order(mined, seed)[:keep]}
    dropped = {c["conversation_id"] for c in mined} - kept
    return [{**c, "split": UNUSED} if c["conversation_id"] in dropped else dict(c)
            for c in conversations]


def prepare_share(config: GPAConfig, conversations: list[dict[str, Any]], group: str,
                  share: float) -> tuple[GPAConfig, list[dict[str, Any]]]:
    """(the share's config, its conversations) with its ingest files written into
    ``WORK/data_size/<share>``, where the later stages read them."""
    folder = Path(config.work_dir) / "data_size" / size_label(share).replace("%", "pct")
    share_config = dataclasses.replace(config, work_dir=str(folder))
    rows = subsample_mined(conversations, group, share, config.seed)
    report = read_json(stage_path(config.work_dir, "ingest_report"))
    report["groups"] = group_table(rows, config, report["groups"])
    for name, row in report["groups"].items():
        # Other groups still count as "the others" of every rule; only their own rubrics
        # (LLM phrasing, validation) would be work this experiment never reads.
        if name != group and row["eligible"]:
            row.update(eligible=False, reason=f"data size: only {group}'s rubric is built here")
    write_jsonl(stage_path(folder, "ingest"), rows)
    write_json(stage_path(folder, "ingest_report"), report)
    return share_config, rows


def target_group(config: GPAConfig) -> str:
    """``data_size_group``, else the largest eligible group; an ineligible one is refused."""
    eligible, skipped = eligible_groups(config)
    if config.data_size_group is None:
        if not eligible:
            raise ValueError("data_size_group: no eligible group in the ingest report")
        return eligible[0]
    if config.data_size_group not in eligible:
        why = skipped.get(config.data_size_group, "no such group")
        raise ValueError(f"data_size_group: {config.data_size_group!r} gets no rubric ({why}); "
                         f"eligible: {', '.join(eligible)}")
    return config.data_size_group


def mine_share(share_config: GPAConfig, rows: list[dict[str, Any]], group: str,
               backend: LLMBackend, embedder: Any, stats: StepStats) -> dict[str, Any]:
    """Rubric and GPA-FT model of ``group`` from one share: the mining stages, then FT."""
    run_pipeline(share_config, backend, stages=MINING_STAGES, embedder=embedder)
    rubric = load_rubrics(share_config).get(group, {"items": [], "status": "no rubric"})
    entry: dict[str, Any] = {"status": "no rubric items: nothing to fine-tune on"}
    if rubric["items"]:
        _, entry = finetune_group(group, rubric, rows, backend, share_config, stats)
    return {"mined": sum(c["group"] == group and c["split"] == "mine" for c in rows),
            "work_dir": share_config.work_dir, "rubric": rubric, "finetune": entry}


def share_answers(share_config: GPAConfig, mined: dict[str, Any], group: str,
                  prompts: list[dict[str, Any]], backend: LLMBackend, embedder: Any,
                  stats: StepStats) -> dict[str, list[str | None]]:
    """GPA-CT and GPA-FT answers of one share (none where its rubric has no items)."""
    rubric, ft_backend = mined["rubric"], None
    if not rubric["items"]:
        return {}
    if mined["finetune"].get("status") == "trained":
        ft_backend, _ = load_group_model(mined["finetune"]["final_dir"], share_config)
    try:
        return method_responses(group, prompts, rubric, backend, share_config, stats, [],
                                ft_backend, embedder)
    finally:
        if ft_backend is not None:
            ft_backend.close()


def measured_checks(items: list[dict[str, Any]], prompts: list[dict[str, Any]],
                    answers: list[str | None]) -> list[dict[str, Any]]:
    """One row per (answer, measurable item): whether the answer follows the item."""
    rows = []
    for k, answer in enumerate(answers):
        if answer is None:
            continue
        for item in items:
            passed = measured_adherence(item, answer, prompts[k]["prompt"])
            if passed is not None:
                rows.append({"prompt_index": k, "item_id": item["item_id"],
                             "attribute": item["attribute"], "passed": passed})
    return rows


def adherence_cells(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of checks passed (Wilson interval), and passed/total per measured attribute."""
    share, low, high = proportion_with_interval(sum(c["passed"] for c in checks), len(checks))
    by_attribute = {}
    for attribute in MEASURED_ATTRIBUTES:
        mine = [c["passed"] for c in checks if c["attribute"] == attribute]
        if mine:
            by_attribute[attribute] = [sum(mine), len(mine)]
    return {"adherence": share, "low": low, "high": high, "checks": len(checks),
            "by_attribute": by_attribute}


def _shared_items(rubric: dict[str, Any], reference: list[dict[str, Any]]) -> int:
    """How many of the rubric's (attribute, direction) pairs the reference rubric also has."""
    wanted = {(i["attribute"], i["direction"]) for i in reference}
    return sum((i["attribute"], i["direction"]) in wanted for i in rubric["items"])


def table_rows(shares: dict[str, dict[str, Any]], baselines: dict[str, list[str | None]],
               answers: dict[str, dict[str, list[str | None]]], prompts: list[dict[str, Any]],
               reference: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The data-size table: the baselines once, then GPA-CT and GPA-FT per share."""
    rows = [{"method": method, "share": None, "mined": 0, "rubric_items": None,
             "shared_items": None,
             **adherence_cells(measured_checks(reference, prompts, texts))}
            for method, texts in baselines.items()]
    for label, mined in shares.items():
        for method in ("gpa_ct", "gpa_ft"):
            texts = answers[label].get(method)
            row = {"method": method, "share": label, "mined": mined["mined"],
                   "rubric_items": len(mined["rubric"]["items"]),
                   "shared_items": _shared_items(mined["rubric"], reference)}
            if texts is None:
                why = (mined["finetune"].get("status") if method == "gpa_ft"
                       and mined["rubric"]["items"] else "no rubric items at this share")
                rows.append({**row, "missing": why})
            else:
                rows.append({**row, **adherence_cells(measured_checks(reference, prompts,
                                                                      texts))})
    return rows


def blind_win_rates(config: GPAConfig, backend: LLMBackend, group: str,
                    prompts: list[dict[str, Any]], baselines: dict[str, list[str | None]],
                    answers: dict[str, dict[str, list[str | None]]], stats: StepStats
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(win-rate rows per share, judge summary); no request at all to the bundled judge,
    whose verdicts would be no result whatever they were."""
    if judge_is_bundled(config):
        return [], {"asked": False, "usable": False, "problems": [bundled_judge_problem()]}
    judge, rows, judgments = make_judge(config, backend), [], []
    try:
        for label, methods in answers.items():
            mine = judge_pairs(group, prompts, {**baselines, **methods}, judge, config, stats)
            judgments += mine
            rows += [{**row, "share": label} for row in win_table(mine)]
    finally:
        if judge is not backend:
            judge.close()
    summary = {"asked": True, **judge_sides(judgments)}
    for row in rows:
        row["usable"] = summary["usable"]
    return rows, summary


def response_rows(prompts: list[dict[str, Any]], baselines: dict[str, list[str | None]],
                  answers: dict[str, dict[str, list[str | None]]]) -> list[dict[str, Any]]:
    """Every answer with its method, share and prompt (``data_size_responses.jsonl``)."""
    sets = [(None, baselines), *answers.items()]
    return [{"method": method, "share": label, "prompt_index": k,
             "conversation_id": p["conversation_id"], "prompt": p["prompt"], "response": text}
            for label, methods in sets for method, texts in methods.items()
            for k, (p, text) in enumerate(zip(prompts, texts, strict=True))]


def run_data_size(config: GPAConfig, backend: LLMBackend | None = None, embedder: Any = None,
                  log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """CT against FT by data size for one group -> ``data_size.json`` and ``data_size.md``.

    Reads the ingest stage's files in ``config.work_dir``; each share mines and fine-tunes
    in ``WORK/data_size/<share>``.
    """
    conversations = list(read_jsonl(stage_path(config.work_dir, "ingest")))
    group = target_group(config)
    prompts = load_prompts(config, [group])[group]
    if not prompts:
        raise ValueError(f"heldout_fraction: group {group!r} has no held-out prompt to answer")
    own = backend is None
    backend = backend if backend is not None else make_backend(config.llm)
    stats, shares, answers = StepStats(), {}, {}
    try:
        baselines = baseline_responses(group, prompts, backend, config, stats)
        for share in sorted(config.data_sizes):
            label = size_label(share)
            log(f"[gpa data-size] {group}: {label} of its mined conversations ...")
            share_config, rows = prepare_share(config, conversations, group, share)
            shares[label] = mine_share(share_config, rows, group, backend, embedder, stats)
            answers[label] = share_answers(share_config, shares[label], group, prompts,
                                           backend, embedder, stats)
        wins, judge = blind_win_rates(config, backend, group, prompts, baselines, answers,
                                      stats)
    finally:
        if own:
            backend.close()
    reference_label = size_label(max(config.data_sizes))
    reference = shares[reference_label]["rubric"]["items"]
    result = {"group": group, "seed": config.seed, "prompts": len(prompts),
              "reference_share": reference_label,
              "reference_items": [{k: i[k] for k in ("item_id", "attribute", "direction",
                                                    "text")} for i in reference],
              "shares": shares, "rows": table_rows(shares, baselines, answers, prompts,
                                                   reference),
              "win_rates": wins, "judge": judge, "llm": stats.as_dict()}
    write_jsonl(stage_path(config.work_dir, "data_size_responses"),
                response_rows(prompts, baselines, answers))
    write_json(stage_path(config.work_dir, "data_size"), result)
    stage_path(config.work_dir, "data_size_md").write_text(data_size_markdown(result),
                                                           encoding="utf-8")
    return result


TABLE_HEADER = ("| method | mined share | mined conversations | rubric items (shared with the "
                "reference) | length | format | examples | language | measurable adherence "
                "[95% CI] | checks | blind win rate vs zero-shot | vs persona |")


def _win_cell(result: dict[str, Any], row: dict[str, Any], baseline: str) -> str:
    judge = result["judge"]
    if row["share"] is None:
        return "-"
    if not judge.get("asked"):
        return "needs a capable judge"
    if not judge["usable"]:
        return "unusable"
    found = next((w for w in result["win_rates"] if (w["share"], w["method"], w["baseline"])
                  == (row["share"], row["method"], baseline)), None)
    return percent_interval(found["win_rate"], found["low"], found["high"]) if found else "n/a"


def _table_line(result: dict[str, Any], row: dict[str, Any]) -> str:
    items = "-" if row["rubric_items"] is None else f"{row['rubric_items']} ({row['shared_items']})"
    head = f"| {row['method']} | {row['share'] or 'none'} | {row['mined']} | {items} | "
    if "missing" in row:
        return head + f"not available: {row['missing']} |" + " |" * 7
    cells = ["{}/{}".format(*row["by_attribute"][a]) if a in row["by_attribute"] else "-"
             for a in MEASURED_ATTRIBUTES]
    return (head + " | ".join(cells) + " | "
            + f"{percent_interval(row['adherence'], row['low'], row['high'])} | "
            + f"{row['checks']} | {_win_cell(result, row, 'zero_shot')} | "
            + f"{_win_cell(result, row, 'persona')} |")


def data_size_table(result: dict[str, Any]) -> list[str]:
    """The data-size table: answers passing the reference rubric's measurable items."""
    return [TABLE_HEADER, "|" + "---|" * 12, *(_table_line(result, r) for r in result["rows"])]


def judge_line(result: dict[str, Any]) -> str:
    """What the blind win rates are: not asked, unusable, or results."""
    judge = result["judge"]
    if not judge.get("asked"):
        return ("Blind win rates were not asked: " + "; ".join(judge["problems"]) + ". They "
                "need a capable judge (`--judge_base_url URL --judge_model NAME`).")
    if not judge["usable"]:
        return "Blind win rates: UNUSABLE, not results: " + "; ".join(judge["problems"]) + "."
    return ("Blind win rates: the judge never saw the rubric and each pair was asked in both "
            "orders (a verdict that followed the order is a tie).")


def data_size_markdown(result: dict[str, Any]) -> str:
    """data_size.md: the reference rubric, the table, the judge's standing, GPA-FT per share."""
    measurable = [i for i in result["reference_items"]
                  if measured_adherence(i, "", "") is not None]
    lines = ["# GPA-CT against GPA-FT by data size", "",
             f"Group {result['group']}: GPA-CT and GPA-FT built from each share of its mined "
             f"conversations (seed {result['seed']}, nested shares), answering its "
             f"{result['prompts']} held-out prompts. Adherence: the answers measured, without "
             f"a judge, against the measurable items of the {result['reference_share']} "
             "rubric (cells: answers passing / checked).", ""]
    lines += [f"- {i['item_id']} ({i['attribute']}: {i['direction']}) {i['text']}"
              for i in measurable] or ["- the reference rubric has no measurable item: "
                                       "adherence needs a judge"]
    lines += ["", *data_size_table(result), "", judge_line(result), "", "GPA-FT per share:"]
    for label, share in result["shares"].items():
        ft = share["finetune"]
        lines.append(f"- {label}: {ft.get('pairs', 0)} pairs, {ft['status']}")
    return "\n".join(lines) + "\n"
