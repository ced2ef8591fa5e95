"""Stage 4: group-specific preference rules from contrasting attribute statistics.

For a group ``g`` and an (attribute, direction) pair, the support is the
number of ``g``'s mined conversations with at least one such signal. The
rule's lift compares that rate with the rate in all other groups, with add-
half smoothing so one conversation in a small group is not an infinite lift.
A rule keeps its evidence (conversation, user turn, assistant turn), so every
rubric item can be traced back to the logs it came from.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from pluralign.gpa.config import GPAConfig
from pluralign.gpa.io import read_json, read_jsonl, stage_path, write_jsonl

#: Add-half (Jeffreys) smoothing of rates before they are compared.
SMOOTHING = 0.5


def smoothed_rate(hits: int, total: int) -> float:
    return (hits + SMOOTHING) / (total + 2 * SMOOTHING)


def _mined_sizes(conversations: list[dict[str, Any]]) -> Counter[str]:
    return Counter(c["group"] for c in conversations if c.get("split", "mine") == "mine")


def _evidence(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    seen, evidence, sources = set(), [], Counter()
    for row in rows:
        key = (row["conversation_id"], row["user_turn"])
        sources.update(row["sources"])
        if key not in seen:
            seen.add(key)
            evidence.append({"conversation_id": row["conversation_id"],
                             "user_turn": row["user_turn"],
                             "assistant_turn": row["assistant_turn"], "label": row["label"]})
    return evidence, dict(sources)


def _drop_conflicts(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep one direction per attribute (the better-supported); the other is marked."""
    best: dict[str, dict[str, Any]] = {}
    for rule in rules:
        current = best.get(rule["attribute"])
        if current is None or (rule["support"], rule["lift"]) > (current["support"],
                                                                 current["lift"]):
            best[rule["attribute"]] = rule
    for rule in rules:
        winner = best[rule["attribute"]]
        rule["conflict_with"] = None if winner is rule else winner["rule_id"]
    return [r for r in rules if r["conflict_with"] is None]


def mine_rules(conversations: list[dict[str, Any]], attributes: list[dict[str, Any]],
               groups: list[str], config: GPAConfig) -> list[dict[str, Any]]:
    """Rules of ``groups`` (the eligible ones); all groups count as 'the others'."""
    sizes = _mined_sizes(conversations)
    total = sum(sizes.values())
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in attributes:
        by_pair[(row["attribute"], row["direction"])].append(row)
    rules = []
    for group in groups:
        group_rules = []
        for (attribute, direction), rows in sorted(by_pair.items()):
            mine = [r for r in rows if r["group"] == group]
            support = len({r["conversation_id"] for r in mine})
            other = len({r["conversation_id"] for r in rows if r["group"] != group})
            n_group, n_other = sizes[group], total - sizes[group]
            if support < config.min_support or n_group == 0:
                continue
            lift = smoothed_rate(support, n_group) / smoothed_rate(other, n_other)
            if lift < config.min_lift:
                continue
            evidence, sources = _evidence(mine)
            words = [r["features"]["words"] for r in mine]
            group_rules.append({
                "rule_id": f"{group}|{attribute}|{direction}", "group": group,
                "attribute": attribute, "direction": direction, "support": support,
                "group_conversations": n_group, "rate": round(support / n_group, 4),
                "other_support": other, "other_conversations": n_other,
                "other_rate": round(other / n_other, 4) if n_other else None,
                "lift": round(lift, 4), "sources": sources,
                "answer_words_median": statistics.median(words) if words else None,
                "evidence": evidence,
            })
        rules.extend(_drop_conflicts(group_rules))
    rules.sort(key=lambda r: (r["group"], -r["support"], -r["lift"]))
    return rules


def eligible_groups(config: GPAConfig) -> tuple[list[str], dict[str, str]]:
    """(groups that get rubrics, largest first; {other group: why not}) from the ingest report."""
    table = read_json(stage_path(config.work_dir, "ingest_report"))["groups"]
    eligible = [g for g, row in table.items() if row["eligible"]]
    skipped = {g: row["reason"] for g, row in table.items() if not row["eligible"]}
    return eligible, skipped


def run_rules(config: GPAConfig) -> dict[str, Any]:
    """Stage 4: ``attributes.jsonl`` -> ``rules.jsonl``; returns rules per group."""
    conversations = list(read_jsonl(stage_path(config.work_dir, "ingest")))
    attributes = list(read_jsonl(stage_path(config.work_dir, "attributes")))
    groups, skipped = eligible_groups(config)
    rules = mine_rules(conversations, attributes, groups, config)
    write_jsonl(stage_path(config.work_dir, "rules"), rules)
    per_group = Counter(r["group"] for r in rules)
    return {"rules": len(rules), "per_group": {g: per_group[g] for g in groups},
            "groups_without_rules": [g for g in groups if not per_group[g]],
            "skipped_groups": skipped}
