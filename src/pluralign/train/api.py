"""``pluralign.train(config)``: the run that ``pluralign train CONFIG.yaml`` builds."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pluralign.beliefs.formats import (
    SequenceFormat,
    named_format,
    resolve_format_name,
)
from pluralign.beliefs.tokenize import add_format_tokens
from pluralign.data.records import GroupPreferenceExample, iter_numbered_examples
from pluralign.models import apply_lora, load_model
from pluralign.models.loading import set_attention, training_attention
from pluralign.runs import (
    FINAL_DIR,
    FINAL_STAGING_DIR,
    METRICS_FILE,
    TOKENIZED_DIR,
    write_format_info,
)
from pluralign.train.arguments import trainer_arguments
from pluralign.train.common import check_finite_tensors, process_state
from pluralign.train.config import TrainConfig
from pluralign.train.dataset import belief_eval_inputs, preference_dataset, sft_dataset
from pluralign.train.framing import PROMPT_FRAMES, frame_prompts
from pluralign.train.groups import prepare_groups
from pluralign.train.lengths import fitting_records, record_length_reports
from pluralign.train.methods import Method
from pluralign.train.metrics import BeliefEvalCallback, add_metrics_callback
from pluralign.train.run_start import claimed_run_folder
from pluralign.train.selection import BestStateCallback, carve_validation

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a finished run put its outputs."""

    output_dir: Path
    final_dir: Path
    global_step: int
    metrics_file: Path
    trainer: Any = None  #: the TRL trainer, for inspection (its model is the trained policy)
    #: The step whose weights final/ holds when a validation split selected them (else None).
    selected_step: int | None = None


@dataclass
class _Context:
    config: TrainConfig
    method: Method
    model: Any
    tokenizer: Any
    fmt: SequenceFormat
    train_records: list[GroupPreferenceExample]
    eval_records: list[GroupPreferenceExample]
    output_dir: Path

    def trainer_arguments(self) -> dict[str, Any]:
        return trainer_arguments(self.config, has_eval=bool(self.eval_records))


def sequence_format(config: TrainConfig) -> SequenceFormat:
    """The named format of ``config`` with its marker, chat-template and group-line choices
    (``auto`` not yet resolved against records, see :func:`_with_records_format`:
    ``separated``)."""
    name = resolve_format_name(config.sequence_format, ())
    return dataclasses.replace(named_format(name, group_in_prompt=config.group_in_prompt),
                               marker=config.belief_format,
                               chat_template=config.use_chat_template)


def _load_records(path: str | None, limit: int | None,
                  given: Sequence[GroupPreferenceExample] | None = None,
                  ) -> list[tuple[int, GroupPreferenceExample]]:
    """``(line, record)`` of the first ``limit`` records of ``path`` (read once: the line
    numbers name a record that does not fit max_length later), or of ``given`` (numbered
    from 1) when the caller holds them in memory."""
    if given is not None:
        records = list(enumerate(given, start=1))
    elif not path:
        return []
    else:
        records = list(iter_numbered_examples(path))
    if not records:
        raise ValueError(f"{path if given is None else 'train_records'} holds no records")
    return records[:limit] if limit is not None else records


def _fitting_records(config: TrainConfig, tokenizer: Any, output_dir: Path,
                     train: list[tuple[int, GroupPreferenceExample]],
                     heldout: list[tuple[int, GroupPreferenceExample]],
                     ) -> tuple[list[GroupPreferenceExample], list[GroupPreferenceExample], int]:
    """Training and eval records that fit in max_length (see :mod:`pluralign.train.lengths`),
    and the longest one's tokens; what was left out is recorded in run.json."""
    fmt = sequence_format(config)
    frames = PROMPT_FRAMES if config.frame_prompts else ("{prompt}",)
    train_records, report = fitting_records(
        train, config.train_file, tokenizer, fmt, max_length=config.max_length,
        policy=config.too_long, frames=frames)
    reports, heldout_records = [report], []
    if config.eval_file:
        heldout_records, eval_report = fitting_records(
            heldout, config.eval_file, tokenizer, fmt, max_length=config.max_length,
            policy=config.too_long)
        reports.append(eval_report)
    if process_state().is_main_process:
        record_length_reports(output_dir, reports)
    longest = max(r.longest for r in reports)
    if config.max_length:  # a dropped record (too_long: drop) may be longer than any kept one
        longest = min(longest, config.max_length)
    return train_records, heldout_records, longest


