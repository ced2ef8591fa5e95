"""Stage 8: judge GPA-CT and GPA-FT against zero-shot and persona answers.

For each held-out prompt of a rubric group, four answers are collected
(zero-shot, persona prompt, GPA-CT, GPA-FT where a group model exists). A
blind judge (the shared LLM backend, or a separate judge server) sees the
request and two answers, never the rubric or the group, and picks the one
the user would prefer; every pair is asked in both orders, and a pair whose
verdict follows the position is a tie. Win rates get Wilson intervals;
answers the judge did not decide are counted, not guessed, and a one-sided
or bundled judge's win rates are reported as unusable (``trust``). Rubric
adherence, a separate rubric-aware metric, is measured where an item is
measurable (length, format, examples) and judged yes/no otherwise.
Capability retention compares the fine-tuned model's loss on general
instructions (built-in, or held-out data such as the HH-RLHF test split:
``retention_data``) with its base model's, with a bootstrap interval.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pluralign.eval.metrics import proportion_with_interval, wilson_interval
from pluralign.gpa.common import StepStats, ask, clip
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.context import answer_with_rubric, load_prompts
from pluralign.gpa.finetune import strip_marker
from pluralign.gpa.io import read_json, read_jsonl, stage_path, write_json, write_jsonl
from pluralign.gpa.prompts import render
from pluralign.gpa.rubrics import load_rubrics
from pluralign.gpa.trust import (
    ONE_SIDED_SHARE,
    judge_is_bundled,
    judge_problems,
    trust_lines,
    validation_lines,
)
from pluralign.gpa.validation import measured_adherence
from pluralign.llm import LLMBackend, LLMConfig, make_backend

METHODS = ("gpa_ct", "gpa_ft")
BASELINES = ("zero_shot", "persona")


def parse_choice(text: str | None) -> str | None:
    """"A" or "B" from a judge answer; None when it names neither or both."""
    if not text:
        return None
    head = text.strip()[:40]
    found = set(re.findall(r"\b(?:response\s+)?([AB])\b", head))
    if not found:  # "the answer is b": a lower-case letter only counts after such a lead-in
        found = {m.upper() for m in re.findall(
            r"\b(?:answer|response|choice|prefer)(?: is)?:?\s+([ab])\b", head, re.I)}
    return found.pop() if len(found) == 1 else None


def parse_yes_no(text: str | None) -> bool | None:
    """True/False from a yes/no answer ("The answer is no.", "It does not follow ...")."""
    lowered = (text or "").lower()
    words = re.findall(r"[a-z]+", lowered)[:6]
    if "yes" in words and "no" not in words:
        return True
    if "no" in words and "yes" not in words:
        return False
    if re.search(r"\b(does not|doesn'?t|do not) (follow|adhere)", lowered):
        return False
    if re.search(r"\b(follows|adheres to) the guideline", lowered):
        return True
    return None


def baseline_responses(group: str, prompts: list[dict[str, Any]], backend: LLMBackend,
                       config: GPAConfig, stats: StepStats) -> dict[str, list[str | None]]:
    """Zero-shot and persona answers, aligned with ``prompts`` (they use no rubric)."""
    texts = [clip(p["prompt"], config.max_chars) for p in prompts]
    return {
        "zero_shot": ask(backend, texts, stats, max_tokens=config.answer_max_tokens),
        "persona": ask(backend, texts, stats, system=render("persona_system", group=group),
                       max_tokens=config.answer_max_tokens),
    }


def method_responses(group: str, prompts: list[dict[str, Any]], rubric: dict[str, Any],
                     backend: LLMBackend, config: GPAConfig, stats: StepStats,
                     ct_rows: list[dict[str, Any]], ft_backend: LLMBackend | None,
                     embedder: Any = None) -> dict[str, list[str | None]]:
    """GPA-CT answers (saved ``ct_rows`` where they cover ``prompts``) and GPA-FT answers
    (where a group model is given), aligned with ``prompts``."""
    out: dict[str, list[str | None]] = {}
    saved = {r["prompt"]: r["answer"] for r in ct_rows if r["group"] == group}
    if all(p["prompt"] in saved for p in prompts):
        out["gpa_ct"] = [saved[p["prompt"]] for p in prompts]
    else:  # GPA-CT was not run for these prompts: answer them now
        rows = answer_with_rubric(group, prompts, rubric, backend, config, stats, embedder)
        out["gpa_ct"] = [r["answer"] for r in rows]
    if ft_backend is not None:
        texts = [clip(p["prompt"], config.max_chars) for p in prompts]
        answers = ask(ft_backend, texts, stats, max_tokens=config.answer_max_tokens)
        out["gpa_ft"] = [strip_marker(a) if a is not None else None for a in answers]
    return out


def collect_responses(group: str, prompts: list[dict[str, Any]], rubric: dict[str, Any],
                      backend: LLMBackend, config: GPAConfig, stats: StepStats,
                      ct_rows: list[dict[str, Any]], ft_backend: LLMBackend | None,
                      embedder: Any = None) -> dict[str, list[str | None]]:
    """Answers per method, aligned with ``prompts`` (None: failed or not available)."""
    return {**baseline_responses(group, prompts, backend, config, stats),
            **method_responses(group, prompts, rubric, backend, config, stats, ct_rows,
                               ft_backend, embedder)}


def judge_pairs(group: str, prompts: list[dict[str, Any]],
                responses: dict[str, list[str | None]], judge: LLMBackend, config: GPAConfig,
                stats: StepStats) -> list[dict[str, Any]]:
    """One blind judgment per (method, baseline, prompt) where both answers exist.

    The judge sees the request and the two answers only (no rubric, no group), and each
    pair is asked in both orders: the method wins or loses only when both orders agree.
    """
    todo, requests = [], []
    for method in (m for m in METHODS if m in responses):
        for baseline in BASELINES:
            for k, prompt in enumerate(prompts):
                mine, theirs = responses[method][k], responses[baseline][k]
                if mine is None or theirs is None:
                    continue
                todo.append({"group": group, "method": method, "baseline": baseline,
                             "prompt_index": k, "conversation_id": prompt["conversation_id"]})
                request = clip(prompt["prompt"], 400)
                mine, theirs = clip(mine, config.max_chars), clip(theirs, config.max_chars)
                requests += [render("judge_blind", prompt=request, a=mine, b=theirs),
                             render("judge_blind", prompt=request, a=theirs, b=mine)]
    # 8 tokens: room for "Response A" or "The answer is B", which 4 tokens cut off.
    verdicts = ask(judge, requests, stats, max_tokens=8)
    for i, row in enumerate(todo):
        raws = verdicts[2 * i: 2 * i + 2]
        choices = [parse_choice(raw) for raw in raws]
        row["raw"], row["choices"] = raws, choices  # [method shown as A, method shown as B]
        row["outcome"] = pair_outcome(choices)
    return todo


def pair_outcome(choices: list[str | None]) -> str:
    """win / loss when both orders agree, tie when the verdict followed the position."""
    if None in choices:
        return "undecided"
    method_first, method_second = choices
    if method_first != method_second:
        return "win" if method_first == "A" else "loss"
    return "tie"


def adherence(group: str, rubric: dict[str, Any], responses: dict[str, list[str | None]],
              judge: LLMBackend, stats: StepStats
              ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(share of (answer, item) checks passed per method, one row per check).

    Measurable items (length, format, examples) are measured; the others are judged yes/no.
    """
    checks: list[dict[str, Any]] = []
    for method, answers in responses.items():
        for k, answer in enumerate(answers):
            if answer is None:
                continue
            for item in rubric["items"]:
                verdict = measured_adherence(item, answer)
                checks.append({"group": group, "method": method, "prompt_index": k,
                               "item_id": item["item_id"], "passed": verdict, "raw": None,
                               "how": "judged" if verdict is None else "measured",
                               "request": None if verdict is not None else render(
                                   "judge_adherence", item=item["text"],
                                   response=clip(answer, 800))})
    asks = [c for c in checks if c["how"] == "judged"]
    judged = ask(judge, [c["request"] for c in asks], stats, max_tokens=6)
    for check, raw in zip(asks, judged, strict=True):
        check.update(raw=raw, passed=parse_yes_no(raw))
    out = {}
    for method in responses:
        mine = [c for c in checks if c["method"] == method]
        passed = [c["passed"] for c in mine if c["passed"] is not None]
        share, low, high = proportion_with_interval(sum(passed), len(passed))
        out[method] = {"adherence": share, "low": low, "high": high, "checks": len(passed),
                       "measured": sum(c["how"] == "measured" for c in mine),
                       "undecided": len(mine) - len(passed)}
    for check in checks:
        check.pop("request")
    return out, checks


