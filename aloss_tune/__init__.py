"""aloss-tune: searchable, trackable, reloadable Keras losses.

Loss maths and factories import eagerly (they need only Keras); search, tracking and best-loss helpers load
lazily on first use, so ``import aloss_tune`` stays light and pulls in neither optuna nor mlflow.
"""

from __future__ import annotations

import importlib
from typing import Any

from aloss_tune.errors import AlossTuneError, ConfigError, TrialFailed, UsageError
from aloss_tune.factories import (
    LossFactory,
    ParamSpec,
    build_loss,
    get_factory,
    list_losses,
    register_loss_factory,
)
from aloss_tune.losses import attach, learned_values

__version__ = "0.1.0"

_LAZY = {
    "SearchSpace": "aloss_tune.space",
    "tune": "aloss_tune.api",
    "TuneResult": "aloss_tune.api",
    "load_best_loss": "aloss_tune.best",
    "load_best_params": "aloss_tune.best",
    "load_loss": "aloss_tune.best",
    "datasets": "aloss_tune.datasets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == "datasets" else getattr(module, name)
    raise AttributeError(f"module 'aloss_tune' has no attribute {name!r}")


__all__ = [
    "AlossTuneError",
    "ConfigError",
    "LossFactory",
    "ParamSpec",
    "TrialFailed",
    "UsageError",
    "attach",
    "build_loss",
    "get_factory",
    "learned_values",
    "list_losses",
    "register_loss_factory",
    *_LAZY,
]