def _pick_attention(model: Any, config: TrainConfig, longest_tokens: int) -> None:
    """Switch to eager attention where ``auto`` finds it faster for this run. An explicit
    ``attn_implementation`` was already set by ``load_model``."""
    if config.model.attn_implementation != "auto":
        return
    device_type = next(model.parameters()).device.type
    kernel = training_attention(config.model, device_type=device_type, bf16=config.bf16,
                                longest_tokens=longest_tokens)
    if kernel is not None:
        set_attention(model, kernel)
        logger.info("attention: %s (auto on a CPU under bf16; longest sequence %d tokens)",
                    kernel, longest_tokens)


def warn_if_bf16_is_emulated(model: Any, config: TrainConfig) -> bool:
    """Warn (and return True) when this run asks for bf16 (autocast or bf16 weights) on a
    CPU without native bf16 instructions: PyTorch then emulates every bf16 matmul, and a
    run the user expected to be faster is many times slower. On a 2-core AVX2 CPU one SFT
    step of the reproduction took 88 s with a bf16 base, about 50 times an fp32 step."""
    import torch

    from pluralign.train.recipe import bf16_is_fast

    parameter = next(model.parameters())
    asked = config.bf16 or parameter.dtype == torch.bfloat16
    if not asked or parameter.device.type != "cpu" or bf16_is_fast():
        return False
    logger.warning("bf16 (%s) on a CPU without native bf16 instructions (AVX512-BF16 or AMX) "
                   "is emulated and many times slower than float32: set bf16 false and "
                   "model.dtype float32 (or auto, which picks bf16 only where it is fast)",
                   "autocast" if config.bf16 else "model.dtype bfloat16")
    return True


def load_policy(config: TrainConfig) -> tuple[Any, Any]:
    """The model and tokenizer that ``config`` trains: ``config.model`` with the sequence
    format's tokens added (the embeddings resized) and then its LoRA adapter."""
    # LoRA goes on after the special tokens are added: the embeddings must be resized first.
    base_config = copy.deepcopy(config.model)
    base_config.lora_r = 0
    model, tokenizer = load_model(base_config)
    warn_if_bf16_is_emulated(model, config)
    if hasattr(model, "merge_and_unload"):
        # Starting from a LoRA run (e.g. DPO from the SFT adapter): fold it into the weights,
        # so that the new adapters train on top and the reference is the SFT model.
        model = model.merge_and_unload()
    fmt = sequence_format(config)
    add_format_tokens(tokenizer, model, fmt)
    if config.model.lora_r:
        lora = copy.deepcopy(config.model)
        if config.belief_format == "special" and not lora.lora_modules_to_save:
            lora.lora_modules_to_save = ["embed_tokens", "lm_head"]
        model = apply_lora(model, lora)
    return model, tokenizer


def _build_preference(ctx: _Context) -> Any:
    from pluralign.train.preference import GDPOConfig, GDPOTrainer

    pairing = ctx.method.pairing
    args = GDPOConfig(**ctx.trainer_arguments())
    return GDPOTrainer(
        model=ctx.model, ref_model=_reference_copy(ctx), args=args,
        processing_class=ctx.tokenizer,
        train_dataset=_shared(ctx, "train", preference_dataset(
            ctx.train_records, ctx.tokenizer, ctx.fmt, pairing=pairing)),
        eval_dataset=(_shared(ctx, "eval", preference_dataset(
            ctx.eval_records, ctx.tokenizer, ctx.fmt, pairing=pairing))
            if ctx.eval_records else None),
    )


def _build_sft(ctx: _Context) -> Any:
    from trl import SFTConfig

    from pluralign.train.sft import BeliefSFTTrainer

    config = ctx.config
    args = SFTConfig(**ctx.trainer_arguments())

    def data(name: str, records: list[GroupPreferenceExample]) -> Any:
        return _shared(ctx, name, sft_dataset(records, ctx.tokenizer, ctx.fmt,
                                              uniform_beliefs=ctx.method.uniform_beliefs,
                                              seed=config.seed))

    return BeliefSFTTrainer(
        model=ctx.model, args=args, processing_class=ctx.tokenizer,
        train_dataset=data("train", ctx.train_records),
        eval_dataset=data("eval", ctx.eval_records) if ctx.eval_records else None,
    )


