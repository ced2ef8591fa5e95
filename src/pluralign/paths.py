"""Where pluralign keeps files of its own (converted models, caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$PLURALIGN_CACHE``, else ``$XDG_CACHE_HOME/pluralign``, else ``~/.cache/pluralign``."""
    explicit = os.environ.get("PLURALIGN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pluralign"
