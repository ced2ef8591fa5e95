"""How a training run starts in its folder: new, fresh over its own dead run, or resumed.

:func:`claimed_run_folder` applies the rules of :mod:`pluralign.run_folder`,
holds the folder's lock for the whole run, and on ``--resume`` checks that the
settings the checkpoint's optimiser and scheduler depend on did not change:
the Trainer restores those from the checkpoint, so a new learning rate would
be silently ignored while ``config.yaml`` recorded it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pluralign.config import ConfigError, to_plain
from pluralign.run_folder import (
    RunFolderError,
    check_run_folder,
    lock_run_folder,
    remove_own_outputs,
)
from pluralign.runs import CONFIG_NAME, METRICS_FILE, prepare_run_dir
from pluralign.train.common import last_complete_checkpoint, process_state

logger = logging.getLogger(__name__)

#: Settings a resumed run may change: how long it runs and how often it logs, evaluates
#: and saves. Any other difference from the run's config.yaml is refused.
RESUMABLE_CHANGES = frozenset({
    "max_steps", "resume", "overwrite", "logging_steps", "eval_steps", "save_steps",
    "save_total_limit", "report_to", "eval_file", "max_eval_examples",
    "per_device_eval_batch_size",
})


@dataclass
class RunStart:
    """How the run started: ``new``, ``fresh`` (own earlier outputs removed) or ``resume``."""

    mode: str
    checkpoint: Path | None = None

    def describe(self, folder: Path) -> str:
        if self.checkpoint is not None:
            return f"resuming {folder} from {self.checkpoint.name}"
        if self.mode == "fresh":
            return f"starting {folder} fresh (earlier outputs of pluralign there were removed)"
        return f"starting a new run in {folder}"


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``field: saved -> current`` for each difference a resume cannot apply."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES or saved.get(key) == current.get(key):
            continue
        changes.append(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}")
    return changes


def _check_resume_settings(config: Any, folder: Path, checkpoint: Path) -> None:
    path = folder / CONFIG_NAME
    try:
        saved = type(config).load(path).to_dict()
    except (OSError, ConfigError, ValueError) as exc:
        raise RunFolderError(f"{path}: cannot read the run's settings to resume it ({exc})") \
            from None
    changes = changed_settings(saved, to_plain(config))
    if changes:
        raise RunFolderError(
            f"--resume from {checkpoint} restores the optimiser and learning-rate schedule of "
            f"that run, so these changes would not apply: {'; '.join(changes)}. Resume with the "
            f"settings of {path}, or start a new run from the checkpoint's weights "
            f"(--model.model {checkpoint} --output_dir NEW_FOLDER)")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from (they will be logged again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _decide(config: Any, folder: Path) -> RunStart:
    """On the main process, with the folder locked: how this run starts."""
    mode = check_run_folder(folder, resume=config.resume, overwrite=config.overwrite)
    if mode == "resume":
        checkpoint = last_complete_checkpoint(folder)
        if checkpoint is None:
            logger.warning("--resume: %s holds no complete checkpoint; starting fresh", folder)
            mode = "fresh"
        else:
            _check_resume_settings(config, folder, checkpoint)
            _truncate_metrics(folder / METRICS_FILE, int(checkpoint.name.split("-")[1]))
            return RunStart("resume", checkpoint)
    if mode == "fresh":
        remove_own_outputs(folder)  # never a file pluralign did not write
    return RunStart(mode)


@contextmanager
def claimed_run_folder(config: Any) -> Iterator[RunStart]:
    """Claim and lock ``config.output_dir`` for one run; write its config.yaml and run.json.

    Refusals (a folder that is not pluralign's, a finished run without
    ``--resume``/``--overwrite``, a folder in use, changed settings on resume)
    raise :class:`RunFolderError` before anything is written.
    """
    folder = Path(config.output_dir)
    state = process_state()
    lock = None
    try:
        with state.main_process_first():
            if state.is_main_process:
                check_run_folder(folder, resume=config.resume, overwrite=config.overwrite)
                lock = lock_run_folder(folder)  # creates the folder; refuses a busy one
                start = _decide(config, folder)
                prepare_run_dir(folder, config)
                # A plain new run is the expected case; say so only when asked (--verbose).
                (logger.info if start.mode == "new" else logger.warning)(start.describe(folder))
            else:
                checkpoint = last_complete_checkpoint(folder) if config.resume else None
                start = RunStart("resume" if checkpoint else "new", checkpoint)
        yield start
    finally:
        if lock is not None:
            lock.release()
