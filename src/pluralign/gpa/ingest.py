"""Stage 1: read conversation logs, check them, and assign each conversation to a group.

Accepted layouts: a JSON list, JSONL, or an export object holding a list under
``conversations``/``data``/``items``. Accepted conversation formats: the
common ``messages`` list (WildChat, OpenAI fine-tuning files; also
``conversation``), ShareGPT ``conversations`` (``from``/``value``) and the
ChatGPT data export (``mapping`` tree walked back from ``current_node``).
A conversation that cannot be used is reported with its file, index and
field (``problems`` in the report), never dropped silently.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pluralign.gpa.config import GPAConfig
from pluralign.gpa.io import stage_path, write_json, write_jsonl

#: Role spellings of other exports, mapped to chat roles.
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                "chatbot": "assistant"}
#: Roles that are valid but carry no user/assistant exchange: left out of the turns.
SKIPPED_ROLES = {"system", "tool", "function", "developer"}


@dataclass(frozen=True)
class IngestProblem:
    """Why one conversation was not used: where it is and which field is wrong."""

    file: str
    index: int
    field: str
    message: str


@dataclass
class IngestResult:
    """Well-formed conversations (dicts, the ``conversations.jsonl`` rows) and the report."""

    conversations: list[dict[str, Any]]
    problems: list[IngestProblem] = field(default_factory=list)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {"counts": self.counts, "groups": self.groups,
                "problems": [asdict(p) for p in self.problems]}


class _Bad(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def read_log_file(path: str | Path) -> list[Any]:
    """The raw conversation objects of one file (JSON list/object or JSONL)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # JSONL: a bad line becomes a placeholder, so it is reported with its index.
        data = []
        for line in text.splitlines():
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    data.append(_Unreadable(exc.msg))
    if isinstance(data, Mapping):
        for key in ("conversations", "data", "items"):
            if isinstance(data.get(key), list):
                return list(data[key])
        return [data]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of conversations, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class _Unreadable:
    reason: str


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts or export "parts"
        parts = [p if isinstance(p, str) else p.get("text") if isinstance(p, Mapping) else None
                 for p in content]
        if all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    raise _Bad(where, f"content must be text or a list of text parts, got {content!r:.60}")


def _export_messages(mapping: Mapping[str, Any], current: str | None) -> list[dict[str, Any]]:
    """ChatGPT export: follow parents from the current node, then reverse."""
    chain, node_id, seen = [], current, set()
    while node_id and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        node = mapping[node_id]
        message = node.get("message") if isinstance(node, Mapping) else None
        if isinstance(message, Mapping):
            content = message.get("content") or {}
            parts = content.get("parts", content.get("text", "")) if isinstance(
                content, Mapping) else content
            chain.append({"role": (message.get("author") or {}).get("role"), "content": parts})
        node_id = node.get("parent") if isinstance(node, Mapping) else None
    return chain[::-1]


def _raw_messages(item: Mapping[str, Any]) -> tuple[list[Any], str]:
    for key in ("messages", "conversation"):
        if key in item:
            if not isinstance(item[key], list):
                raise _Bad(key, f"must be a list, got {type(item[key]).__name__}")
            return item[key], key
    if isinstance(item.get("conversations"), list):
        return [{"role": m.get("from"), "content": m.get("value")} if isinstance(m, Mapping)
                else m for m in item["conversations"]], "conversations"
    if isinstance(item.get("mapping"), Mapping):
        current = item.get("current_node") or next(reversed(list(item["mapping"])), None)
        return _export_messages(item["mapping"], current), "mapping"
    raise _Bad("messages", "no messages list (messages, conversation, conversations, mapping)")