def _build_kto(ctx: _Context) -> Any:
    from pluralign.train.kto import GDPOKTOConfig, GDPOKTOTrainer, kto_dataset

    config = ctx.config
    pairing = ctx.method.pairing
    args = GDPOKTOConfig(**ctx.trainer_arguments())

    def data(name: str, records: list[GroupPreferenceExample]) -> Any:
        return _shared(ctx, name, kto_dataset(records, ctx.tokenizer, ctx.fmt, pairing=pairing,
                                              batch_size=config.per_device_train_batch_size,
                                              seed=config.seed))

    return GDPOKTOTrainer(
        model=ctx.model, ref_model=_reference_copy(ctx), args=args,
        processing_class=ctx.tokenizer, train_dataset=data("train", ctx.train_records),
        eval_dataset=data("eval", ctx.eval_records) if ctx.eval_records else None,
    )


def _shared(ctx: _Context, name: str, dataset: Any) -> Any:
    """Keep a tokenised dataset under the run folder (``tokenized/<name>``).

    Every process then reads the same files (the same rows under the same keys),
    and where TRL's eager reference pass runs (full fine-tuning, DeepSpeed/FSDP)
    the log-probs it caches beside them are found by all ranks of a
    multi-process run (an in-memory dataset would cache them in a per-process
    temporary folder).
    """
    from datasets import load_from_disk

    folder = ctx.output_dir / TOKENIZED_DIR / name
    state = process_state()
    with state.main_process_first():
        if state.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
            dataset.save_to_disk(str(folder))
    return load_from_disk(str(folder))


def _reference_copy(ctx: _Context) -> Any:
    """Full fine-tuning without precomputed log-probs needs an explicit frozen reference;
    otherwise TRL reloads one from ``config._name_or_path``."""
    if ctx.config.model.lora_r or ctx.config.precompute_ref_log_probs:
        return None
    return copy.deepcopy(ctx.model).eval()


#: Trainer builders by method family; a method picks one through its data, not its name.
TRAINER_FAMILIES: dict[str, Callable[[_Context], Any]] = {
    "preference": _build_preference,
    "sft": _build_sft,
    "kto": _build_kto,
}


def train(config: TrainConfig, *, console_logs: bool = True) -> TrainResult:
    """Run ``config`` end to end and return where its outputs are.

    ``console_logs=False`` keeps the progress bar but stops printing every
    logged metrics dict (they still go to ``metrics.jsonl``); the demo uses it.
    The output folder is claimed and locked first (:mod:`pluralign.run_folder`),
    then the trainer is built as :func:`build_trainer` builds it, trained, and
    its weights are written to ``final/``.
    """
    _check_trainable(config, records_given=False)
    with claimed_run_folder(config) as start:
        return _train_in_folder(config, start.checkpoint, console_logs)


def build_trainer(config: TrainConfig, *,
                  train_records: Sequence[GroupPreferenceExample] | None = None,
                  policy: tuple[Any, Any] | None = None,
                  trainer_options: Mapping[str, Any] | None = None,
                  console_logs: bool = True) -> Any:
    """The TRL trainer that :func:`train` trains for ``config``, ready for ``trainer.train()``.

    Everything ``train`` does before training, by the same code: read the
    records, resolve ``sequence_format: auto``, load the policy, keep the records
    that fit ``max_length`` (reported in ``output_dir/run.json``), pick the
    attention kernel, carve the validation split, frame the prompts, tokenise the
    datasets into ``output_dir/tokenized/`` and add the metrics, belief-evaluation
    and checkpoint-selection callbacks. Unlike ``train`` it neither claims
    ``output_dir`` (no lock, no ``config.yaml``; the folder is created if missing)
    nor writes ``final/``.

    ``train_records``: train on these instead of reading ``config.train_file``
    (which then only names them in messages). ``policy``: the ``(model,
    tokenizer)`` that :func:`load_policy` returned for ``config``, when the caller
    needed them first. ``trainer_options``: more fields of the method family's TRL
    config, e.g. ``{"compact_logprobs": False}`` for GDPO; they join
    ``config.training_args`` and are checked as it is.
    """
    if trainer_options:
        config = dataclasses.replace(
            config, training_args={**config.training_args, **trainer_options})
    _check_trainable(config, records_given=train_records is not None)
    trainer, _ = _build(config, train_records, policy, console_logs)
    return trainer


def _check_trainable(config: TrainConfig, *, records_given: bool) -> None:
    method = config.method_spec
    if method.family not in TRAINER_FAMILIES:
        raise ValueError(f"method {method.name!r} has family {method.family!r}, which no trainer "
                         f"handles yet (known: {', '.join(TRAINER_FAMILIES)})")
    if not config.train_file and not records_given:
        raise ValueError("train_file: a JSONL file of training records is required")


