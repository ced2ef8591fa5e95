"""``evaluate(config)``: every metric for one or more models on a record file, plus a report.

Per model: the one-forward-pass belief distribution (JSD), the sampled
estimate from ``belief_samples`` first tokens (JSD beside it), ``n_samples``
belief-first generations per prompt (CBC), judged (BPC) and compared with the
reference response of the generated belief (RS); reward margins against a
reference model when one is given; training curves when the model folder
belongs to a run. Writes ``eval.json``, ``predictions.jsonl`` and the report
(``report.md``, ``report.html``) into ``config.out``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pluralign.config import YamlConfig, reject_non_finite
from pluralign.data.records import Belief, GroupPreferenceExample, read_examples
from pluralign.eval.generate import Generation, SamplingOptions, starts_with_marker
from pluralign.eval.judges import JudgeItem
from pluralign.eval.metrics import (
    MetricResult,
    bpc,
    cbc,
    jsd,
    mean_with_interval,
    proportion_with_interval,
    response_similarity,
)
from pluralign.eval.reference import reference_lines
from pluralign.registry import JUDGES, UnknownNameError

logger = logging.getLogger(__name__)

#: The run file whose curves the report draws (``pluralign.train.metrics.METRICS_FILE``).
RUN_METRICS_FILE = "metrics.jsonl"


@dataclass
class EvalConfig(YamlConfig):
    """What to evaluate, on which records, with which judge and sampling settings."""

    models: list[str] = field(default_factory=list, metadata={
        "help": "Model references to evaluate side by side (run folders such as runs/gdpo/final, "
                "keywords, local folders)."})
    data: str = field(default="", metadata={"help": "JSONL record file to evaluate on."})
    out: str = field(default="eval", metadata={
        "help": "Output folder for eval.json, predictions.jsonl, report.md and report.html."})
    judge: str = field(default="embedding", metadata={
        "help": "BPC judge (`pluralign ls judges`): embedding (offline), llm (the paper's "
                "prompt via the LLM backend), rating (reviews, offline rating buckets) or "
                "rating-llm (reviews, the paper's appendix-H three-class rating prompt via the "
                "LLM backend; the judge_* options below apply to it as to llm)."})
    judge_model: str = field(default="gpt-4o", metadata={
        "help": "llm and rating-llm judges: the model name the server knows (or a local model "
                "reference when judge_backend is hf)."})
    judge_backend: str = field(default="openai", metadata={
        "help": "llm judge: LLM backend kind (openai or hf)."})
    judge_base_url: str | None = field(default=None, metadata={
        "help": "llm judge: base URL of the OpenAI-compatible server."})
    judge_api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "llm judge: NAME of the environment variable holding the API key."})
    judge_cache_dir: str | None = field(default=None, metadata={
        "help": "llm judge: answer cache folder (re-runs are answered from it)."})
    judge_min_similarity: float = field(default=0.3, metadata={
        "help": "embedding judge: a response less similar (cosine) than this to every "
                "reference response expresses no belief and is judged no."})
    embedder: str | None = field(default=None, metadata={
        "help": "Sentence-transformers folder for RS and the embedding judge (default: the "
                "bundled all-MiniLM-L6-v2)."})
    n_samples: int = field(default=4, metadata={
        "help": "Belief-first generations per prompt (CBC, BPC, RS); 0 reads the belief "
                "distributions only (JSD)."})
    belief_samples: int = field(default=64, metadata={
        "help": "First-token samples per prompt for the sampled belief estimate (0: skip)."})
    temperature: float = field(default=1.0, metadata={
        "help": "Sampling temperature of the belief markers (and of the responses where "
                "response_temperature is None); 0 decodes greedily."})
    response_temperature: float | None = field(default=None, metadata={
        "help": "Temperature of the description and response written after the drawn "
                "belief (None: temperature; 0: greedy). Beliefs are still drawn at "
                "temperature, so JSD and the sampled belief estimate do not change."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass of responses."})
    bf16: bool = field(default=False, metadata={
        "help": "Run the models' forwards under bfloat16 autocast: about twice as fast on GPUs "
                "and on CPUs with native bf16 (AVX512-BF16, AMX), much slower on other CPUs. "
                "Readings move by about 1e-3; the demo turns it on where it is fast."})
    max_new_tokens: int = field(default=64, metadata={
        "help": "Most tokens generated after the belief marker."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling and bootstrap intervals."})
    max_prompts: int | None = field(default=None, metadata={
        "help": "Evaluate only the first N distinct prompts (None: all)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per forward pass."})
    generation_batch_size: int = field(default=64, metadata={
        "help": "Rows per generate call. Each decoding step reads every weight once whatever "
                "the batch, so on a CPU a larger batch is much cheaper per row."})
    device: str = field(default="auto", metadata={"help": "Device of the models (auto, cpu...)."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow a model folder's own modelling code (auto_map) to run; off: such a "
                "model fails to load."})
    ref_model: str | None = field(default=None, metadata={
        "help": "Reference model (e.g. runs/sft/final) for reward margins; None skips them."})
    pairing: Literal["auto", "gdpo", "dpo"] = field(default="auto", metadata={
        "help": "Pairing of the margins: gdpo (rejected carries the chosen belief), dpo, or "
                "auto (from the model's training method)."})
    beta: float = field(default=0.1, metadata={"help": "beta of the reward margins."})
    max_pairs: int | None = field(default=256, metadata={
        "help": "Records used for reward margins (None: all)."})
    kshot: int = field(default=0, metadata={
        "help": "Also evaluate a k-shot prompting baseline with this many shots (0: none)."})
    kshot_model: str = field(default="smollm2-135m", metadata={
        "help": "k-shot baseline model: a local reference, or a server model name with "
                "kshot_base_url."})
    kshot_base_url: str | None = field(default=None, metadata={
        "help": "k-shot baseline through this OpenAI-compatible server (None: local model)."})
    kshot_api_key_env: str = field(default="", metadata={
        "help": "k-shot baseline: NAME of the API key variable ('' for servers without keys)."})
    kshot_pool: str | None = field(default=None, metadata={
        "help": "JSONL of training records the shots come from (the training split, never the "
                "evaluated file; a shot never asks its target's question): required with kshot; "
                "for in-context fine-tuned (icf) models it replaces the training file their run "
                "recorded."})
    plot_questions: int = field(default=4, metadata={
        "help": "Questions whose predicted vs target distribution the report draws."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if self.n_samples < 0:
            raise ValueError(f"n_samples: must be >= 0 (0: belief distributions only), got "
                             f"{self.n_samples}")
        for name in ("batch_size", "generation_batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.response_temperature is not None and self.response_temperature < 0:
            raise ValueError(f"response_temperature: must be >= 0 (0: greedy), got "
                             f"{self.response_temperature}")
        if self.belief_samples < 0 or self.kshot < 0:
            raise ValueError("belief_samples and kshot must be >= 0")
        if self.kshot and not self.kshot_pool:
            raise ValueError("kshot_pool: the k-shot baseline draws its shots from the training "
                             "split; name it (--kshot-pool data/train.jsonl)")
        if self.kshot_pool and self.data and Path(self.kshot_pool).resolve() == Path(
                self.data).resolve():
            raise ValueError(f"kshot_pool: {self.kshot_pool} is the evaluated file itself; "
                             "shots come from the training split")
        if not -1.0 <= self.judge_min_similarity <= 1.0:
            raise ValueError(f"judge_min_similarity: a cosine similarity in [-1, 1], got "
                             f"{self.judge_min_similarity}")
        try:  # fail before any model loads, with the known names
            JUDGES.get(self.judge)
        except UnknownNameError as exc:
            raise ValueError(f"judge: {exc}") from None

    def sampling(self) -> SamplingOptions:
        return SamplingOptions(temperature=self.temperature, top_p=self.top_p,
                               max_new_tokens=self.max_new_tokens, seed=self.seed,
                               response_temperature=self.response_temperature)


# ----------------------------------------------------------------------- prompts


@dataclass
class PromptGroup:
    """One distinct prompt of the records: its beliefs, p* and reference responses per belief."""

    prompt: str
    group: str
    question_id: str | None
    beliefs: tuple[Belief, ...]
    target: list[float]
    references: dict[int, list[str]] = field(default_factory=dict)
    #: Text before the prompt's template (in-context examples; see GroupPreferenceExample).
    context: str | None = None

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(b.class_id for b in self.beliefs)

    def description(self, class_id: int | None) -> str:
        for b in self.beliefs:
            if b.class_id == class_id:
                return b.description
        return ""

    def reference_for(self, class_id: int | None) -> str | None:
        refs = self.references.get(class_id) if class_id is not None else None
        return refs[0] if refs else None


def group_prompts(records: Sequence[GroupPreferenceExample]) -> list[PromptGroup]:
    """Distinct (prompt, group) pairs in file order, with every belief's reference responses."""
    groups: dict[tuple[str, str], PromptGroup] = {}
    for r in records:
        key = (r.prompt, r.group)
        if key not in groups:
            groups[key] = PromptGroup(r.prompt, r.group, r.question_id, r.beliefs,
                                      list(r.target_distribution), context=r.context)
        refs = groups[key].references
        for class_id, text in ((r.chosen_belief, r.chosen_response),
                               (r.rejected_belief, r.rejected_response)):
            if text not in refs.setdefault(class_id, []):
                refs[class_id].append(text)
    return list(groups.values())