def win_table(judgments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(j["group"], j["method"], j["baseline"]) for j in judgments})
    for group, method, baseline in keys:
        mine = [j for j in judgments if (j["group"], j["method"], j["baseline"]) ==
                (group, method, baseline)]
        wins = sum(j["outcome"] == "win" for j in mine)
        losses = sum(j["outcome"] == "loss" for j in mine)
        ties = sum(j["outcome"] == "tie" for j in mine)
        decided = wins + losses
        low, high = wilson_interval(wins, decided)
        rows.append({"group": group, "method": method, "baseline": baseline, "wins": wins,
                     "losses": losses, "ties": ties, "undecided": len(mine) - decided - ties,
                     "win_rate": wins / decided if decided else None, "low": low, "high": high})
    return rows


def one_sided_note(counts: dict[str, int], what: str) -> str | None:
    """A caution when a judge gave (nearly) the same verdict every time it decided."""
    decided = sum(counts.values())
    if decided < 4 or max(counts.values()) < ONE_SIDED_SHARE * decided:
        return None
    verdict = max(counts, key=lambda k: counts[k])
    return (f"the judge answered {verdict} in {counts[verdict]} of {decided} decided {what}: "
            f"its verdicts hardly depend on the answers")


def judge_sides(judgments: list[dict[str, Any]], bundled: bool = False) -> dict[str, Any]:
    """How often the judge said A, B or neither, and whether its win rates are usable.

    Every pair is asked in both orders, so a judge that reads the answers says A about as
    often as B; one that always picks a position produces only ties.
    """
    choices = [c for j in judgments for c in j["choices"]]
    sides = {side: choices.count(side) for side in ("A", "B")}
    note = one_sided_note(sides, "verdicts")
    if note:
        note += ", so every pair it decided is a tie (each pair is asked in both orders)"
    problems = judge_problems(sides, bundled)
    return {**sides, "undecided": len(choices) - sum(sides.values()),
            "position_ties": sum(j["outcome"] == "tie" for j in judgments),
            "position_bias_note": note, "problems": problems, "usable": not problems}


