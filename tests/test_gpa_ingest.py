"""GPA stage 1: formats, malformed conversations, groups and group maps."""

from __future__ import annotations

import json

import pytest

from gpa_fixtures import conv, small_log, write_log
from pluralign.gpa import GPAConfig, ingest, run_ingest
from pluralign.gpa.io import read_json, read_jsonl, stage_path


def config_for(tmp_path, *inputs, **overrides) -> GPAConfig:
    return GPAConfig(inputs=[str(p) for p in inputs], work_dir=str(tmp_path / "work"),
                     **overrides)


def test_small_log_groups_splits_and_small_groups(tmp_path):
    result = run_ingest(config_for(tmp_path, write_log(tmp_path)))
    assert result.counts == {"read": 11, "conversations": 11, "malformed": 0, "capped": 0}
    groups = result.groups
    assert groups["A"]["eligible"] and groups["B"]["eligible"]
    assert groups["A"]["heldout"] == 1 and groups["A"]["mine"] == 4
    assert not groups["C"]["eligible"] and "too few" in groups["C"]["reason"]
    rows = list(read_jsonl(stage_path(tmp_path / "work", "ingest")))
    assert rows[0]["messages"][2] == {"turn": 2, "role": "user",
                                      "content": "Too long, make it shorter please"}
    assert read_json(stage_path(tmp_path / "work", "ingest_report"))["groups"]["C"]["reason"]


def test_malformed_conversations_are_reported_with_file_index_and_field(tmp_path):
    good = conv("ok", "A", "hi", "hello")
    rows = [
        good,
        "not an object",
        {"id": "x1", "metadata": {"country": "A"}},
        {"id": "x2", "metadata": {"country": "A"},
         "messages": [{"role": "wizard", "content": "?"}]},
        {"id": "x3", "metadata": {"country": "A"}, "messages": [{"role": "user", "content": 5}]},
        {"id": "x4", "metadata": {}, "messages": good["messages"]},
        {"id": "x5", "metadata": {"country": "A"}, "messages": [{"role": "user", "content": "a"}]},
        dict(good),
    ]
    path = write_log(tmp_path, rows)
    result = ingest(config_for(tmp_path, path))
    fields = {(p.index, p.field) for p in result.problems}
    assert fields == {(1, "<root>"), (2, "messages"), (3, "messages[0].role"),
                      (4, "messages[0].content"), (5, "metadata.country"), (6, "messages"),
                      (7, "id")}
    assert all(p.file == str(path) for p in result.problems)
    assert result.counts["conversations"] == 1 and result.counts["malformed"] == 7


def test_jsonl_bad_line_openai_export_and_content_parts(tmp_path):
    export = {"id": "exp", "metadata": {"country": "B"}, "current_node": "n3", "mapping": {
        "n1": {"parent": None, "message": {"author": {"role": "system"},
                                           "content": {"parts": ["be nice"]}}},
        "n2": {"parent": "n1", "message": {"author": {"role": "user"},
                                           "content": {"parts": ["question?"]}}},
        "n3": {"parent": "n2", "message": {"author": {"role": "assistant"},
                                           "content": {"parts": ["answer."]}}}}}
    parts = {"id": "parts", "metadata": {"country": "B"}, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "yo"}]}
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(export) + "\n{broken\n" + json.dumps(parts) + "\n")
    result = ingest(config_for(tmp_path, path, min_conversations=1))
    assert [c["conversation_id"] for c in result.conversations] == ["exp", "parts"]
    assert [m["content"] for m in result.conversations[0]["messages"]] == ["question?", "answer."]
    assert result.conversations[1]["messages"][0]["content"] == "hi"
    assert [(p.index, p.field) for p in result.problems] == [(1, "<line>")]


def test_group_map_reports_empty_groups(tmp_path):
    mapping = tmp_path / "map.csv"
    rows = ["id,group"] + [f"{c['id']},{'X' if c['id'].startswith('a') else 'Y'}"
                           for c in small_log() if c["id"] != "c0"] + ["zzz,Empty"]
    mapping.write_text("\n".join(rows) + "\n")
    result = ingest(config_for(tmp_path, write_log(tmp_path), group_map=str(mapping)))
    assert result.groups["Empty"] == {"conversations": 0, "mine": 0, "heldout": 0,
                                      "eligible": False,
                                      "reason": "empty: no conversation belongs to this group"}
    assert [(p.index, p.field) for p in result.problems] == [(10, "group_map")]
    assert result.groups["X"]["conversations"] == 5


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="heldout_fraction"):
        GPAConfig(heldout_fraction=1.5)
    with pytest.raises(ValueError, match="top_k"):
        GPAConfig(top_k=0)


def test_shared_wildchat_sample_loads(shared_data, tmp_path):
    path = shared_data / "conversations" / "wildchat_50_sample.json"
    result = ingest(config_for(tmp_path, path))
    assert result.counts["conversations"] == 50 and not result.problems
    largest = list(result.groups)[:2]
    assert largest == ["United States", "United Kingdom"]
