"""pluralign: pluralistic preference alignment for language models.

Train and evaluate models whose answers reflect the whole distribution of
beliefs in a group (GDPO, GPA), not only the majority's.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "SamplingOptions",
    "__version__",
    "generate_beliefs_first",
    "load_model",
    "load_sequence_format",
]

#: Public names re-exported lazily (module that defines them), so that `import pluralign`
#: (and `pluralign --help`) stays fast and the top package imports nothing heavy.
_LAZY = {
    "load_model": "pluralign.models",
    "load_sequence_format": "pluralign.eval.generate",
    "generate_beliefs_first": "pluralign.eval.generate",
    "SamplingOptions": "pluralign.eval.generate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pluralign' has no attribute {name!r}")
