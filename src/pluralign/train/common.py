"""Pieces shared by pluralign's TRL-based trainers.

- :class:`HiddenStateCapture`: reads the backbone's last hidden state during
  the policy forward. TRL's fused LM head never builds full logits, so the
  belief distribution at the last prompt position is recomputed from that
  hidden state and the LM head for a handful of positions (no extra forward).
- :class:`GuardedCheckpointsMixin`: a non-finite loss, gradient or weight
  stops the run with a clear message before the optimiser step or save that
  would use it, and every checkpoint gets a ``COMPLETE`` marker written last,
  so ``--resume`` never picks a half-saved (or non-finite) checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class TrainingDiverged(RuntimeError):
    """The loss, a gradient or a weight became NaN or infinite; the run stops without
    saving a model."""


def unwrap_to_causal_lm(model: Any) -> Any:
    """The transformers causal LM inside DDP/accelerate and peft wrappers."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    return inner


class HiddenStateCapture:
    """Keep the last hidden state of the first backbone forward while armed.

    The hook fires for every forward of the backbone, including the reference
    forward when peft disables the adapters on the same modules; arming it
    around the policy forward only keeps the policy's states.
    """

    def __init__(self, model: Any) -> None:
        self.causal_lm = unwrap_to_causal_lm(model)
        self.hidden: torch.Tensor | None = None
        self._armed = False
        self._handle = self.causal_lm.base_model.register_forward_hook(self._hook)

    def _hook(self, module: Any, args: Any, output: Any) -> None:
        if self._armed:
            hidden = getattr(output, "last_hidden_state", None)
            self.hidden = hidden if hidden is not None else output[0]
            self._armed = False

    @contextmanager
    def armed(self) -> Iterator[HiddenStateCapture]:
        self.hidden, self._armed = None, True
        try:
            yield self
        finally:
            self._armed = False

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits for selected hidden states ``(..., H) -> (..., V)``."""
        # Calling the head module (not its weight) keeps peft's modules_to_save wrappers working.
        head = self.causal_lm.get_output_embeddings()
        return head(hidden.to(head.weight.dtype))

    def remove(self) -> None:
        self._handle.remove()


def check_finite(loss: torch.Tensor, step: int, terms: dict[str, torch.Tensor]) -> None:
    """Raise :class:`TrainingDiverged` naming the terms that are not finite."""
    if torch.isfinite(loss).all():
        return
    bad = {name: float(value.detach().float().mean()) for name, value in terms.items()}
    bad = {name: value for name, value in bad.items() if not math.isfinite(value)}
    raise TrainingDiverged(
        f"the loss became {float(loss.detach().float())} at step {step} (non-finite terms: "
        f"{bad or 'none individually'}). The run stopped without saving this state; the last "
        "good checkpoint (if any) is intact. Lower the learning rate, check the targets p* "
        "for zeros or NaNs, or use float32."
    )


def nonfinite_tensors(model: Any, *, gradients: bool) -> list[str]:
    """Names of the parameters (or, with ``gradients``, of the gradients of the trainable
    parameters) that hold a NaN or an infinity."""
    bad = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            tensor = param.grad if gradients else param
            if tensor is not None and not bool(torch.isfinite(tensor).all()):
                bad.append(name)
    return bad


def check_finite_tensors(model: Any, step: int, *, gradients: bool, before: str) -> None:
    """Raise :class:`TrainingDiverged` if ``model`` has a non-finite gradient or weight."""
    bad = nonfinite_tensors(model, gradients=gradients)
    if not bad:
        return
    what = "gradients" if gradients else "weights"
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    raise TrainingDiverged(
        f"non-finite {what} at step {step} ({shown}), found before {before}. The run stopped "
        "without saving this state; the last good checkpoint (if any) is intact. Lower the "
        "learning rate, set max_grad_norm, or use float32."
    )


class FiniteGradientsCallback(TrainerCallback):
    """Stop before an optimiser step whose gradients hold a NaN or an infinity: a finite
    loss can still back-propagate to non-finite gradients, and one step with them makes
    every weight NaN."""

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.fp16:  # the fp16 grad scaler skips such steps itself, by design
            return
        check_finite_tensors(kwargs["model"], state.global_step + 1, gradients=True,
                             before="the optimiser step")


def checkpoint_is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file() and (path / "trainer_state.json").is_file()


def process_state() -> Any:
    """accelerate's process state, created as the Trainer will create it.

    ``PartialState`` is a singleton: whoever builds it first decides whether a
    CPU-only process started by ``accelerate launch`` joins a gloo group
    (``cpu=True``) or runs alone, so pluralign builds it the Trainer's way.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` with its ``COMPLETE`` marker; incomplete ones are set aside.

    A checkpoint without the marker was being written when the run died; it is
    renamed ``incomplete-checkpoint-N`` (kept for inspection; the name no longer
    matches ``checkpoint-*``, so resume and checkpoint rotation ignore it).
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT.match(path.name)
        if not match or not path.is_dir():
            continue
        if checkpoint_is_complete(path):
            found.append((int(match.group(1)), path))
        elif process_state().is_main_process:
            aside = path.with_name(f"incomplete-{path.name}")
            if aside.exists():
                shutil.rmtree(aside)
            logger.warning("ignoring incomplete checkpoint %s (renamed to %s)", path, aside.name)
            os.replace(path, aside)
    return max(found)[1] if found else None


class GuardedCheckpointsMixin:
    """Mix into a ``transformers.Trainer`` subclass (before the trainer class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.add_callback(FiniteGradientsCallback())  # type: ignore[attr-defined]

    #: Where TRL's model card goes; None skips it. TRL writes README.md into output_dir at
    #: every checkpoint, over any file of that name there; pluralign puts it in final/.
    model_card_dir: Path | None = None

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """TRL's card in :attr:`model_card_dir`, its body replaced by pluralign's card when
        the run set ``model_card_info`` (a :class:`pluralign.train.model_card.ModelCardInfo`:
        base model, method, belief format, groups)."""
        from pluralign.train.model_card import write_model_card

        if self.model_card_dir is None:
            return
        run_args = self.args  # type: ignore[attr-defined]
        output_dir, run_args.output_dir = run_args.output_dir, str(self.model_card_dir)
        try:
            super().create_model_card(*args, **kwargs)  # type: ignore[misc]
        finally:
            run_args.output_dir = output_dir
        # TRL's front matter (library_name, tags) is what the Hub reads: keep it; its body
        # names no base model and prompts through a chat pipeline, not belief first.
        info = getattr(self, "model_card_info", None)
        if info is not None and self.is_world_process_zero():  # type: ignore[attr-defined]
            try:
                write_model_card(self.model_card_dir / "README.md", info)
            except Exception as exc:  # a card never costs the run its weights
                logger.warning("final/README.md keeps TRL's card: pluralign's failed (%s)", exc)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        check_finite_tensors(self.model, self.state.global_step,  # type: ignore[attr-defined]
                             gradients=False, before="saving a checkpoint")
        super()._save_checkpoint(model, trial)  # type: ignore[misc]
        if self.args.should_save:  # type: ignore[attr-defined]
            folder = Path(self._get_output_dir(trial=trial)) / (  # type: ignore[attr-defined]
                f"checkpoint-{self.state.global_step}"  # type: ignore[attr-defined]
            )
            marker = folder / COMPLETE_MARKER
            with open(marker, "w") as handle:
                handle.write(f"{self.state.global_step}\n")  # type: ignore[attr-defined]
                handle.flush()
                os.fsync(handle.fileno())