@dataclass
class PromptPrediction:
    """A model's predictions for one prompt, and their judgements."""

    group: PromptGroup
    predicted: list[float] | None  #: None: an API baseline whose samples held no belief
    mass: float | None = None
    sampled: list[float] | None = None
    sampled_counts: list[int] | None = None
    off_belief: int | None = None
    generations: list[Generation] = field(default_factory=list)
    #: Mean full-vocabulary mass on belief markers right after each belief's description
    #: (a format leak when high); None where not measured (API baselines).
    after_description_mass: float | None = None
    verdicts: list[str] = field(default_factory=list)
    similarities: list[float | None] = field(default_factory=list)
    api_errors: int = 0

    def to_dict(self, model: str) -> dict[str, Any]:
        g = self.group
        jsd_value = (None if self.predicted is None
                     else float(jsd(self.predicted, g.target).value))
        generations = []
        for i, gen in enumerate(self.generations):
            row = gen.to_dict()
            row["verdict"] = self.verdicts[i] if i < len(self.verdicts) else None
            row["rs"] = self.similarities[i] if i < len(self.similarities) else None
            generations.append(row)
        return {
            "model": model, "prompt": g.prompt, "group": g.group, "question_id": g.question_id,
            "beliefs": [{"class_id": b.class_id, "description": b.description} for b in g.beliefs],
            "target": g.target, "predicted": self.predicted, "jsd": jsd_value, "mass": self.mass,
            "sampled": self.sampled, "sampled_counts": self.sampled_counts,
            "off_belief": self.off_belief,
            "after_description_mass": self.after_description_mass, "generations": generations,
            **({"context": g.context} if g.context is not None else {}),
        }


