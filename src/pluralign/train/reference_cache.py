"""Reference log-probs computed for the rows a run uses, once each, when they are first used.

TRL's ``precompute_ref_log_probs=True`` scores the whole train and eval datasets
before step 1: a 6-step run spent 7 of its 8 minutes scoring 912 rows when it
used 24. :class:`LazyReferenceMixin` keeps TRL's contract (no reference forward
for a row after its first use, the same values) but moves the work into the
steps: TRL's precompute pass only adds a row key column (:data:`ROW_KEY`), the
collators carry the keys into the batch, and the loss looks each row up in a
:class:`ReferenceCache`, scoring the rows it has not seen in one reference
forward. Set-up is then proportional to the steps run, and a row that comes back
in a later epoch (or a later evaluation) is never scored again.

Each process keeps its own cache for the rows its sampler gives it, and the
reference forward involves no other process, so multi-process (DDP) runs stay
correct with no communication. Where that is not so the trainers keep TRL's
eager pass: under DeepSpeed or FSDP (every process must take part in each
forward of a sharded model), and for full fine-tuning without a ``ref_model``
(the reference is then the policy before step 1, gone once training starts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset

logger = logging.getLogger(__name__)

#: Dataset column (and batch key) holding a row's key in the reference cache.
ROW_KEY = "ref_row"

LAZY_REF_HELP = {"help": (
    "With precompute_ref_log_probs: compute a row's reference log-probs the first time a batch "
    "uses it and reuse them afterwards (later epochs, later evaluations), instead of TRL's pass "
    "over the whole train and eval datasets before step 1; same values, set-up proportional to "
    "the steps run. TRL's eager pass is kept under DeepSpeed/FSDP and for full fine-tuning "
    "without a ref_model. False: always TRL's eager pass.")}

#: Reference log-probs of a batch, one tensor (or None: not computed) per kind.
Logps = tuple[torch.Tensor | None, ...]


class ReferenceCache:
    """Reference log-probs by row key; keys are unique across the datasets of one trainer."""

    def __init__(self) -> None:
        self._values: dict[int, tuple[float | None, ...]] = {}
        self._offsets: dict[str, int] = {}  # dataset fingerprint -> its first key
        self._next_key = 0

    def __len__(self) -> int:
        """Rows scored so far."""
        return len(self._values)

    def keyed(self, dataset: Dataset) -> Dataset:
        """``dataset`` with the :data:`ROW_KEY` column; a dataset seen before (same
        fingerprint) gets the same keys, so ``evaluate(dataset)`` twice scores it once."""
        if ROW_KEY in dataset.column_names:
            dataset = dataset.remove_columns(ROW_KEY)
        offset = self._offsets.get(dataset._fingerprint)
        if offset is None:
            offset = self._offsets[dataset._fingerprint] = self._next_key
            self._next_key += len(dataset)
        return dataset.add_column(ROW_KEY, list(range(offset, offset + len(dataset))))

    def lookup(self, keys: torch.Tensor,
               compute: Callable[[torch.Tensor], Sequence[torch.Tensor | None]]) -> Logps:
        """The cached values of the rows ``keys`` (B,), one float32 tensor (B,) per kind.

        Rows not cached yet are scored by ``compute(positions)``, called once with
        their positions in the batch; it returns one tensor (or None) per kind.
        """
        wanted = keys.tolist()
        new: dict[int, int] = {}  # key -> its first position in the batch
        for position, key in enumerate(wanted):
            if key not in self._values:
                new.setdefault(key, position)
        if new:
            positions = torch.tensor(list(new.values()), device=keys.device)
            columns = [None if v is None else v.detach().float().cpu().tolist()
                       for v in compute(positions)]
            for row, key in enumerate(new):
                self._values[key] = tuple(None if c is None else c[row] for c in columns)
        rows = [self._values[key] for key in wanted]
        return tuple(None if rows[0][kind] is None else
                     torch.tensor([r[kind] for r in rows], dtype=torch.float32, device=keys.device)
                     for kind in range(len(rows[0])))


def add_row_keys(batch: dict[str, Any], examples: Sequence[dict[str, Any]]) -> None:
    """Carry the examples' row keys into a collated batch (as a tensor: accelerate moves and
    splits tensors only)."""
    if ROW_KEY in examples[0]:
        batch[ROW_KEY] = torch.tensor([int(e[ROW_KEY]) for e in examples])


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode (no dropout), as TRL's precompute before training scores it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def batch_rows(inputs: dict[str, Any], positions: torch.Tensor, *, paired: bool
               ) -> dict[str, Any]:
    """The rows ``positions`` of a collated batch; ``paired``: its tensors hold the chosen
    rows then the rejected rows (2B), else one row per example (B)."""
    size = inputs["input_ids"].size(0)
    index = torch.cat([positions, positions + size // 2]) if paired else positions
    return {k: v.index_select(0, index.to(v.device))
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.size(0) == size else v
            for k, v in inputs.items()}


class LazyReferenceMixin:
    """Mix into a subclass of TRL's ``DPOTrainer`` or ``KTOTrainer``, before the TRL class.

    The subclass's collator calls :func:`add_row_keys`, its loss pops :data:`ROW_KEY`
    from the batch and, when it is there, gets the reference log-probs from
    :meth:`_lazy_reference_logps`.
    """

    _reference_cache: ReferenceCache | None = None

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        blocker = self._lazy_reference_blocker(dataset)
        if blocker is not None:
            logger.info("reference log-probs of the %s dataset are computed before training: %s",
                        name, blocker)
            return super()._precompute_ref_logps(dataset, name, batch_size)  # type: ignore[misc]
        if self._reference_cache is None:
            self._reference_cache = ReferenceCache()
        return self._reference_cache.keyed(dataset)

    def _lazy_reference_blocker(self, dataset: Any) -> str | None:
        """Why this run keeps TRL's eager precompute (None: it computes lazily)."""
        if not getattr(self.args, "lazy_ref_log_probs", True):  # type: ignore[attr-defined]
            return "lazy_ref_log_probs=False"
        if not isinstance(dataset, Dataset):
            return "it is not a map-style Dataset"
        if getattr(self, "ref_model", None) is None and not is_peft_model(self.model):  # type: ignore[attr-defined]
            return ("full fine-tuning without a ref_model: the reference is the policy before "
                    "step 1 (pass ref_model to compute them as batches use them)")
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:  # type: ignore[attr-defined]
            return "under DeepSpeed or FSDP every process must run each reference forward"
        return None

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[misc]
        self._signature_columns = list(dict.fromkeys(  # type: ignore[has-type]
            [*self._signature_columns, ROW_KEY]))

    def _lazy_reference_logps(self, rows: torch.Tensor, inputs: dict[str, Any], *,
                              paired: bool) -> Logps:
        """Reference log-probs of the batch ``inputs`` (its :data:`ROW_KEY` already popped
        as ``rows``), as ``compute_ref_log_probs`` returns them, from the cache."""
        assert self._reference_cache is not None  # rows come only from keyed datasets
        model = self.ref_model or self.model  # type: ignore[attr-defined]

        def compute(positions: torch.Tensor) -> Sequence[torch.Tensor | None]:
            with eval_mode(model):
                return self.compute_ref_log_probs(  # type: ignore[attr-defined]
                    model, batch_rows(inputs, positions, paired=paired))

        return self._reference_cache.lookup(rows, compute)