def parse_messages(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """User/assistant turns ``{turn, role, content}``; ``turn`` indexes the original list."""
    raw, key = _raw_messages(item)
    turns = []
    for i, message in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(message, Mapping):
            raise _Bad(where, f"a message must be an object, got {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str):
            raise _Bad(f"{where}.role", f"missing or not text: {role!r}")
        role = ROLE_ALIASES.get(role.lower(), role.lower())
        if role in SKIPPED_ROLES:
            continue
        if role not in ("user", "assistant"):
            raise _Bad(f"{where}.role", f"unknown role {role!r}")
        if message.get("content") is None:
            raise _Bad(f"{where}.content", "missing")
        turns.append({"turn": i, "role": role,
                      "content": _content_text(message["content"], f"{where}.content")})
    roles = {t["role"] for t in turns}
    if not {"user", "assistant"} <= roles:
        raise _Bad(key, "needs at least one user and one assistant message")
    return turns


def dotted_get(item: Mapping[str, Any], path: str) -> Any:
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def load_group_map(path: str | Path) -> dict[str, str]:
    """Conversation id -> group from a JSON object or a CSV with columns id,group."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if rows and not {"id", "group"} <= set(rows[0]):
            raise ValueError(f"{path}: a CSV group map needs the columns id and group")
        return {row["id"]: row["group"] for row in rows}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a JSON group map must be an object {{id: group}}")
    return {str(k): str(v) for k, v in data.items()}


def _conversation_id(item: Mapping[str, Any], file: Path, index: int) -> str:
    for key in ("id", "conversation_id", "conversation_hash"):
        if isinstance(item.get(key), (str, int)) and str(item[key]):
            return str(item[key])
    return f"{file.stem}:{index}"


def _one(item: Any, file: Path, index: int, config: GPAConfig,
         group_map: Mapping[str, str] | None) -> dict[str, Any]:
    if isinstance(item, _Unreadable):
        raise _Bad("<line>", f"not JSON: {item.reason}")
    if not isinstance(item, Mapping):
        raise _Bad("<root>", f"a conversation must be an object, got {type(item).__name__}")
    cid = _conversation_id(item, file, index)
    turns = parse_messages(item)[: config.max_turns]
    group_source = "group_map" if group_map is not None else config.group_field
    group = group_map.get(cid) if group_map is not None else dotted_get(item, config.group_field)
    if group is None or not str(group).strip():
        raise _Bad(group_source, f"no group for conversation {cid!r}")
    metadata = item.get("metadata") if isinstance(item.get("metadata"), Mapping) else {}
    return {"conversation_id": cid, "group": str(group).strip(), "source_file": str(file),
            "source_index": index, "messages": turns, "metadata": dict(metadata)}


def seeded_order(conversations: Iterable[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """``conversations`` in a seeded pseudo-random order that depends on their ids only
    (not on file order), so a conversation keeps its place when others are added."""
    return sorted(conversations, key=lambda c: hashlib.sha256(
        f"{seed}:{c['conversation_id']}".encode()).hexdigest())


def _assign_splits(conversations: list[dict[str, Any]], fraction: float, seed: int) -> None:
    """Hold out a seeded share of each group (at least one conversation of groups of 2+)."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for conv in conversations:
        by_group.setdefault(conv["group"], []).append(conv)
    for members in by_group.values():
        order = seeded_order(members, seed)
        n_out = round(len(order) * fraction)
        if fraction > 0 and len(order) >= 2:
            n_out = min(max(n_out, 1), len(order) - 1)
        for i, conv in enumerate(order):
            conv["split"] = "heldout" if i < n_out else "mine"


def group_table(conversations: Iterable[dict[str, Any]], config: GPAConfig,
                expected: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Per group: sizes, and whether it gets a rubric (with the reason when not)."""
    counts = Counter(c["group"] for c in conversations)
    mined, heldout = Counter(), Counter()
    for c in conversations:
        # Counted apart: a data-size share leaves some conversations neither (unused).
        mined[c["group"]] += c.get("split") == "mine"
        heldout[c["group"]] += c.get("split") == "heldout"
    table = {}
    for name in sorted(set(counts) | set(expected), key=lambda g: (-counts[g], g)):
        row = {"conversations": counts[name], "mine": mined[name],
               "heldout": heldout[name], "eligible": True, "reason": None}
        if counts[name] == 0:
            row.update(eligible=False, reason="empty: no conversation belongs to this group")
        elif counts[name] < config.min_conversations:
            row.update(eligible=False, reason=f"too few conversations ({counts[name]} < "
                                              f"min_conversations {config.min_conversations})")
        table[name] = row
    eligible = [g for g, row in table.items() if row["eligible"]]
    for name in eligible[config.max_groups:] if config.max_groups else []:
        table[name].update(eligible=False, reason=f"not among the {config.max_groups} largest")
    return table


def ingest(config: GPAConfig) -> IngestResult:
    """Read ``config.inputs``; every unusable conversation becomes an :class:`IngestProblem`."""
    if not config.inputs:
        raise ValueError("inputs: name at least one conversation log file")
    group_map = load_group_map(config.group_map) if config.group_map else None
    conversations, problems, seen = [], [], set()
    for name in config.inputs:
        path = Path(name)
        for index, item in enumerate(read_log_file(path)):
            try:
                conv = _one(item, path, index, config, group_map)
                if conv["conversation_id"] in seen:
                    raise _Bad("id", f"duplicate conversation id {conv['conversation_id']!r}")
            except _Bad as bad:
                problems.append(IngestProblem(str(path), index, bad.field, str(bad)))
                continue
            seen.add(conv["conversation_id"])
            conversations.append(conv)
    capped = 0
    if config.max_conversations is not None and len(conversations) > config.max_conversations:
        capped = len(conversations) - config.max_conversations
        conversations = conversations[: config.max_conversations]
    _assign_splits(conversations, config.heldout_fraction, config.seed)
    counts = {"read": len(conversations) + len(problems) + capped,
              "conversations": len(conversations), "malformed": len(problems),
              "capped": capped}
    groups = group_table(conversations, config, set(group_map.values()) if group_map else ())
    return IngestResult(conversations, problems, groups, counts)


def unusable_reason(result: IngestResult, config: GPAConfig) -> str | None:
    """Why no later stage could produce anything from ``result`` (None: it can)."""
    report = f"(details: {stage_path(config.work_dir, 'ingest_report')})"
    if not result.conversations:
        first = result.problems[0] if result.problems else None
        where = (f"; first problem: {first.file}[{first.index}] {first.field}: {first.message}"
                 if first else "")
        return (f"inputs: no usable conversation in {', '.join(config.inputs)} "
                f"({result.counts['malformed']} malformed{where}) {report}")
    if not any(row["eligible"] for row in result.groups.values()):
        sizes = ", ".join(f"{g} {row['conversations']}" for g, row in
                          list(result.groups.items())[:3])
        return (f"min_conversations: no group has {config.min_conversations} or more "
                f"conversations (largest: {sizes}); lower min_conversations or map "
                f"conversations to fewer groups {report}")
    return None


def run_ingest(config: GPAConfig) -> IngestResult:
    """Stage 1 with its outputs: ``conversations.jsonl`` and ``ingest_report.json``.

    Raises ValueError (after writing both files) when no group can get a rubric, so a
    pipeline stops here with the reason instead of producing empty files downstream.
    """
    result = ingest(config)
    write_jsonl(stage_path(config.work_dir, "ingest"), result.conversations)
    write_json(stage_path(config.work_dir, "ingest_report"), result.report())
    reason = unusable_reason(result, config)
    if reason:
        raise ValueError(reason)
    return result
