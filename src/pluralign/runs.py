"""The run folder contract: what a run writes where, named once.

A training run's folder (``pluralign train --output_dir RUN``)::

    RUN/config.yaml            the resolved config (CONFIG_NAME)
    RUN/run.json               version, command, library versions (META_NAME)
    RUN/metrics.jsonl          every logged record, train and eval (METRICS_FILE)
    RUN/tokenized/             the tokenised datasets (TOKENIZED_DIR)
    RUN/checkpoint-N/          Trainer checkpoints
    RUN/runs/                  TensorBoard event files (TENSORBOARD_DIR, transformers' default)
    RUN/final/                 the trained model (FINAL_DIR), written through
    RUN/final.partial/         a staging folder (FINAL_STAGING_DIR) so a crash
                               never leaves half a model
    RUN/final/pluralign_format.json   method, sequence format, pairing (FORMAT_FILE)

:func:`write_format_info` and :func:`read_format_info` are the one writer and
reader of the format file; training writes it, evaluation and generation read it.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from pluralign import __version__
from pluralign.config import save_config

CONFIG_NAME = "config.yaml"
META_NAME = "run.json"
METRICS_FILE = "metrics.jsonl"
TOKENIZED_DIR = "tokenized"
FINAL_DIR = "final"
FINAL_STAGING_DIR = "final.partial"
#: Where transformers' TensorBoard callback writes (``OUTPUT_DIR/runs/<time>_<host>``) unless
#: ``logging_dir`` says otherwise; an ``--overwrite`` run removes the earlier run's events.
TENSORBOARD_DIR = "runs"
#: What ``final/`` records beside the weights: the method, the sequence format
#: (:meth:`pluralign.beliefs.formats.SequenceFormat.to_info`) and the pairing, so that
#: evaluation and generation build the sequences training used.
FORMAT_FILE = "pluralign_format.json"


def write_format_info(model_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write ``model_dir/pluralign_format.json``; returns its path."""
    path = Path(model_dir) / FORMAT_FILE
    path.write_text(json.dumps(info, indent=2))
    return path


def read_format_info(model_ref: str | Path) -> dict[str, Any]:
    """The format file of a trained model ({} when there is none: a model pluralign did
    not train, or a hub id)."""
    path = Path(model_ref) / FORMAT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def prepare_run_dir(output_dir: str | Path, config: Any, *, command: str = "") -> Path:
    """Create ``output_dir`` and write ``config.yaml`` (resolved) and ``run.json``.

    ``config.yaml`` holds every field after defaults, YAML and overrides were
    applied, so ``pluralign <command> output_dir/config.yaml`` repeats the run.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / CONFIG_NAME)
    meta = {
        "pluralign_version": __version__,
        "command": command or " ".join(sys.argv),
        "config_class": f"{type(config).__module__}.{type(config).__qualname__}",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _library_versions(),
    }
    (out / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions
