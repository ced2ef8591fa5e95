"""Running the models: a local model's readings and generations, the k-shot baseline.

:func:`evaluate_model` loads one model, prompts it in the format it was
trained on, reads its belief distributions, generates, measures reward margins
against a reference model, then scores (:mod:`pluralign.eval.scoring`);
:func:`kshot_evaluation` does the same for the k-shot prompting baseline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pluralign.beliefs.group_context import check_group_lines
from pluralign.data.records import (
    GroupPreferenceExample,
    iter_numbered_examples,
    read_examples,
)
from pluralign.eval.config import EvalConfig
from pluralign.eval.generate import Generation
from pluralign.eval.predictions import ModelEvaluation, PromptGroup, PromptPrediction
from pluralign.eval.prompting import group_context_prompts, in_context_prompts, kshot_baseline
from pluralign.eval.scoring import judge_predictions, score_predictions, similarity_predictions
from pluralign.runs import METRICS_FILE


def run_dir_of(ref: str) -> Path | None:
    """The run folder holding ``metrics.jsonl`` for a model folder (itself or its parent)."""
    path = Path(ref)
    for candidate in (path, path.parent):
        if (candidate / METRICS_FILE).is_file():
            return candidate
    return None


def read_curves(ref: str) -> list[dict[str, Any]] | None:
    """The run's logged records (``metrics.jsonl``) for its training curves; None off a run."""
    run = run_dir_of(ref)
    if run is None:
        return None
    with open(run / METRICS_FILE) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def predict_local(model: Any, tokenizer: Any, groups: Sequence[PromptGroup], fmt: Any,
                  config: EvalConfig) -> list[PromptPrediction]:
    """Reading, sampled estimate and belief-first generations of a local model."""
    from pluralign.beliefs.readout import belief_distributions
    from pluralign.beliefs.tokenize import belief_marker_ids, encode_prompt
    from pluralign.eval.generate import generate_beliefs_first, sampled_belief_distribution

    prompt_ids = [encode_prompt(tokenizer, g.prompt, fmt, context=g.context, beliefs=g.beliefs,
                                group=g.group) for g in groups]
    markers = [belief_marker_ids(tokenizer, list(g.class_ids), fmt.marker) for g in groups]
    reading = belief_distributions(model, prompt_ids, markers, pad_token_id=tokenizer.pad_token_id,
                                   batch_size=config.batch_size, progress=config.progress)
    estimate = None
    if config.belief_samples:
        estimate = sampled_belief_distribution(
            model, tokenizer, prompt_ids, markers, n=config.belief_samples,
            # A greedy run still gets a sampled estimate at T=1 (at T=0 it would be one-hot).
            temperature=config.temperature or 1.0, seed=config.seed,
            batch_size=config.batch_size)
    generations: list[list[Generation]] = [[] for _ in groups]
    if config.n_samples:
        generations = generate_beliefs_first(
            model, tokenizer, [g.prompt for g in groups], [g.beliefs for g in groups], fmt=fmt,
            n=config.n_samples, options=config.sampling(),
            batch_size=config.generation_batch_size, progress=config.progress,
            contexts=[g.context for g in groups], groups=[g.group for g in groups])
    after = (marker_mass_after_descriptions(model, tokenizer, groups, fmt,
                                            batch_size=config.batch_size)
             if fmt.description_template is not None else [None] * len(groups))
    return [
        PromptPrediction(
            group=g, predicted=reading.probs[i], mass=reading.mass[i],
            sampled=estimate.probs[i] if estimate else None,
            sampled_counts=estimate.counts[i] if estimate else None,
            off_belief=estimate.off_belief[i] if estimate else None,
            generations=generations[i], after_description_mass=after[i])
        for i, g in enumerate(groups)
    ]


def marker_mass_after_descriptions(model: Any, tokenizer: Any, groups: Sequence[PromptGroup],
                                   fmt: Any, *, batch_size: int = 16) -> list[float]:
    """Per prompt, the mean over its beliefs of the next-token mass on any belief marker
    (or the separator) right after ``prompt + marker + description``.

    A clean model puts almost none there (a response follows); a model trained
    on a format whose belief slot follows the token that also closes the
    description puts much of it there, and writes ``4<Yes>4<Yes>...``.
    """
    from pluralign.beliefs.readout import belief_distributions
    from pluralign.beliefs.tokenize import (
        belief_marker_ids,
        build_sequence,
        encode_prompt,
        separator_id,
    )

    rows, markers, owners = [], [], []
    for i, g in enumerate(groups):
        prompt_ids = encode_prompt(tokenizer, g.prompt, fmt, context=g.context,
                                   beliefs=g.beliefs, group=g.group)
        ids = belief_marker_ids(tokenizer, list(g.class_ids), fmt.marker)
        separator = separator_id(tokenizer, fmt)
        watched = ids if separator is None else [*ids, separator]
        for b in g.beliefs:
            sequence = build_sequence(tokenizer, prompt_ids, b.class_id, b.description, "", fmt,
                                      beliefs=g.beliefs)
            rows.append(sequence["input_ids"][: sequence["belief_span"][1]])
            markers.append(watched)
            owners.append(i)
    reading = belief_distributions(model, rows, markers, pad_token_id=tokenizer.pad_token_id,
                                   batch_size=batch_size)
    sums, counts = [0.0] * len(groups), [0] * len(groups)
    for owner, mass in zip(owners, reading.mass, strict=True):
        sums[owner] += mass
        counts[owner] += 1
    return [total / n for total, n in zip(sums, counts, strict=True)]


