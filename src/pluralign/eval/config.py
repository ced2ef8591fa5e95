"""``EvalConfig``: what :func:`pluralign.eval.evaluate.evaluate` measures, on which records, how.

Kept apart from the evaluation code so that reading or validating a config
(the CLI, ``pluralign demo``, benchmarks) needs neither torch nor a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import pluralign.eval.judges  # noqa: F401  (registers the built-in judges)
from pluralign.config import YamlConfig, reject_non_finite
from pluralign.registry import JUDGES, UnknownNameError, load_plugins

if TYPE_CHECKING:
    from pluralign.eval.generate import SamplingOptions


@dataclass
class EvalConfig(YamlConfig):
    """What to evaluate, on which records, with which judge and sampling settings."""

    models: list[str] = field(default_factory=list, metadata={
        "help": "Model references to evaluate side by side (run folders such as runs/gdpo/final, "
                "keywords, local folders)."})
    data: str = field(default="", metadata={"help": "JSONL record file to evaluate on."})
    output_dir: str = field(default="eval", metadata={
        "help": "Output folder for eval.json, predictions.jsonl, report.md and report.html "
                "(older name: out)."})
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
    response_temperature: float | None = field(default=0.0, metadata={
        "help": "Temperature of the description and response written after the drawn "
                "belief (0, the default: greedy; None: temperature). Beliefs are still "
                "drawn at temperature, so JSD and the sampled belief estimate do not change. "
                "Greedy text after the drawn belief raised GDPO's validation CBC from 0.68 to "
                "0.82 (mean of US, PK, SA) and no metric got worse (BENCHMARKS.md, "
                "'Temperature after the drawn belief')."})
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
        "help": "Records used for reward margins, spread evenly over the data file "
                "(None: all)."})
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
    group_context_pool: str | None = field(default=None, metadata={
        "help": "Models trained with group_context: JSONL of records the group context (a few "
                "of a group's answers to other questions) comes from, instead of the training "
                "file their run recorded; e.g. a few answers of groups the model never trained "
                "on. Never the evaluated file; a context never shows the question asked."})
    plot_questions: int = field(default=4, metadata={
        "help": "Questions whose predicted vs target distribution the report draws."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    #: Older and shorter names: ``--model`` (repeated), ``--n``, ``--out``.
    config_aliases: ClassVar[dict[str, str]] = {
        "model": "models", "n": "n_samples", "out": "output_dir"}

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
        for name in ("kshot_pool", "group_context_pool"):
            pool = getattr(self, name)
            if pool and self.data and Path(pool).resolve() == Path(self.data).resolve():
                raise ValueError(f"{name}: {pool} is the evaluated file itself; in-context "
                                 "examples come from the training split")
        if not -1.0 <= self.judge_min_similarity <= 1.0:
            raise ValueError(f"judge_min_similarity: a cosine similarity in [-1, 1], got "
                             f"{self.judge_min_similarity}")
        self._check_judge()

    def _check_judge(self) -> None:
        """Fail before any model loads, with the known names; a plugin's judge counts."""
        if self.judge not in JUDGES:
            load_plugins()  # only then: the built-in judges need no entry-point scan
        try:
            JUDGES.get(self.judge)
        except UnknownNameError as exc:
            raise ValueError(f"judge: {exc}") from None

    def sampling(self) -> SamplingOptions:
        from pluralign.eval.generate import SamplingOptions  # torch: only when sampling

        return SamplingOptions(temperature=self.temperature, top_p=self.top_p,
                               max_new_tokens=self.max_new_tokens, seed=self.seed,
                               response_temperature=self.response_temperature)


@dataclass
class GenerateConfig(YamlConfig):
    """``pluralign generate``: one question answered belief first."""

    prompt: str | None = field(default=None, metadata={
        "help": "The question to answer (also the command's plain word)."})
    model: str = field(default="smollm2-135m", metadata={
        "help": "Model reference (run folder such as runs/gdpo/final, keyword, local folder)."})
    n: int = field(default=1, metadata={"help": "Number of belief-first generations."})
    beliefs: str | None = field(default=None, metadata={
        "help": 'Belief set "1:Strongly oppose,2:Somewhat oppose,..." (None: classes 0-5).'})
    target: str | None = field(default=None, metadata={
        "help": "Target distribution over the beliefs, e.g. 0.1,0.2,0.3,0.4."})
    data: str | None = field(default=None, metadata={
        "help": "Take prompt, beliefs and target from a record of this JSONL file."})
    index: int = field(default=0, metadata={"help": "Record index in data."})
    temperature: float | None = field(default=None, metadata={
        "help": "Sampling temperature (None: 0 for n 1, else 1.0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens after the marker."})
    seed: int = field(default=0, metadata={"help": "Random seed for sampling."})
    device: str = field(default="auto", metadata={"help": "Device (auto, cpu, cuda:0)."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow a model folder's own modelling code (auto_map) to run; off: such a "
                "model fails to load."})
    kshot_pool: str | None = field(default=None, metadata={
        "help": "In-context fine-tuned (icf) models: draw the shots from this file instead "
                "of the training file the run recorded."})
    group: str | None = field(default=None, metadata={
        "help": "The group to answer for, with models trained with group_in_prompt (the "
                "prompt names it); default with --data: the record's group."})
    group_context_pool: str | None = field(default=None, metadata={
        "help": "Models trained with group_context: draw the group's example answers from "
                "this file instead of the training file the run recorded."})

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens: must be >= 1, got {self.n} and "
                             f"{self.max_new_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0 (0: greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")

    def effective_temperature(self) -> float:
        """Greedy for one answer, sampling for a histogram, unless set."""
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.n == 1 else 1.0