# ----------------------------------------------------------------------- scoring


def judge_predictions(predictions: Sequence[PromptPrediction], judge: Any) -> None:
    """Fill ``verdicts`` of every generation with one call of the judge.

    Empty, whitespace-only and unparsed responses express no belief: they get
    the verdict "empty" without being sent to the judge, and BPC counts them.
    """
    slots, items = [], []
    for p in predictions:
        p.verdicts = ["empty"] * len(p.generations)
        for j, g in enumerate(p.generations):
            if g.expresses_nothing:
                continue
            slots.append((p, j))
            items.append(JudgeItem(question=p.group.prompt, class_id=g.class_id,
                                   belief=p.group.description(g.class_id), response=g.response,
                                   references=p.group.references))
    verdicts = judge.judge(items) if items else []
    for (p, j), verdict in zip(slots, verdicts, strict=True):
        p.verdicts[j] = verdict


def similarity_predictions(predictions: Sequence[PromptPrediction], embedder: Any = None) -> None:
    """Fill ``similarities``: RS of each response against the reference of its belief.

    An empty, whitespace-only or unparsed response scores 0 (it says nothing
    like the reference); only a belief without any reference response is left
    unscored (None).
    """
    slots, generated, references = [], [], []
    for p in predictions:
        p.similarities = [None] * len(p.generations)
        for j, g in enumerate(p.generations):
            reference = p.group.reference_for(g.class_id)
            if reference is None:
                continue
            if g.expresses_nothing:
                p.similarities[j] = 0.0
            else:
                slots.append((p, j))
                generated.append(g.response)
                references.append(reference)
    if not slots:
        return
    result = response_similarity(generated, references, embedder)
    assert result.per_item is not None
    for (p, j), value in zip(slots, result.per_item, strict=True):
        p.similarities[j] = float(value)


