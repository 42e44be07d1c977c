"""aloss-tune: searchable, trackable, reloadable Keras losses.

``import aloss_tune`` registers every loss class with Keras (so ``keras.saving.load_model`` finds them with
no ``custom_objects``); search, tracking and best-loss helpers load on first use (PEP 562), so the import
pulls in neither optuna nor keras_tuner nor mlflow::

    import aloss_tune
    loss = aloss_tune.build_loss({"loss": "huber", "loss.delta": 1.5})
    loss = aloss_tune.load_best_loss("robust_regression")

If Keras is not imported yet, it is imported with TensorFlow's native start-up lines (written straight to
file descriptor 2) silenced; set ``ALOSS_TUNE_VERBOSE_IMPORT=1`` to see them.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from aloss_tune.errors import AlossTuneError, ConfigError, StudyFailed, TrialFailed, UsageError


def load_keras() -> None:
    """Import Keras (quietly, see above) and register every loss class for deserialization."""
    if not os.environ.get("ALOSS_TUNE_VERBOSE_IMPORT"):
        from aloss_tune._quiet import import_keras_quietly

        import_keras_quietly()
    import aloss_tune.losses  # noqa: F401


def _from_command_line() -> bool:
    """Started as the ``aloss-tune`` command, which loads Keras only for a command that needs it, so that
    ``aloss-tune --help`` answers at once."""
    argv = getattr(sys, "argv", None) or [""]
    return os.path.basename(argv[0]) in ("aloss-tune", "aloss-tune.exe")


if not _from_command_line():
    load_keras()

__version__ = "0.1.0"

_LAZY = {
    "LossFactory": "aloss_tune.factories",
    "ParamSpec": "aloss_tune.factories",
    "build_loss": "aloss_tune.factories",
    "get_factory": "aloss_tune.factories",
    "list_losses": "aloss_tune.factories",
    "register_loss_factory": "aloss_tune.factories",
    "attach": "aloss_tune.losses",
    "export": "aloss_tune.losses",
    "learned_values": "aloss_tune.losses",
    "SearchSpace": "aloss_tune.space",
    "tune": "aloss_tune.api",
    "TuneResult": "aloss_tune.result",
    "load_best_loss": "aloss_tune.best",
    "load_best_params": "aloss_tune.best",
    "load_loss": "aloss_tune.best",
}
_SUBMODULES = ("losses", "factories", "datasets", "distributions", "space", "best", "tracking", "runner",
               "models")


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


__all__ = ["AlossTuneError", "ConfigError", "StudyFailed", "TrialFailed", "UsageError", "__version__", *_LAZY]