def _train_in_folder(config: TrainConfig, resume_from: Path | None,
                     console_logs: bool) -> TrainResult:
    trainer, ctx = _build(config, None, None, console_logs)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if ctx.eval_records and _needs_final_evaluation(trainer):
        trainer.evaluate()
    return _save_final(trainer, ctx.tokenizer, ctx)


def _build(config: TrainConfig, given: Sequence[GroupPreferenceExample] | None,
           policy: tuple[Any, Any] | None, console_logs: bool) -> tuple[Any, _Context]:
    """:func:`build_trainer`'s trainer and the context that writing ``final/`` needs."""
    from transformers import set_seed

    method = config.method_spec
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)  # claimed by train(); not by build_trainer
    set_seed(config.seed)
    # Read before the model loads, so that a bad line fails in a second.
    numbered_train = _load_records(config.train_file, config.max_train_examples, given)
    numbered_heldout = _load_records(config.eval_file, config.max_eval_examples)
    config = _with_records_format(config, [r for _, r in numbered_train])
    numbered_train, numbered_heldout = prepare_groups(
        numbered_train, numbered_heldout, train_file=config.train_file or "train_records",
        eval_file=config.eval_file, fmt=sequence_format(config),
        group_context=config.group_context, seed=config.seed)
    if method.in_context:
        # Before the lengths are measured: the shots count toward max_length.
        numbered_train, numbered_heldout = _with_shots(config, numbered_train, numbered_heldout)
    model, tokenizer = policy if policy is not None else load_policy(config)
    train_records, heldout_records, longest = _fitting_records(
        config, tokenizer, output_dir, numbered_train, numbered_heldout)
    _pick_attention(model, config, longest)
    validation_records: list[GroupPreferenceExample] = []
    if config.validation_fraction:
        carve = carve_validation(train_records, config.validation_fraction, config.seed,
                                 by_group=config.group_in_prompt)
        train_records, validation_records = carve.train, carve.validation
        logger.info("validation split: %d of the training records (held out by %s)",
                    len(validation_records), carve.by)
    if config.frame_prompts:
        train_records = frame_prompts(train_records, config.seed)
    # The trainer evaluates (loss, margins) on the validation split when there is one.
    ctx = _Context(config, method, model, tokenizer, sequence_format(config), train_records,
                   validation_records or heldout_records, output_dir)
    trainer = TRAINER_FAMILIES[method.family](ctx)
    add_metrics_callback(trainer, output_dir)  # first: what it derives reaches report_to
    if not console_logs:
        _silence_log_printing(trainer)
    _add_evaluation_callbacks(trainer, ctx, heldout_records if validation_records else [])
    return trainer, ctx


def _with_shots(config: TrainConfig, train: list[tuple[int, GroupPreferenceExample]],
                heldout: list[tuple[int, GroupPreferenceExample]],
                ) -> tuple[list[tuple[int, GroupPreferenceExample]],
                           list[tuple[int, GroupPreferenceExample]]]:
    """In-context fine-tuning: ``icf_shots`` shots of other questions before every prompt,
    drawn from the training records only (eval_file prompts too, never from eval_file)."""
    from pluralign.beliefs.shots import ShotPool, in_context

    pool = ShotPool([r for _, r in train])

    def add(numbered: list[tuple[int, GroupPreferenceExample]], seed: int,
            ) -> list[tuple[int, GroupPreferenceExample]]:
        records = in_context([r for _, r in numbered], pool, config.icf_shots, seed=seed,
                             marker=config.belief_format)
        return [(line, r) for (line, _), r in zip(numbered, records, strict=True)]

    return add(train, config.seed), add(heldout, config.seed + 1)


def _with_records_format(config: TrainConfig, records: list[GroupPreferenceExample]
                         ) -> TrainConfig:
    """``config`` with ``sequence_format: auto`` resolved from the training records (the
    reviews builder names ``reviews``); final/pluralign_format.json records the result."""
    name = resolve_format_name(config.sequence_format, records, config.train_file)
    if name == config.sequence_format:
        return config
    logger.info("sequence format: %s (%s)", name, "named by the training records"
                if name != "separated" else "the default")
    return dataclasses.replace(config, sequence_format=name)


def _needs_final_evaluation(trainer: Any) -> bool:
    """Whether the last logged evaluation misses the weights that final/ will hold: the
    last step was not evaluated, or the selection restored an earlier evaluation's.

    Read from the log history, not from ``step % eval_steps``: transformers evaluates at
    the last step by itself when it is not a multiple of eval_steps, and a second
    evaluation there logged every eval record twice."""
    step = trainer.state.global_step
    selector = _selector(trainer)
    restored = selector is not None and selector.best_step not in (None, step)
    evaluated = any(record.get("step") == step and any(key.startswith("eval_") for key in record)
                    for record in trainer.state.log_history)
    return restored or not evaluated


