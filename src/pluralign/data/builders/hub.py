"""Reading a builder's source from the Hugging Face Hub, with a one-line error offline.

``datasets.load_dataset(id)`` with no network, or with ``HF_HUB_OFFLINE=1`` and
an id that is not in the local cache, ends in a ``ConnectionError`` (or a
``requests``/``huggingface_hub`` connection error) and a long traceback that
names neither the fix nor, at a glance, the dataset. :func:`load_hub_dataset`
turns every such failure into :class:`HubUnavailableError`, one line naming
the id and what to do; the CLI prints it as ``error: ...`` without traceback
(it is a ``ValueError``, which the data commands treat as the user's to fix).
"""

from __future__ import annotations

from typing import Any

#: How to do without the Hub, unless the caller names its own option (``--source FILE``).
DEFAULT_HINT = "pass a local copy of the data as the source"


class HubUnavailableError(ValueError):
    """The Hub could not be reached for a dataset id and no cached copy exists."""

    def __init__(self, dataset_id: str, reason: str, hint: str = DEFAULT_HINT,
                 offline: bool = False) -> None:
        self.dataset_id = dataset_id
        self.reason = reason
        online = "unset HF_HUB_OFFLINE to download it" if offline else (
            "connect to the Hub to download it")
        super().__init__(f"cannot load dataset '{dataset_id}' from the Hugging Face Hub "
                         f"({reason}) and it is not in the local cache: {hint}, or {online}")


def _offline() -> bool:
    """Whether the Hub client runs in offline mode (``HF_HUB_OFFLINE=1``)."""
    try:
        from huggingface_hub.constants import HF_HUB_OFFLINE
    except ImportError:  # pragma: no cover - huggingface_hub ships with datasets
        return False
    return bool(HF_HUB_OFFLINE)


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the Hub was not reached" (not "no such dataset").

    Built-in ``ConnectionError``/``TimeoutError`` cover ``datasets`` (it raises
    ``ConnectionError("Couldn't reach ... on the Hub")``) and huggingface_hub's
    ``OfflineModeIsEnabled``; ``requests`` errors are not built-in ones, and
    ``LocalEntryNotFoundError`` is how the hub client says "offline, not cached".
    """
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError

        errors.append(LocalEntryNotFoundError)
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    try:
        import requests

        errors += [requests.ConnectionError, requests.Timeout]
    except ImportError:  # pragma: no cover - requests is optional for the hub client
        pass
    return tuple(errors)


def _reason(error: BaseException) -> str:
    """A short cause: offline mode, or the error's type and its first line."""
    if _offline():
        return "offline mode: HF_HUB_OFFLINE=1"
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def load_hub_dataset(dataset_id: str, *, hint: str = DEFAULT_HINT, **kwargs: Any) -> Any:
    """``datasets.load_dataset(dataset_id, **kwargs)``; no Hub -> :class:`HubUnavailableError`.

    A dataset the Hub does not have (``DatasetNotFoundError``) is left as it is:
    its message already names the id, and going online would not help.
    """
    import datasets  # heavy, and only needed for the Hub path

    try:
        return datasets.load_dataset(dataset_id, **kwargs)
    except connection_errors() as error:
        # from None: the chained network traceback is the noise this error replaces.
        raise HubUnavailableError(dataset_id, _reason(error), hint, _offline()) from None
