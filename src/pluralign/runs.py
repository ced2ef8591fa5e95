"""Run folders: every run writes its resolved config beside its outputs."""

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