def _jsd_where_read(name: str, predicted: Sequence[Sequence[float] | None],
                    targets: Sequence[Sequence[float]], seed: int) -> MetricResult:
    """JSD over the prompts that have a distribution; the others are counted, not filled in.

    ``per_item`` keeps one entry per prompt (NaN where there was none), so
    plots stay aligned with the questions.
    """
    kept = [i for i, p in enumerate(predicted) if p is not None]
    counts = {"prompts": len(kept), "prompts_without_belief_sample": len(predicted) - len(kept)}
    per_item = np.full(len(predicted), np.nan)
    if not kept:
        return MetricResult(name, float("nan"), 0, float("nan"), float("nan"), counts, per_item)
    result = jsd([predicted[i] for i in kept], [targets[i] for i in kept], seed=seed)
    per_item[kept] = result.per_item
    return MetricResult(name, result.value, result.n, result.ci_low, result.ci_high, counts,
                        per_item)


def score_predictions(predictions: Sequence[PromptPrediction], *, seed: int = 0
                      ) -> dict[str, MetricResult]:
    """JSD (reading and sampled), CBC, BPC and RS from filled-in predictions."""
    targets = [p.group.target for p in predictions]
    metrics = {"jsd": _jsd_where_read("jsd", [p.predicted for p in predictions], targets, seed)}
    if predictions and any(p.sampled_counts is not None for p in predictions):
        metrics["jsd_sampled"] = _jsd_where_read(
            "jsd_sampled", [p.sampled for p in predictions], targets, seed)
    gens = [g for p in predictions for g in p.generations]
    if gens:  # n_samples=0 reads belief distributions only
        metrics.update(_generation_metrics(predictions, gens, seed))
    masses = [p.after_description_mass for p in predictions
              if p.after_description_mass is not None]
    if masses:
        mean, low, high = mean_with_interval(masses, seed=seed)
        metrics["marker_mass_after_description"] = MetricResult(
            "marker_mass_after_description", mean, len(masses), low, high,
            {"prompts": len(masses)}, np.asarray(masses))
    return metrics


def _generation_metrics(predictions: Sequence[PromptPrediction], gens: Sequence[Generation],
                        seed: int) -> dict[str, MetricResult]:
    """CBC, BPC, RS and the share of responses that open with a marker."""
    metrics: dict[str, MetricResult] = {}
    described = [g for g in gens if g.has_description]
    if described:  # reviews ({rating}{review}) have no description to agree with
        metrics["cbc"] = cbc([g.class_id for g in described],
                             [g.description_class for g in described])
    metrics["bpc"] = bpc([v for p in predictions for v in p.verdicts])
    sims = [s for p in predictions for s in p.similarities if s is not None]
    mean, low, high = mean_with_interval(sims, seed=seed)
    missing = sum(s is None for p in predictions for s in p.similarities)
    empty = sum(g.expresses_nothing for g in gens)
    metrics["rs"] = MetricResult("rs", mean, len(sims), low, high,
                                 {"pairs": len(sims), "skipped": missing, "empty": empty},
                                 np.asarray(sims))
    metrics["marker_start"] = marker_start_share(gens)
    return metrics


def marker_start_share(generations: Sequence[Generation]) -> MetricResult:
    """Share of generations whose response opens with another belief marker (a leak)."""
    starts = sum(starts_with_marker(g.response, has_description=g.has_description)
                 for g in generations)
    value, low, high = proportion_with_interval(starts, len(generations))
    return MetricResult("marker_start", value, len(generations), low, high,
                        {"marker_starts": starts, "generations": len(generations)})


# ----------------------------------------------------------------------- models


@dataclass
class ModelEvaluation:
    """Everything measured for one model (or baseline)."""

    label: str
    model: str
    method: str | None
    predictions: list[PromptPrediction]
    metrics: dict[str, MetricResult]
    margins: Any = None  # MarginsResult
    curves: list[dict[str, Any]] | None = None

    def judge_failures(self) -> dict[str, int]:
        verdicts = [v for p in self.predictions for v in p.verdicts]
        return {"parse_failure": verdicts.count("parse_failure"),
                "api_error": verdicts.count("api_error")}

    def to_dict(self) -> dict[str, Any]:
        masses = [p.mass for p in self.predictions if p.mass is not None]
        return {
            "model": self.model, "method": self.method,
            "metrics": {k: v.as_dict() for k, v in self.metrics.items()},
            "margins": self.margins.as_dict() if self.margins is not None else None,
            "judge_failures": self.judge_failures(),
            "belief_mass_mean": float(np.mean(masses)) if masses else None,
            "prompts": len(self.predictions),
            "generations": sum(len(p.generations) for p in self.predictions),
        }


