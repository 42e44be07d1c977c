"""aloss-tune: searchable, trackable, reloadable Keras losses.

Everything is imported on first use (PEP 562), so ``import aloss_tune`` is instant and pulls in neither
Keras nor optuna nor mlflow until a name that needs them is touched::

    import aloss_tune
    loss = aloss_tune.build_loss({"loss": "huber", "loss.delta": 1.5})
    loss = aloss_tune.load_best_loss("robust_regression")
"""

from __future__ import annotations

import importlib
from typing import Any

from aloss_tune.errors import AlossTuneError, ConfigError, TrialFailed, UsageError

__version__ = "0.1.0"

_LAZY = {
    "LossFactory": "aloss_tune.factories",
    "ParamSpec": "aloss_tune.factories",
    "build_loss": "aloss_tune.factories",
    "get_factory": "aloss_tune.factories",
    "list_losses": "aloss_tune.factories",
    "register_loss_factory": "aloss_tune.factories",
    "attach": "aloss_tune.losses",
    "learned_values": "aloss_tune.losses",
    "SearchSpace": "aloss_tune.space",
    "tune": "aloss_tune.api",
    "TuneResult": "aloss_tune.api",
    "load_best_loss": "aloss_tune.best",
    "load_best_params": "aloss_tune.best",
    "load_loss": "aloss_tune.best",
}
_SUBMODULES = ("losses", "factories", "datasets", "distributions", "space", "best", "tracking", "runner")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"aloss_tune.{name}")
    raise AttributeError(f"module 'aloss_tune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBMODULES])


__all__ = ["AlossTuneError", "ConfigError", "TrialFailed", "UsageError", "__version__", *_LAZY]