def _selector(trainer: Any) -> BestStateCallback | None:
    return next((c for c in trainer.callback_handler.callbacks
                 if isinstance(c, BestStateCallback)), None)


def _add_evaluation_callbacks(trainer: Any, ctx: _Context,
                              heldout: list[GroupPreferenceExample]) -> None:
    """Belief JSD on the trainer's eval records (and on ``heldout`` beside a validation
    split, for the curves only), then checkpoint selection on the validation split."""
    config, tokenizer = ctx.config, ctx.tokenizer
    belief = None
    for records, prefix in ((ctx.eval_records, "eval_belief"), (heldout, "heldout_belief")):
        if records:
            callback = BeliefEvalCallback(
                belief_eval_inputs(records, tokenizer, ctx.fmt), log=trainer.log,
                pad_token_id=tokenizer.pad_token_id,
                batch_size=config.per_device_eval_batch_size, prefix=prefix)
            trainer.add_callback(callback)
            belief = belief or callback
    metric = config.selection_metric()
    if metric is not None:
        trainer.add_callback(BestStateCallback(metric, ctx.output_dir / METRICS_FILE, belief))


def _silence_log_printing(trainer: Any) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnlyProgress(ProgressCallback):
        def on_log(self, *args: Any, **kwargs: Any) -> None:  # the bar stays, the dicts go
            return None

    trainer.pop_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnlyProgress())


def _format_info(ctx: _Context) -> dict[str, Any]:
    """What ``final/pluralign_format.json`` records: the method, its pairing and the sequence
    format, and for in-context fine-tuning the shot count and pool that evaluation prompts
    with."""
    # The pairing lets evaluation build the reward-margin pairs as training did, without
    # knowing the method (run folders written before it was recorded fall back to the name).
    info: dict[str, Any] = {"method": ctx.method.name, "pairing": ctx.method.pairing,
                            "sequence_format": ctx.config.sequence_format, **ctx.fmt.to_info()}
    if ctx.method.in_context:
        info["in_context"] = {"shots": ctx.config.icf_shots,
                              "pool": str(Path(ctx.config.train_file).resolve())}
    if ctx.config.group_context:
        info["group_context"] = {"shots": ctx.config.group_context,
                                 "pool": str(Path(ctx.config.train_file).resolve())}
    return info


def _drop_reference_adapter(folder: Path) -> None:
    """Remove the ``ref/`` adapter that TRL's preference trainers save beside the trained
    one: the adapter as training began, which TRL switches to for the reference
    log-probs. Nothing reads it from final/ (loading takes the trained, default adapter; a
    reference for margins is named explicitly), and it doubled the adapter bytes of every
    DPO/GDPO/KTO folder (6.3 MB of 12.6 with LoRA on 10 layers)."""
    ref = folder / "ref"
    if (ref / "adapter_config.json").is_file():
        shutil.rmtree(ref)


def _save_final(trainer: Any, tokenizer: Any, ctx: _Context) -> TrainResult:
    """Write ``final/`` through a staging folder, so a crash never leaves half a model."""
    final = ctx.output_dir / FINAL_DIR
    staging = ctx.output_dir / FINAL_STAGING_DIR
    main = trainer.accelerator.is_main_process
    check_finite_tensors(trainer.model, trainer.state.global_step, gradients=False,
                         before="writing final/")
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # every rank takes part; rank 0 writes
    selector = _selector(trainer)
    if main:
        from pluralign.train.model_card import card_info

        tokenizer.save_pretrained(staging)
        trainer.model_card_dir = staging
        # The card names final/, where the folder will be, in its usage snippets. A card is
        # documentation: if building it fails, the trained weights are still written.
        try:
            trainer.model_card_info = card_info(
                ctx.config, ctx.method, ctx.fmt, ctx.train_records, final_dir=final,
                steps=trainer.state.global_step,
                selected_step=selector.best_step if selector is not None else None)
        except Exception as exc:
            logger.warning("final/README.md keeps TRL's card: pluralign's failed (%s)", exc)
        trainer.create_model_card(model_name=ctx.output_dir.name)
        write_format_info(staging, _format_info(ctx))
        _drop_reference_adapter(staging)
        shutil.rmtree(final, ignore_errors=True)
        staging.replace(final)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(ctx.output_dir, final, trainer.state.global_step,
                       ctx.output_dir / METRICS_FILE, trainer,
                       selector.best_step if selector is not None else None)
