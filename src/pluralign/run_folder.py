"""A run folder pluralign owns: it claims the folder, locks it, and never touches other files.

Rules (the README's "Runs" section states them for users):

- a new run goes into a folder that is absent or empty, or into one an earlier
  pluralign run created (its ``run.json`` says so) that holds no checkpoint and
  no ``final/`` (a run that died before it saved anything);
- a folder with a checkpoint or ``final/`` needs ``--resume`` (continue) or
  ``--overwrite`` (replace pluralign's own outputs there);
- a folder pluralign did not create is refused unless ``--overwrite``, and even
  then only if none of its entries has a name pluralign writes; files pluralign
  did not write are never deleted or rewritten;
- one run at a time: the run holds an exclusive lock on ``.pluralign.lock``
  (released when the process ends, even by SIGKILL), so a second run into the
  same folder fails at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pluralign.runs import (
    CONFIG_NAME,
    FINAL_DIR,
    FINAL_STAGING_DIR,
    META_NAME,
    METRICS_FILE,
    TENSORBOARD_DIR,
    TOKENIZED_DIR,
)

LOCK_NAME = ".pluralign.lock"
#: What a training run writes at the top of its folder; anything else there is the user's.
OWNED_NAMES = frozenset({
    CONFIG_NAME, META_NAME, METRICS_FILE, FINAL_DIR, FINAL_STAGING_DIR, TOKENIZED_DIR, LOCK_NAME,
    TENSORBOARD_DIR,
})
_OWNED_PATTERN = re.compile(r"^(incomplete-)?checkpoint-\d+$")


class RunFolderError(ValueError):
    """The output folder cannot be used as asked; the message says why and what to do."""


def is_owned_name(name: str) -> bool:
    return name in OWNED_NAMES or bool(_OWNED_PATTERN.match(name))


def created_by_pluralign(folder: Path) -> bool:
    """Whether ``folder`` holds the ``run.json`` a pluralign run writes first."""
    try:
        meta = json.loads((folder / META_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "pluralign_version" in meta


@dataclass
class RunFolderLock:
    """An exclusive lock on a run folder, held while the run lives."""

    path: Path
    handle: IO[str] | None

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing drops the flock; the file stays (harmless)
            self.handle = None


def lock_run_folder(folder: Path) -> RunFolderLock:
    """Take ``folder/.pluralign.lock`` or raise :class:`RunFolderError` if a live run holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+")  # noqa: SIM115 - held open for the run's lifetime
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the folder rules still hold
        return RunFolderLock(path, handle)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderError(
            f"{folder} is in use by another run ({holder}); wait for it to finish or choose "
            "another output_dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return RunFolderLock(path, handle)


def _saved_outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.name == FINAL_DIR or (_OWNED_PATTERN.match(p.name) and
                  not p.name.startswith("incomplete-")))


def remove_own_outputs(folder: Path) -> None:
    """Delete what earlier pluralign runs wrote in ``folder``; other entries stay."""
    for entry in folder.iterdir():
        if entry.name == LOCK_NAME or not is_owned_name(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_run_folder(folder: Path, *, resume: bool, overwrite: bool) -> str:
    """Decide how a run may use ``folder``.

    ``"new"``: write into it as it is (absent, empty, or the user's folder under
    ``--overwrite``); ``"fresh"``: delete what earlier pluralign runs wrote there
    first (``--overwrite``, or a run that died before it saved anything);
    ``"resume"``: continue the run there. Raises :class:`RunFolderError` when the
    rules in the module doc refuse it. Changes nothing on disk.
    """
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"output_dir {folder} is a file, not a folder")
    entries = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME) \
        if folder.is_dir() else []
    if not entries:
        return "new"
    if not created_by_pluralign(folder):
        if not overwrite:
            raise RunFolderError(
                f"output_dir {folder} is not empty ({len(entries)} entries, e.g. {entries[0]}) "
                "and no pluralign run created it; choose a new or empty folder, or pass "
                "--overwrite to write beside those files")
        clashes = [name for name in entries if is_owned_name(name)]
        if clashes:
            raise RunFolderError(
                f"output_dir {folder} holds {', '.join(clashes)}, names a run writes, and no "
                "pluralign run created them; move them or choose another output_dir")
        return "new"
    if resume:
        return "resume"
    saved = _saved_outputs(folder)
    if saved and not overwrite:
        raise RunFolderError(
            f"output_dir {folder} already holds a run ({', '.join(saved[-2:])}); pass --resume "
            "to continue it, --overwrite to replace it, or choose another output_dir")
    return "fresh"
