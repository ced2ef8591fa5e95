"""Stage 7, GPA-FT: contrastive synthetic pairs from a rubric, then a group model.

For prompts from the group's own conversations the LLM writes one answer
that follows the rubric and one that follows its violations. A pair becomes
a :class:`GroupPreferenceExample` with the two-belief set {1: follows
rubric, 0: violates rubric} and target ``[1, 0]``, so the trainers of
``pluralign.train`` (DPO or SFT) fine-tune on it unchanged. Generation from
the fine-tuned model strips the belief marker it learnt to emit first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pluralign.data.records import Belief, GroupPreferenceExample, write_examples
from pluralign.gpa.common import StepStats, ask, clip
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.io import read_jsonl, stage_path, write_json, write_jsonl
from pluralign.gpa.prompts import bullet_list, render
from pluralign.gpa.rubrics import load_rubrics
from pluralign.llm import LLMBackend

FOLLOWS, VIOLATES = 1, 0
BELIEFS = (Belief(FOLLOWS, "follows rubric"), Belief(VIOLATES, "violates rubric"))
_MARKER = re.compile(r"^\s*\d\s*<[^>\n]{0,40}>\s*")


def strip_marker(text: str) -> str:
    """Drop a leading belief marker (``1<follows rubric>``) a GPA-FT model emits first."""
    return _MARKER.sub("", text, count=1)


def slug(group: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", group).strip("-").lower() or "group"


def pair_prompts(conversations: list[dict[str, Any]], group: str, limit: int
                 ) -> list[dict[str, Any]]:
    """User requests from the group's mined conversations: first turns, then later ones."""
    mined = [c for c in conversations if c["group"] == group and c.get("split", "mine") == "mine"]
    firsts, laters = [], []
    for conv in mined:
        users = [m for m in conv["messages"] if m["role"] == "user" and m["content"].strip()]
        for rank, message in enumerate(users):
            row = {"conversation_id": conv["conversation_id"], "turn": message["turn"],
                   "prompt": message["content"]}
            (firsts if rank == 0 else laters).append(row)
    return (firsts + laters)[:limit]