def _margins(model: Any, tokenizer: Any, fmt: Any, info: dict[str, Any],
             records: Sequence[GroupPreferenceExample], config: EvalConfig) -> Any:
    """Reward margins against ``config.ref_model``, with the pairing the model's format file
    (``info``) records unless the config names one."""
    from pluralign.eval.margins import pairing_from_info, reward_margins
    from pluralign.models import load_model

    assert config.ref_model is not None
    ref_model, _ = load_model(config.ref_model, device=config.device,
                              trust_remote_code=config.trust_remote_code)
    pairing = pairing_from_info(info) if config.pairing == "auto" else config.pairing
    subset = spread_subset(list(records), config.max_pairs)
    return reward_margins(model, ref_model, tokenizer, subset, fmt=fmt, pairing=pairing,
                          beta=config.beta, batch_size=max(1, config.batch_size // 2),
                          seed=config.seed, progress=config.progress)


def spread_subset(records: list[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` of ``records``, spread evenly over the list (None: all). Record files
    hold each prompt's records together, so the first ``limit`` would cover only the first
    prompts (256 of a review file's 645 test pairs are its first two movies)."""
    if limit is None or limit >= len(records):
        return records
    return [records[i * len(records) // limit] for i in range(limit)]


def _autocast(model: Any, enabled: bool) -> Any:
    """bfloat16 autocast on the model's device type when ``enabled``, else a no-op."""
    import torch

    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


def evaluate_model(ref: str, label: str, groups: Sequence[PromptGroup],
                   records: Sequence[GroupPreferenceExample], config: EvalConfig,
                   judge: Any, embedder: Any = None) -> ModelEvaluation:
    """Load ``ref`` and measure every metric on ``groups``."""
    from pluralign.eval.generate import load_sequence_format, untrained_format
    from pluralign.models import load_model
    from pluralign.runs import read_format_info

    model, tokenizer = load_model(ref, device=config.device,
                                  trust_remote_code=config.trust_remote_code)
    if hasattr(model, "merge_and_unload"):
        # Inference only: folding LoRA into the weights removes its extra ops at every step.
        model = model.merge_and_unload()
    # A model pluralign did not train is prompted in the format the records name (reviews).
    fmt = load_sequence_format(ref, default=untrained_format(records))
    if fmt.names_group and config.data:  # a group the line cannot write: file, line, field
        check_group_lines(iter_numbered_examples(config.data), config.data, fmt)
    info = read_format_info(ref)
    method = info.get("method")
    # An in-context fine-tuned model is prompted as it trained: shots before <Q>.
    groups, records = in_context_prompts(groups, records, info, fmt.marker,
                                         pool_file=config.kshot_pool, seed=config.seed)
    # A group-context model sees a few of the group's answers to other questions first.
    groups, records = group_context_prompts(groups, records, info,
                                            pool_file=config.group_context_pool,
                                            seed=config.seed, data=config.data)
    with _autocast(model, config.bf16):
        predictions = predict_local(model, tokenizer, groups, fmt, config)
        margins = (_margins(model, tokenizer, fmt, info, records, config)
                   if config.ref_model else None)
    judge_predictions(predictions, judge)
    similarity_predictions(predictions, embedder)
    return ModelEvaluation(label, ref, method, predictions,
                           score_predictions(predictions, seed=config.seed), margins,
                           read_curves(ref))


def kshot_evaluation(groups: Sequence[PromptGroup], records: Sequence[GroupPreferenceExample],
                     config: EvalConfig, judge: Any, embedder: Any) -> ModelEvaluation:
    """The k-shot prompting baseline, scored as a trained model is."""
    assert config.kshot_pool is not None  # EvalConfig requires it with kshot
    asked = {(g.prompt, g.group) for g in groups}
    subset = [r for r in records if (r.prompt, r.group) in asked]
    predictions = kshot_baseline(
        subset, model=config.kshot_model, base_url=config.kshot_base_url,
        api_key_env=config.kshot_api_key_env, k=config.kshot, n=config.n_samples,
        pool=read_examples(config.kshot_pool), seed=config.seed, options=config.sampling(),
        device=config.device)
    judge_predictions(predictions, judge)
    similarity_predictions(predictions, embedder)
    return ModelEvaluation(f"{config.kshot}-shot {Path(config.kshot_model).name}",
                           config.kshot_model, f"{config.kshot}-shot", predictions,
                           score_predictions(predictions, seed=config.seed))


