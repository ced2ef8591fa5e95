"""pluralign: pluralistic preference alignment for language models.

Train and evaluate models whose answers reflect the whole distribution of
beliefs in a group (GDPO, GPA), not only the majority's.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def __getattr__(name: str):
    # Lazy so that `import pluralign` (and `pluralign --help`) stays fast.
    if name == "load_model":
        from pluralign.models import load_model

        return load_model
    raise AttributeError(f"module 'pluralign' has no attribute {name!r}")
