"""Training: tokenisation of group preference records, loss functions and trainers.

``pluralign.train(config)`` runs a :class:`~pluralign.train.config.TrainConfig`
(the same run that ``pluralign train CONFIG.yaml`` builds); the package itself
is callable for that. Submodules are imported on demand
(``pluralign.train.losses``, ``pluralign.train.preference``, ...) so that
importing this package stays light.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def train(config: Any, **options: Any) -> Any:
    """Run a training config; see :func:`pluralign.train.api.train`."""
    from pluralign.train.api import train as run

    return run(config, **options)


class _CallableModule(types.ModuleType):
    # `pluralign.train` is both this package and the documented entry point
    # `pluralign.train(config)`: calling the module runs the config.
    def __call__(self, config: Any, **options: Any) -> Any:
        return train(config, **options)


sys.modules[__name__].__class__ = _CallableModule