def model_label(ref: str, taken: Sequence[str] = ()) -> str:
    """A short unique label: the run name for ``runs/NAME/final``, else the folder or keyword."""
    path = Path(ref)
    label = path.parent.name if path.name in ("final", "") and path.parent.name else path.name
    label = label or ref
    base, i = label, 2
    while label in taken:
        label, i = f"{base}-{i}", i + 1
    return label


def run_dir_of(ref: str) -> Path | None:
    """The run folder holding ``metrics.jsonl`` for a model folder (itself or its parent)."""
    path = Path(ref)
    for candidate in (path, path.parent):
        if (candidate / RUN_METRICS_FILE).is_file():
            return candidate
    return None


def read_curves(ref: str) -> list[dict[str, Any]] | None:
    run = run_dir_of(ref)
    if run is None:
        return None
    with open(run / RUN_METRICS_FILE) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def predict_local(model: Any, tokenizer: Any, groups: Sequence[PromptGroup], fmt: Any,
                  config: EvalConfig) -> list[PromptPrediction]:
    """Reading, sampled estimate and belief-first generations of a local model."""
    from pluralign.eval.beliefs import belief_distributions
    from pluralign.eval.generate import generate_beliefs_first, sampled_belief_distribution
    from pluralign.train.tokenize import belief_marker_ids, encode_prompt

    prompt_ids = [encode_prompt(tokenizer, g.prompt, fmt, context=g.context, beliefs=g.beliefs)
                  for g in groups]
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
            contexts=[g.context for g in groups])
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
    from pluralign.eval.beliefs import belief_distributions
    from pluralign.train.tokenize import (
        belief_marker_ids,
        build_sequence,
        encode_prompt,
        separator_id,
    )

    rows, markers, owners = [], [], []
    for i, g in enumerate(groups):
        prompt_ids = encode_prompt(tokenizer, g.prompt, fmt, context=g.context,
                                   beliefs=g.beliefs)
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


