"""The lambda weight penalty: ``l1 * sum|w| + l2 * sum w^2`` over the model's kernels, with a gradient.

`Penalized` wraps any loss (ours or Keras's). The per-sample values are the wrapped loss's; the penalty is
added once per step to the total by the `LossModel` that `attach` creates, exactly like Keras's own
``kernel_regularizer`` (and with the same convention: no 1/2 factor, no division by the batch size).
Penalised weights are the trainable variables of rank >= 2 (dense and convolution kernels, embeddings);
biases and normalisation parameters are left alone, as weight decay conventionally does.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from aloss_tune.errors import ConfigError
from aloss_tune.losses._base import NON_NEGATIVE, PACKAGE
from aloss_tune.losses.model import ModelAwareLoss


def penalized_weights(model: keras.Model) -> list[Any]:
    """The variables a weight penalty applies to: trainable, rank >= 2."""
    return [v for v in model.trainable_variables if len(v.shape) >= 2]


def weight_penalty(weights: list[Any], l1: float = 0.0, l2: float = 0.0) -> Any:
    """``l1 * sum(|w|) + l2 * sum(w^2)`` over ``weights``, as a float32 scalar tensor."""
    total = ops.zeros((), dtype="float32")
    for w in weights:
        w = ops.cast(w, "float32")
        if l1:
            total = total + l1 * ops.sum(ops.abs(w))
        if l2:
            total = total + l2 * ops.sum(ops.square(w))
    return total


@keras.saving.register_keras_serializable(package=PACKAGE)
class Penalized(ModelAwareLoss):
    """Any loss plus an L1/L2 penalty on the model's kernels.

    Formula:
        ``total = loss(y_true, y_pred) + l1 * sum_w |w| + l2 * sum_w w^2``

    Args:
        loss: the wrapped loss (a `keras.losses.Loss` or its serialized dict).
        l1: L1 weight, >= 0.
        l2: L2 weight, >= 0.

    Apply it with ``model = aloss_tune.attach(model, loss)``; compiling a bare model with it raises an
    error at the first step rather than silently skipping the penalty.
    """

    def __init__(self, loss: Any, l1: float = 0.0, l2: float = 0.0, **kwargs: Any):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if not isinstance(loss, keras.losses.Loss):
            raise ConfigError(
                f"penalty: `loss` must be a keras.losses.Loss, but got {type(loss).__name__}."
            )
        if isinstance(loss, Penalized):
            raise ConfigError("penalty: `loss` is already penalized; give l1 and l2 once.")
        kwargs.setdefault("name", loss.name)
        kwargs.setdefault("reduction", loss.reduction)
        super().__init__(**kwargs)
        self.loss = loss
        self.l1 = NON_NEGATIVE.check("penalty", "l1", l1)
        self.l2 = NON_NEGATIVE.check("penalty", "l2", l2)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        self._require_host()
        return self.loss.call(y_true, y_pred)

    def create_state(self, model: keras.Model) -> keras.layers.Layer | None:
        inner = self.loss
        return inner.create_state(model) if isinstance(inner, ModelAwareLoss) else None

    def bind(self, host: Any) -> None:
        super().bind(host)
        if isinstance(self.loss, ModelAwareLoss):
            self.loss.bind(host)

    def penalty(self, model: keras.Model) -> Any:
        own = weight_penalty(penalized_weights(model), self.l1, self.l2)
        inner = self.loss.penalty(model) if isinstance(self.loss, ModelAwareLoss) else None
        return own if inner is None else own + inner

    def learned_values(self) -> dict[str, np.ndarray]:
        return self.loss.learned_values() if isinstance(self.loss, ModelAwareLoss) else {}

    def _params(self) -> dict[str, Any]:
        return {"loss": keras.saving.serialize_keras_object(self.loss), "l1": self.l1, "l2": self.l2}

    def __repr__(self) -> str:
        return f"Penalized({self.loss!r}, l1={self.l1!r}, l2={self.l2!r})"
