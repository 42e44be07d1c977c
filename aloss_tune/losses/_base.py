"""Shared pieces of every loss: parameter domains (defined in `aloss_tune.domains`), shape alignment, the
base class.

Nothing here imports anything of ours but `aloss_tune.domains`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from aloss_tune.domains import (  # noqa: F401 - re-exported: the losses import them from here
    FINITE_NON_NEGATIVE,
    FINITE_POSITIVE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    Interval,
    check_bool,
    check_choice,
)

PACKAGE = "aloss_tune"


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