def _margins(model: Any, tokenizer: Any, fmt: Any, method: str | None,
             records: Sequence[GroupPreferenceExample], config: EvalConfig) -> Any:
    from pluralign.eval.margins import pairing_for_method, reward_margins
    from pluralign.models import load_model

    assert config.ref_model is not None
    ref_model, _ = load_model(config.ref_model, device=config.device,
                              trust_remote_code=config.trust_remote_code)
    pairing = pairing_for_method(method) if config.pairing == "auto" else config.pairing
    subset = list(records)[: config.max_pairs] if config.max_pairs else list(records)
    return reward_margins(model, ref_model, tokenizer, subset, fmt=fmt, pairing=pairing,
                          beta=config.beta, batch_size=max(1, config.batch_size // 2),
                          seed=config.seed, progress=config.progress)


def _autocast(model: Any, enabled: bool) -> Any:
    """bfloat16 autocast on the model's device type when ``enabled``, else a no-op."""
    import torch

    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


def evaluate_model(ref: str, label: str, groups: Sequence[PromptGroup],
                   records: Sequence[GroupPreferenceExample], config: EvalConfig,
                   judge: Any, embedder: Any = None) -> ModelEvaluation:
    """Load ``ref`` and measure every metric on ``groups``."""
    from pluralign.eval.generate import load_sequence_format, read_format_info, untrained_format
    from pluralign.eval.prompting import in_context_prompts
    from pluralign.models import load_model

    model, tokenizer = load_model(ref, device=config.device,
                                  trust_remote_code=config.trust_remote_code)
    if hasattr(model, "merge_and_unload"):
        # Inference only: folding LoRA into the weights removes its extra ops at every step.
        model = model.merge_and_unload()
    # A model pluralign did not train is prompted in the format the records name (reviews).
    fmt = load_sequence_format(ref, default=untrained_format(records))
    info = read_format_info(ref)
    method = info.get("method")
    # An in-context fine-tuned model is prompted as it trained: shots before <Q>.
    groups, records = in_context_prompts(groups, records, info, fmt.marker,
                                         pool_file=config.kshot_pool, seed=config.seed)
    with _autocast(model, config.bf16):
        predictions = predict_local(model, tokenizer, groups, fmt, config)
        margins = (_margins(model, tokenizer, fmt, method, records, config)
                   if config.ref_model else None)
    judge_predictions(predictions, judge)
    similarity_predictions(predictions, embedder)
    return ModelEvaluation(label, ref, method, predictions,
                           score_predictions(predictions, seed=config.seed), margins,
                           read_curves(ref))


def _kshot_evaluation(groups: Sequence[PromptGroup], records: Sequence[GroupPreferenceExample],
                      config: EvalConfig, judge: Any, embedder: Any) -> ModelEvaluation:
    from pluralign.eval.prompting import kshot_baseline

    assert config.kshot_pool is not None  # EvalConfig requires it with kshot
    subset = [r for r in records if any(r.prompt == g.prompt for g in groups)]
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


# ----------------------------------------------------------------------- entry points


@dataclass
class EvalResult:
    """What :func:`evaluate` measured and where it wrote it."""

    evaluations: list[ModelEvaluation]
    reference_lines: dict[str, MetricResult]
    out_dir: Path
    files: dict[str, Path]


def build_judge(config: EvalConfig) -> Any:
    """The judge ``config.judge`` names, with the config's options."""
    from pluralign.eval.judges import make_judge

    if config.judge in ("llm", "rating-llm"):
        return make_judge(config.judge, backend=config.judge_backend, model=config.judge_model,
                          base_url=config.judge_base_url, api_key_env=config.judge_api_key_env,
                          cache_dir=config.judge_cache_dir, progress=config.progress)
    if config.judge == "embedding":
        return make_judge("embedding", embedder=config.embedder,
                          min_similarity=config.judge_min_similarity)
    if config.judge == "rating":
        return make_judge("rating", embedder=config.embedder)
    return make_judge(config.judge)


def evaluate(config: EvalConfig, *, judge: Any = None, embedder: Any = None) -> EvalResult:
    """Evaluate every model of ``config`` and write eval.json, predictions.jsonl and the report.

    ``judge`` and ``embedder`` replace the configured ones (objects, e.g. in tests).
    """
    from pluralign.eval.report import write_report

    if not config.models and not config.kshot:
        raise ValueError("models: give at least one model to evaluate (or kshot > 0)")
    if not config.data:
        raise ValueError("data: a JSONL record file is required")
    records = read_examples(config.data)
    if not records:
        raise ValueError(f"{config.data}: holds no records (empty, or blank lines only)")
    groups = group_prompts(records)
    if config.max_prompts is not None:
        groups = groups[: config.max_prompts]
        kept = {(g.prompt, g.group) for g in groups}
        records = [r for r in records if (r.prompt, r.group) in kept]
    judge = judge if judge is not None else build_judge(config)
    embedder = embedder if embedder is not None else config.embedder
    evaluations: list[ModelEvaluation] = []
    for ref in config.models:
        label = model_label(ref, [e.label for e in evaluations])
        logger.info("evaluating %s (%s) on %d prompts", label, ref, len(groups))
        evaluations.append(evaluate_model(ref, label, groups, records, config, judge, embedder))
    if config.kshot:
        evaluations.append(_kshot_evaluation(groups, records, config, judge, embedder))
    lines = reference_lines([g.target for g in groups], seed=config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    files = write_outputs(out, config, evaluations, lines)
    files.update(write_report(out, evaluations, lines, plot_questions=config.plot_questions))
    return EvalResult(evaluations, lines, out, files)


def write_outputs(out: Path, config: EvalConfig, evaluations: Sequence[ModelEvaluation],
                  lines: dict[str, MetricResult]) -> dict[str, Path]:
    """``eval.json`` (summaries) and ``predictions.jsonl`` (one line per model and prompt)."""
    summary = {
        "data": config.data, "judge": config.judge,
        "prompts": len(evaluations[0].predictions) if evaluations else 0,
        "reference_lines": {k: v.as_dict() for k, v in lines.items()},
        "models": {e.label: e.to_dict() for e in evaluations},
        "config": config.to_dict(),
    }
    eval_path = out / "eval.json"
    eval_path.write_text(json.dumps(_finite(summary), indent=2, ensure_ascii=False))
    pred_path = out / "predictions.jsonl"
    with open(pred_path, "w", encoding="utf-8") as handle:
        for e in evaluations:
            for p in e.predictions:
                handle.write(json.dumps(_finite(p.to_dict(e.label)), ensure_ascii=False) + "\n")
    return {"eval": eval_path, "predictions": pred_path}


def _finite(value: Any) -> Any:
    """NaN (an empty metric) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def compare(runs: Sequence[str], data: str, out: str = "eval", **options: Any) -> EvalResult:
    """Evaluate several runs side by side in one report (``pluralign eval --model A --model B``)."""
    return evaluate(EvalConfig(models=list(runs), data=data, out=out, **options))
