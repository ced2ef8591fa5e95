"""Named registries: methods, metrics, judges, data builders and model keywords.

A training method, a metric or a data builder is *data*: an object registered
under a name. Code that needs one looks it up by name (from a config file or
the command line) instead of branching on the name, so adding a method never
touches a trainer. Unknown names fail with the list of known ones and the
closest matches.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Entry-point group through which other packages add methods, metrics, ...
PLUGIN_GROUP = "pluralign.plugins"

#: Modules of pluralign itself that register entries when imported. Later
#: subpackages append themselves here so that `pluralign ls` sees them.
BUILTIN_MODULES: list[str] = [
    "pluralign.models.registry",
    "pluralign.train.methods",
    "pluralign.eval.metrics",
    "pluralign.eval.reference",
    "pluralign.eval.judges",
    "pluralign.llm.config",
    "pluralign.data.builders",
    "pluralign.data.demo",
    "pluralign.beliefs.formats",
]


class RegistryError(Exception):
    """Base class of registry errors."""


class DuplicateNameError(RegistryError):
    """Raised when a name is registered twice in the same registry."""


class UnknownNameError(RegistryError, KeyError):
    """Raised when a name is looked up that nobody registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its one-line description."""

    name: str
    obj: T
    help: str


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...]) -> str:
    """Return ' Did you mean "x"?' for the closest candidates, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f'"{c}"' for c in close) + "?"


class Registry(Generic[T]):
    """A name -> object map with a decorator for registration.

    >>> metrics = Registry("metric")
    >>> @metrics.register("jsd")
    ... def jsd(p, q): ...
    >>> metrics.get("jsd") is jsd
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, obj: T | None = None, *, help: str | None = None
    ) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if not name or name != name.strip():
            raise RegistryError(f"invalid {self.kind} name {name!r}")

        def add(target: T) -> T:
            if name in self._entries:
                previous = self._entries[name].obj
                raise DuplicateNameError(
                    f'{self.kind} "{name}" is already registered '
                    f"(by {getattr(previous, '__module__', '?')}."
                    f"{getattr(previous, '__qualname__', repr(previous))}); "
                    "pick another name or unregister the old one first"
                )
            self._entries[name] = Entry(name, target, help or _first_doc_line(target))
            return target

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        self.get(name)  # raises the helpful error for unknown names
        del self._entries[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name].obj
        except KeyError:
            known = sorted(self._entries)
            hint = did_you_mean(name, known)
            listing = ", ".join(known) if known else "(none registered)"
            raise UnknownNameError(
                f'unknown {self.kind} "{name}".{hint} Known {self.kind}s: {listing}'
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def registration_order(self) -> list[str]:
        """Names in the order they were registered: pluralign's own before plugins'.

        Evaluation computes metrics in this order, so eval.json lists the
        built-in ones as the metric modules define them, not alphabetically.
        """
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


METHODS: Registry[Any] = Registry("method")
METRICS: Registry[Callable[..., Any]] = Registry("metric")
JUDGES: Registry[Any] = Registry("judge")
BUILDERS: Registry[Callable[..., Any]] = Registry("data builder")
MODELS: Registry[Any] = Registry("model keyword")
LLM_BACKENDS: Registry[Callable[..., Any]] = Registry("llm backend")
REFERENCE_LINES: Registry[Callable[..., Any]] = Registry("reference line")
SEQUENCE_FORMATS: Registry[Any] = Registry("sequence format")

#: The registries that `pluralign ls` shows, in display order.
ALL_REGISTRIES: dict[str, Registry[Any]] = {
    "methods": METHODS,
    "metrics": METRICS,
    "judges": JUDGES,
    "builders": BUILDERS,
    "models": MODELS,
    "llm-backends": LLM_BACKENDS,
    "reference-lines": REFERENCE_LINES,
    "sequence-formats": SEQUENCE_FORMATS,
}


def load_all() -> list[str]:
    """Import pluralign's registering modules and installed plugins.

    Returns the names of plugins that failed to load (with the reason), so a
    broken third-party plugin is reported instead of hiding pluralign's own
    entries.
    """
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return load_plugins()


def load_plugins() -> list[str]:
    """Import the installed plugins only (the ``pluralign.plugins`` entry points).

    For code that must not import all of pluralign (evaluation never imports
    training); returns the failures as :func:`load_all` does. Loading twice is
    harmless: a plugin module registers when it is first imported.
    """
    failures = []
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not break `pluralign ls`
            failures.append(f"{ep.name} ({ep.value}): {type(exc).__name__}: {exc}")
    return failures