def synthesize_pairs(group: str, rubric: dict[str, Any], prompts: list[dict[str, Any]],
                     backend: LLMBackend, config: GPAConfig, stats: StepStats | None = None
                     ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(pairs, dropped counts): a follows and a violates answer per prompt."""
    stats = stats if stats is not None else StepStats()
    follows = render("follows_system", items=bullet_list([i["text"] for i in rubric["items"]]))
    violates = render("violates_system",
                      items=bullet_list([i["violation"] for i in rubric["items"]]))
    texts = [clip(p["prompt"], config.max_chars) for p in prompts]
    answers = ask(backend, texts + texts, stats, system=[follows] * len(texts)
                  + [violates] * len(texts), max_tokens=config.answer_max_tokens)
    pairs, dropped = [], {"llm failure": 0, "empty answer": 0, "identical answers": 0}
    for i, prompt in enumerate(prompts):
        good, bad = answers[i], answers[len(prompts) + i]
        if good is None or bad is None:
            dropped["llm failure"] += 1
        elif not good.strip() or not bad.strip():
            dropped["empty answer"] += 1
        elif good.strip() == bad.strip():
            dropped["identical answers"] += 1
        else:
            pairs.append({"group": group, **prompt, "prompt": texts[i], "follows": good.strip(),
                          "violates": bad.strip(), "items": [i["item_id"] for i in
                                                             rubric["items"]]})
    return pairs, dropped


def pair_record(pair: dict[str, Any]) -> GroupPreferenceExample:
    return GroupPreferenceExample(
        prompt=pair["prompt"], beliefs=BELIEFS, target_distribution=(1.0, 0.0),
        chosen_belief=FOLLOWS, rejected_belief=VIOLATES, chosen_response=pair["follows"],
        rejected_response=pair["violates"], group=pair["group"],
        question_id=f"{pair['conversation_id']}:{pair['turn']}", style="gpa-rubric",
        metadata={"conversation_id": pair["conversation_id"], "turn": pair["turn"],
                  "rubric_items": pair["items"]},
    )


def train_group_model(records_file: Path, output_dir: Path, config: GPAConfig) -> Any:
    """Fine-tune with ``pluralign.train`` (DPO or SFT, LoRA) on the group's records."""
    from pluralign.models import ModelConfig
    from pluralign.train.api import train
    from pluralign.train.config import TrainConfig

    # The stage re-runs from scratch (overwrite: it replaces its own earlier run there). Pairs
    # built from long answers may not fit ft_max_length: they are left out and counted in
    # the run's run.json rather than trained on cut.
    train_config = TrainConfig(
        method=config.ft_method, train_file=str(records_file), output_dir=str(output_dir),
        model=ModelConfig(model=config.ft_model, lora_r=config.ft_lora_r,
                          lora_alpha=float(2 * max(config.ft_lora_r, 1))),
        use_chat_template=True, max_steps=config.ft_max_steps,
        per_device_train_batch_size=config.ft_batch_size, learning_rate=config.ft_learning_rate,
        max_length=config.ft_max_length, logging_steps=1, eval_on_start=False,
        save_steps=config.ft_max_steps + 1, save_total_limit=1, seed=config.seed,
        overwrite=True, too_long="drop",
    )
    return train(train_config)


def ft_groups(rubrics: dict[str, dict[str, Any]], config: GPAConfig) -> list[str]:
    """The largest rubric groups (by mined conversations behind their items) to fine-tune."""
    ranked = [g for g, r in rubrics.items() if r["items"]]
    return ranked[: config.ft_groups]


def finetune_group(group: str, rubric: dict[str, Any], conversations: list[dict[str, Any]],
                   backend: LLMBackend, config: GPAConfig, stats: StepStats
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(pairs, summary entry) of one group: pairs from its mined prompts, then its model
    in WORK/ft/GROUP (``status`` says "trained", with ``final_dir``, or why not)."""
    prompts = pair_prompts(conversations, group, config.ft_pairs_per_group)
    pairs, dropped = synthesize_pairs(group, rubric, prompts, backend, config, stats)
    entry: dict[str, Any] = {"prompts": len(prompts), "pairs": len(pairs), "dropped": dropped}
    if not pairs:
        entry["status"] = "no usable pairs: nothing to train on"
        return pairs, entry
    folder = Path(config.work_dir) / "ft" / slug(group)
    records_file = folder / "records.jsonl"
    write_examples(records_file, [pair_record(p) for p in pairs])
    result = train_group_model(records_file, folder / "run", config)
    entry.update(status="trained", records=str(records_file), final_dir=str(result.final_dir),
                 global_step=result.global_step, method=config.ft_method,
                 base_model=config.ft_model)
    return pairs, entry


def run_finetune(config: GPAConfig, backend: LLMBackend) -> dict[str, Any]:
    """Stage 7: pairs -> ``ft_pairs.jsonl``, records -> ``ft_records.jsonl``, models -> ft/."""
    rubrics = load_rubrics(config)
    conversations = list(read_jsonl(stage_path(config.work_dir, "ingest")))
    stats, all_pairs, summary = StepStats(), [], {}
    for group in ft_groups(rubrics, config):
        pairs, summary[group] = finetune_group(group, rubrics[group], conversations, backend,
                                               config, stats)
        all_pairs += pairs
    write_jsonl(stage_path(config.work_dir, "pairs"), all_pairs)
    write_jsonl(stage_path(config.work_dir, "records"),
                [pair_record(p).to_dict() for p in all_pairs])
    report = {"groups": summary, "llm": stats.as_dict()}
    write_json(stage_path(config.work_dir, "finetune"), report)
    return report
