"""Probabilities and log-probabilities for the cross-entropy losses, computed stably.

Two input conventions, handled the same way everywhere:

* ``from_logits=True``: log-probabilities come from a stable log-sigmoid (binary) or log-softmax
  (categorical), exact for any finite logit; ``log_sigmoid(-1e4)`` is ``-1e4``, not ``-inf``.
* ``from_logits=False``: probabilities are clipped to ``[eps, 1 - eps]`` before the logarithm, as Keras
  does, with ``eps`` from `probability_epsilon`.

Probabilities that multiply or divide a loss (a focal factor, a confidence weight) are clipped to the same
``[eps, 1 - eps]`` in both conventions, so that a weight such as ``1 / p_t`` or ``(1 - p_t) ** gamma`` and
its gradient stay finite when a prediction is exactly 0 or 1.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


def probability_epsilon(dtype: Any) -> float:
    """The clipping epsilon for probabilities of ``dtype``.

    Formula:
        ``eps = max(keras.config.epsilon(), epsneg(dtype))``

    where ``epsneg`` is the gap between 1 and the largest number below it. For float32 and float64 this is
    Keras's own epsilon (1e-7), so results match Keras's losses; for float16 and bfloat16 it is the
    smallest value for which ``1 - eps`` still differs from 1, so ``log(1 - p)`` stays finite.

    Args:
        dtype: the floating dtype of the probabilities.
    """
    name = keras.backend.standardize_dtype(dtype)
    if name == "bfloat16":
        epsneg = 2.0**-8
    else:
        epsneg = float(np.finfo(name).epsneg)
    return max(float(keras.config.epsilon()), epsneg)


def clip_probability(p: Any, eps: float) -> Any:
    """``clip(p, eps, 1 - eps)``, whose derivative is written as 1 inside ``[eps, 1 - eps]`` and 0 outside.

    That is TensorFlow's derivative of a clip. JAX's takes a division per element (it halves the derivative
    where the value ties with a bound), which XLA then writes out as a full-size array.
    """

    @ops.custom_gradient
    def fn(p: Any) -> Any:
        def grad(*args: Any, upstream: Any = None) -> Any:
            if upstream is None:
                (upstream,) = args
            return ops.where(ops.logical_and(p >= eps, p <= 1.0 - eps), upstream, 0.0)

        return ops.clip(p, eps, 1.0 - eps), grad

    return fn(p)


def binary_log_probs(y_pred: Any, from_logits: bool) -> tuple[Any, Any]:
    """``(log p, log(1 - p))`` for the probability ``p`` of class 1 of each element.

    Args:
        y_pred: logits or probabilities.
        from_logits: whether ``y_pred`` holds logits.
    """
    if from_logits:
        return ops.log_sigmoid(y_pred), ops.log_sigmoid(-y_pred)
    eps = probability_epsilon(y_pred.dtype)
    p = clip_probability(y_pred, eps)
    return ops.log(p), ops.log(1.0 - p)


def binary_probs(y_pred: Any, from_logits: bool, clip: bool = True) -> tuple[Any, Any]:
    """``(p, 1 - p)`` for the probability ``p`` of class 1, each computed without cancellation.

    Args:
        y_pred: logits or probabilities.
        from_logits: whether ``y_pred`` holds logits (then ``1 - p`` is ``sigmoid(-y_pred)``).
        clip: clip both to ``[eps, 1 - eps]`` (see `probability_epsilon`).
    """
    eps = probability_epsilon(y_pred.dtype)
    if from_logits:
        p, q = ops.sigmoid(y_pred), ops.sigmoid(-y_pred)
        return (clip_probability(p, eps), clip_probability(q, eps)) if clip else (p, q)
    if clip:
        p = clip_probability(y_pred, eps)
        return p, 1.0 - p  # in [eps, 1 - eps] too: one clip instead of two
    return y_pred, 1.0 - y_pred


def binary_crossentropy(y_true: Any, log_p: Any, log_q: Any) -> Any:
    """Element-wise binary cross-entropy ``-(y log p + (1 - y) log(1 - p))`` from log-probabilities."""
    return -(y_true * log_p + (1.0 - y_true) * log_q)


def categorical_log_probs(y_pred: Any, from_logits: bool, axis: int = -1) -> Any:
    """Log-probabilities over the classes on ``axis``.

    Logits go through a stable log-softmax. Probabilities are renormalised to sum to one (as Keras does)
    and clipped to ``[eps, 1 - eps]`` before the logarithm.
    """
    if from_logits:
        return ops.log_softmax(y_pred, axis=axis)
    eps = probability_epsilon(y_pred.dtype)
    total = ops.sum(y_pred, axis=axis, keepdims=True)
    # A row of zeros has no distribution; its probabilities become eps after clipping, not NaN.
    total = ops.where(total > 0, total, ops.ones_like(total))
    return ops.log(clip_probability(y_pred / total, eps))


def check_one_hot_rank(owner: str, y_true: Any, y_pred: Any) -> None:
    """Refuse integer labels given to a categorical loss, which would broadcast silently.

    Raises:
        ValueError: ``y_true`` and ``y_pred`` do not have the same rank.
    """
    if len(y_true.shape) != len(y_pred.shape):
        raise ValueError(
            f"{owner}: `y_true` must be one-hot with the shape of `y_pred` (..., classes), but got "
            f"y_true.shape={tuple(y_true.shape)} and y_pred.shape={tuple(y_pred.shape)}; "
            "convert integer labels with keras.utils.to_categorical."
        )
