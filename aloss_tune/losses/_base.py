"""Shared pieces of every loss: parameter domains, shape alignment, the base class.

Nothing here imports anything of ours but `aloss_tune.errors`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from aloss_tune.errors import ConfigError, describe

PACKAGE = "aloss_tune"


@dataclass(frozen=True)
class Interval:
    """A numeric domain such as ``> 0``, ``[0, 1]`` or ``>= -1``; validates values with clear errors."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        lo_inf, hi_inf = self.low == -math.inf, self.high == math.inf
        if lo_inf and hi_inf:
            return "any number" if not self.integer else "any integer"
        if hi_inf:
            finite = " and finite" if self.high_open else ""
            return f"{'>' if self.low_open else '>='} {self.low:g}{finite}"
        if lo_inf:
            finite = " and finite" if self.low_open else ""
            return f"{'<' if self.high_open else '<='} {self.high:g}{finite}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def check(self, owner: str, name: str, value: Any) -> float:
        """Return ``value`` as a float (or int) if it lies in the domain, else raise `ConfigError`."""
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok_type:
            try:  # numpy scalars
                import numpy as np

                ok_type = isinstance(value, np.number) and not isinstance(value, np.bool_)
            except ImportError:  # pragma: no cover
                pass
        if not ok_type:
            kind = "an integer" if self.integer else "a number"
            raise ConfigError(f"{owner}: `{name}` must be {kind} {self}, but got {name}={describe(value)}.")
        number = float(value)
        if self.integer and not number.is_integer():
            raise ConfigError(f"{owner}: `{name}` must be an integer {self}, but got {name}={describe(value)}.")
        if not self.contains(number):
            raise ConfigError(f"{owner}: `{name}` must be {self}, but got {name}={describe(value)}.")
        return int(number) if self.integer else number


POSITIVE = Interval(0.0, math.inf, low_open=True)
NON_NEGATIVE = Interval(0.0, math.inf)
UNIT = Interval(0.0, 1.0)
# Open at infinity: a hyperparameter that must be a finite number (a weight, a Huber delta, ...).
FINITE_POSITIVE = Interval(0.0, math.inf, low_open=True, high_open=True)
FINITE_NON_NEGATIVE = Interval(0.0, math.inf, high_open=True)


def check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: `{name}` must be true or false, but got {name}={describe(value)}.")
    return value


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"{owner}: `{name}` must be one of {', '.join(choices)}, but got {name}={describe(value)}."
        )
    return value


def align(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Bring ``y_true`` to ``y_pred``'s dtype and rank, exactly as Keras's built-in losses do.

    Keras hands a loss ``y_true`` of shape ``(B,)`` and ``y_pred`` of shape ``(B, 1)`` when labels are 1-D;
    subtracting them would silently broadcast to ``(B, B)``. When the ranks differ by one and the longer
    tensor ends in an axis of size one, the shorter is expanded if it is 1-D (so that a mean over the last
    axis still leaves one value per sample) and the longer is squeezed otherwise.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            y_true = ops.expand_dims(y_true, axis=-1)
        else:
            y_pred = ops.squeeze(y_pred, axis=-1)
    elif true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            y_pred = ops.expand_dims(y_pred, axis=-1)
        else:
            y_true = ops.squeeze(y_true, axis=-1)
    return y_true, y_pred


class Loss(keras.losses.Loss):
    """Base class of aloss-tune's losses: hyperparameters live in ``_params`` and in ``get_config``.

    Subclasses implement ``call(y_true, y_pred)`` returning per-sample values (the mean over the last axis);
    Keras applies ``sample_weight`` and the reduction.
    """

    def __init__(self, *, name: str | None = None, reduction: str = "sum_over_batch_size", dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _params(self) -> dict[str, Any]:
        """The hyperparameters, exactly as ``__init__`` takes them."""
        return {}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._params())
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"
