"""``report_to``: which logging backends a run may name, checked before anything loads.

transformers builds a backend's callback only when the trainer is created, after
the records are read and the model is loaded, and a missing package then ends in
a long traceback. :func:`check_report_to` fails at config validation instead,
with one line naming the backend and its install command.

Availability is tested the way ``transformers.integrations`` tests it
(``is_tensorboard_available``, ``is_wandb_available``): ``importlib.util.find_spec``,
which finds a package without importing it, so validating a config stays fast.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from pluralign.registry import did_you_mean

#: The backends pluralign has an extra for: name -> the packages any one of which
#: provides it (transformers' TensorBoardCallback takes tensorboardX as well).
REPORT_BACKENDS: dict[str, tuple[str, ...]] = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
}

#: transformers' other backends (``INTEGRATION_TO_CALLBACK``, and ``all``): pluralign has no
#: extra for them and passes them through; transformers checks them when the trainer is built.
#: Listed here (not imported: the integrations module takes seconds) for the spelling check.
OTHER_BACKENDS = ("all", "azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive",
                  "flyte", "kubeflow", "mlflow", "neptune", "swanlab", "trackio")

#: The names transformers reads as "no backend"; pluralign always writes metrics.jsonl.
NO_BACKEND = "none"


def install_hint(name: str) -> str:
    """The command that installs backend ``name`` through pluralign's extra."""
    return f'pip install "pluralign[{name}]"'


def backend_available(name: str) -> bool:
    """Whether one of the packages that provide backend ``name`` is installed."""
    return any(importlib.util.find_spec(package) is not None
               for package in REPORT_BACKENDS[name])


def check_report_to(names: Iterable[str]) -> None:
    """Raise ``ValueError`` (one line) for an unknown or a not-installed backend.

    ``none`` is accepted alone (transformers reads ``["none"]`` as no backend but
    would reject it beside a real one).
    """
    names = list(names)
    if NO_BACKEND in names and len(names) > 1:
        raise ValueError(f"report_to: {NO_BACKEND} cannot be combined with other backends, got "
                         f"{', '.join(names)}")
    for name in names:
        if name == NO_BACKEND or name in OTHER_BACKENDS:
            continue
        if name not in REPORT_BACKENDS:
            known = (*REPORT_BACKENDS, *OTHER_BACKENDS, NO_BACKEND)
            raise ValueError(f"report_to: unknown backend {name!r}.{did_you_mean(name, known)} "
                             f"Known: {', '.join(known)}")
        if not backend_available(name):
            raise ValueError(f"report_to: {name} is not installed; {install_hint(name)}")