def judged_verdicts(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Yes/no/undecided counts of the judged adherence checks, with a one-sidedness note."""
    judged = [c for c in checks if c["how"] == "judged"]
    counts = {"yes": sum(c["passed"] is True for c in judged),
              "no": sum(c["passed"] is False for c in judged)}
    return {**counts, "undecided": len(judged) - counts["yes"] - counts["no"],
            "note": one_sided_note(counts, "adherence checks")}


def make_judge(config: GPAConfig, backend: LLMBackend) -> LLMBackend:
    """The main backend, unless a separate judge model or server is configured."""
    if not config.judge_model and not config.judge_base_url:
        return backend
    kind = "openai" if config.judge_base_url else config.llm.backend
    return make_backend(LLMConfig(backend=kind, model=config.judge_model or config.llm.model,
                                  base_url=config.judge_base_url, cache_dir=config.llm.cache_dir,
                                  api_key_env=config.llm.api_key_env, progress=False))


def _ft_models(config: GPAConfig) -> dict[str, str]:
    """Group -> final model folder of the GPA-FT runs that trained."""
    path = stage_path(config.work_dir, "finetune")
    if not path.is_file():
        return {}
    groups = read_json(path)["groups"]
    return {g: e["final_dir"] for g, e in groups.items() if e.get("status") == "trained"}


def load_group_model(final_dir: str, config: GPAConfig) -> tuple[LLMBackend, Any]:
    """(a backend answering with the GPA-FT model in ``final_dir``, the loaded model)."""
    from pluralign.llm import HFBackend
    from pluralign.models import load_model

    loaded = load_model(final_dir)
    backend = HFBackend(final_dir, loaded=loaded, max_tokens=config.answer_max_tokens,
                        temperature=config.llm.temperature, seed=config.llm.seed,
                        cache_dir=config.llm.cache_dir, progress=False)
    return backend, loaded


def retention_for(config: GPAConfig, loaded: Any) -> dict[str, Any]:
    """Retention of the loaded GPA-FT model against ``config.ft_model`` (retention_data)."""
    from pluralign.gpa.retention import GENERAL_INSTRUCTIONS, load_retention_pairs, retention_check
    from pluralign.models import load_model

    pairs, source = GENERAL_INSTRUCTIONS, "built-in general instructions"
    if config.retention_data:
        pairs = load_retention_pairs(config.retention_data, config.retention_examples,
                                     config.seed)
        source = config.retention_data
    return retention_check(load_model(config.ft_model), loaded, config.retention_margin,
                           pairs, source, config.seed)


def _pct(v: Any) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.0f}%"


def percent_interval(share: Any, low: Any, high: Any) -> str:
    """``75% [41%, 93%]``: a share with its interval (n/a where there is none)."""
    return f"{_pct(share)} [{_pct(low)}, {_pct(high)}]"


def win_rate_lines(result: dict[str, Any]) -> list[str]:
    """The blind win-rate table; an unusable judge's rates are not shown as numbers."""
    judge = result.get("judge") or {}
    usable = judge.get("usable", True)
    lines = ["## Blind win rates (the judge never sees the rubric)", ""]
    if not usable:
        lines += ["UNUSABLE: " + "; ".join(judge["problems"]) + ". The counts below show "
                  "what the judge did; they are not results.", ""]
    lines += ["| group | method | vs | wins | losses | ties (order decided) | undecided | "
              "win rate [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for r in result["win_rates"]:
        rate = percent_interval(r["win_rate"], r["low"], r["high"]) if usable else "unusable"
        lines.append(f"| {r['group']} | {r['method']} | {r['baseline']} | {r['wins']} | "
                     f"{r['losses']} | {r.get('ties', 0)} | {r['undecided']} | {rate} |")
    if judge:
        lines += ["", f"Judge verdicts: A {judge['A']}, B {judge['B']}, undecided "
                      f"{judge['undecided']}."]
        if judge["position_bias_note"]:
            lines.append(f"Caution: {judge['position_bias_note']}.")
    return lines


def evaluation_markdown(result: dict[str, Any],
                        rubrics: dict[str, dict[str, Any]] | None = None) -> str:
    """evaluation.md: what can be trusted first, then the tables."""
    rubrics = rubrics or {}
    lines = ["# GPA evaluation", "", *trust_lines(result, rubrics), *validation_lines(rubrics),
             *win_rate_lines(result)]
    lines += ["", "## Rubric adherence (rubric-aware: follows the items, not preference)", "",
              "| group | method | adherence [95% CI] | checks | measured | undecided |",
              "|---|---|---|---|---|---|"]
    for group, methods in result["adherence"].items():
        for method, a in methods.items():
            lines.append(f"| {group} | {method} | "
                         f"{percent_interval(a['adherence'], a['low'], a['high'])} | "
                         f"{a['checks']} | {a.get('measured', 'n/a')} | "
                         f"{a['undecided']} |")
    verdicts = result.get("judged_adherence")
    if verdicts and verdicts["yes"] + verdicts["no"] + verdicts["undecided"]:
        lines += ["", f"Judged checks (items that cannot be measured): yes {verdicts['yes']}, "
                      f"no {verdicts['no']}, undecided {verdicts['undecided']}."]
        if verdicts["note"]:
            lines.append(f"Caution: {verdicts['note']}.")
    lines += ["", "## Capability retention (held-out instruction loss)", ""]
    for group, r in result["retention"].items():
        verdict = "passed" if r["passed"] else "FAILED"
        interval = (f" [95% CI {100 * r['change_low']:+.1f}%, {100 * r['change_high']:+.1f}%]"
                    if "change_low" in r else "")
        lines.append(f"- {group}: base loss {r['base_loss']}, fine-tuned {r['finetuned_loss']} "
                     f"({100 * r['relative_change']:+.1f}%{interval}; margin "
                     f"{100 * r['margin']:.0f}%; {r.get('instructions', '?')} examples of "
                     f"{r.get('source', 'built-in general instructions')}): {verdict}")
    if not result["retention"]:
        lines.append("- no GPA-FT model was trained")
    if result["skipped"]:
        lines += ["", "## Not evaluated", ""]
        lines += [f"- {g}: {why}" for g, why in result["skipped"].items()]
    return "\n".join(lines) + "\n"


def run_evaluate(config: GPAConfig, backend: LLMBackend, embedder: Any = None
                 ) -> dict[str, Any]:
    """Stage 8: responses, judgments, win rates, adherence and retention -> evaluation.*"""
    rubrics = load_rubrics(config)
    groups = [g for g, r in rubrics.items() if r["items"]]
    prompts = load_prompts(config, groups)
    ct_path = stage_path(config.work_dir, "context")
    ct_rows = list(read_jsonl(ct_path)) if ct_path.is_file() else []
    judge, ft_models = make_judge(config, backend), _ft_models(config)
    stats, responses_out, judgments, checks = StepStats(), [], [], []
    result: dict[str, Any] = {"adherence": {}, "retention": {}, "skipped": {}}
    for group in groups:
        if not prompts[group]:
            result["skipped"][group] = "no held-out prompts"
            continue
        ft_backend = loaded = None
        if group in ft_models:
            ft_backend, loaded = load_group_model(ft_models[group], config)
        answers = collect_responses(group, prompts[group], rubrics[group], backend, config,
                                    stats, ct_rows, ft_backend, embedder)
        for method, texts in answers.items():
            responses_out += [{"group": group, "method": method, "prompt_index": k,
                               "conversation_id": p["conversation_id"], "turn": p["turn"],
                               "prompt": p["prompt"], "response": t}
                              for k, (p, t) in enumerate(zip(prompts[group], texts, strict=True))]
        judgments += judge_pairs(group, prompts[group], answers, judge, config, stats)
        result["adherence"][group], group_checks = adherence(group, rubrics[group], answers,
                                                             judge, stats)
        checks += group_checks
        if loaded is not None:
            result["retention"][group] = retention_for(config, loaded)
    for group in (g for g, r in rubrics.items() if not r["items"]):
        result["skipped"][group] = rubrics[group]["status"]
    result["win_rates"] = win_table(judgments)
    result["judge"] = judge_sides(judgments, judge_is_bundled(config))
    for row in result["win_rates"]:
        row["usable"] = result["judge"]["usable"]
    result["judged_adherence"] = judged_verdicts(checks)
    result["llm"] = stats.as_dict()
    write_jsonl(stage_path(config.work_dir, "adherence"), checks)
    write_jsonl(stage_path(config.work_dir, "responses"), responses_out)
    write_jsonl(stage_path(config.work_dir, "judgments"), judgments)
    write_json(stage_path(config.work_dir, "evaluate"), result)
    Path(stage_path(config.work_dir, "evaluate_md")).write_text(
        evaluation_markdown(result, rubrics), encoding="utf-8")
    return result
