"""Weighted losses: confidence-weighted BCE, error-weighted MSE, class-weighted cross-entropy.

Weights computed from the prediction itself (``1 / p_t``, ``1 + |error|``) are *weights*, not part of the
objective: their gradient is stopped, so each element's gradient is its weight times the gradient of the
plain loss. This keeps the gradient continuous where the weight reaches its clip bounds (a differentiated
clip would add a jump there) and gives the weight the meaning users expect from a re-weighting of
examples. (Focal loss's modulating factor is different: it is differentiated, because it is part of the
loss that Lin et al. define; see `aloss_tune.losses.FocalCrossentropy`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from aloss_tune.errors import ConfigError, describe
from aloss_tune.losses._base import FINITE_NON_NEGATIVE, FINITE_POSITIVE, PACKAGE, Loss, align, check_bool
from aloss_tune.losses._prob import (
    binary_crossentropy,
    binary_log_probs,
    binary_probs,
    categorical_log_probs,
    check_one_hot_rank,
)

__all__ = [
    "ClassBCE",
    "ClassCCE",
    "ConfidenceBCE",
    "ErrorWeightedMSE",
    "class_bce",
    "class_cce",
    "confidence_bce",
    "error_weighted_mse",
]


def _check_clip_pair(owner: str, clip_min: float, clip_max: float) -> None:
    if clip_min > clip_max:
        raise ConfigError(
            f"{owner}: `clip_min <= clip_max` must hold, "
            f"but got (clip_min={clip_min:g}, clip_max={clip_max:g})."
        )


def confidence_bce(
    y_true: Any, y_pred: Any, clip_min: float = 1.0, clip_max: float = 10.0, from_logits: bool = False
) -> Any:
    """Binary cross-entropy weighted per element by the inverse confidence in the true class.

    Formula:
        ``p_t = y * p + (1 - y) * (1 - p)``  (predicted probability of the true class)
        ``w = stop_gradient(clip(1 / p_t, clip_min, clip_max))``
        ``loss = mean(w * bce(y, p), axis=-1)``

    ``p`` is ``sigmoid(y_pred)`` for logits and ``y_pred`` otherwise, and the cross-entropy is computed
    from the same input (log-sigmoid for logits), so logits and probabilities are never mixed. ``p_t`` is
    clipped to ``[eps, 1 - eps]``, so ``1 / p_t`` is finite even before the clip. Since ``1 / p_t >= 1``, a
    ``clip_min`` below 1 acts like 1.

    Args:
        y_true: labels in [0, 1], shape ``(batch, ...)``.
        y_pred: probabilities or logits of class 1 (a ``(batch, 1)`` output against 1-D labels is aligned).
        clip_min: smallest weight, > 0.
        clip_max: largest weight, >= ``clip_min``.
        from_logits: whether ``y_pred`` holds logits.
    """
    y_true, y_pred = align(y_true, y_pred)
    log_p, log_q = binary_log_probs(y_pred, from_logits)
    p, q = binary_probs(y_pred, from_logits, clip=True)
    p_true = y_true * p + (1.0 - y_true) * q
    weight = ops.stop_gradient(ops.clip(1.0 / p_true, clip_min, clip_max))
    return ops.mean(weight * binary_crossentropy(y_true, log_p, log_q), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConfidenceBCE(Loss):
    """Binary cross-entropy that weights each element by ``clip(1 / p_t, clip_min, clip_max)``.

    Elements the model is unsure or wrong about (small ``p_t``) weigh up to ``clip_max`` times more than
    confidently right ones. The weight's gradient is stopped (see the module docstring).

    Formula:
        ``loss = mean(stop_gradient(clip(1 / p_t, clip_min, clip_max)) * bce(y, p), axis=-1)``

    Args:
        clip_min: smallest weight, > 0 (values below 1 act like 1, since ``1 / p_t >= 1``).
        clip_max: largest weight, >= ``clip_min``.
        from_logits: whether ``y_pred`` holds logits rather than probabilities.

    Example:
        >>> loss = ConfidenceBCE(clip_min=1.0, clip_max=10.0, from_logits=True)
        >>> model.compile(optimizer="adam", loss=loss)
    """

    def __init__(
        self, clip_min: float = 1.0, clip_max: float = 10.0, from_logits: bool = False, **kwargs: Any
    ):
        kwargs.setdefault("name", "confidence_bce")
        super().__init__(**kwargs)
        self.clip_min = FINITE_POSITIVE.check("confidence_bce", "clip_min", clip_min)
        self.clip_max = FINITE_POSITIVE.check("confidence_bce", "clip_max", clip_max)
        _check_clip_pair("confidence_bce", self.clip_min, self.clip_max)
        self.from_logits = check_bool("confidence_bce", "from_logits", from_logits)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return confidence_bce(y_true, y_pred, self.clip_min, self.clip_max, self.from_logits)

    def _params(self) -> dict[str, Any]:
        return {"clip_min": self.clip_min, "clip_max": self.clip_max, "from_logits": self.from_logits}


def error_weighted_mse(y_true: Any, y_pred: Any, clip_min: float = 0.0, clip_max: float = 5.0) -> Any:
    """Squared error weighted per element by one plus the clipped absolute error.

    Formula:
        ``e = y_true - y_pred``
        ``w = stop_gradient(1 + clip(|e|, clip_min, clip_max))``
        ``loss = mean(w * e^2, axis=-1)``

    The weight multiplies each element before the mean over the last axis (not an already averaged MSE).
    Its gradient is stopped, so the gradient is ``-2 * w * e``: continuous, and growing like ``e^2`` up
    to ``|e| = clip_max``, linear in ``e`` beyond.

    Args:
        y_true: targets, shape ``(batch, ...)``.
        y_pred: predictions (a ``(batch, 1)`` output against 1-D targets is aligned).
        clip_min: lower clip of ``|e|``, >= 0, in target units.
        clip_max: upper clip of ``|e|``, >= ``clip_min``, in target units.
    """
    y_true, y_pred = align(y_true, y_pred)
    error = y_true - y_pred
    weight = ops.stop_gradient(1.0 + ops.clip(ops.abs(error), clip_min, clip_max))
    return ops.mean(weight * ops.square(error), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ErrorWeightedMSE(Loss):
    """Mean squared error that weights each element by ``1 + clip(|error|, clip_min, clip_max)``.

    Large residuals count more than in plain MSE, up to a factor ``1 + clip_max``. The weight's gradient
    is stopped (see the module docstring).

    Formula:
        ``e = y_true - y_pred``
        ``loss = mean(stop_gradient(1 + clip(|e|, clip_min, clip_max)) * e^2, axis=-1)``

    Args:
        clip_min: lower clip of ``|e|``, >= 0, in target units.
        clip_max: upper clip of ``|e|``, >= ``clip_min``, in target units.

    Example:
        >>> loss = ErrorWeightedMSE(clip_min=0.0, clip_max=5.0)
        >>> model.compile(optimizer="adam", loss=loss)
    """

    def __init__(self, clip_min: float = 0.0, clip_max: float = 5.0, **kwargs: Any):
        kwargs.setdefault("name", "error_weighted_mse")
        super().__init__(**kwargs)
        self.clip_min = FINITE_NON_NEGATIVE.check("error_mse", "clip_min", clip_min)
        self.clip_max = FINITE_NON_NEGATIVE.check("error_mse", "clip_max", clip_max)
        _check_clip_pair("error_mse", self.clip_min, self.clip_max)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return error_weighted_mse(y_true, y_pred, self.clip_min, self.clip_max)

    def _params(self) -> dict[str, Any]:
        return {"clip_min": self.clip_min, "clip_max": self.clip_max}


def class_bce(
    y_true: Any, y_pred: Any, pos_weight: float = 1.0, neg_weight: float = 1.0, from_logits: bool = False
) -> Any:
    """Class-weighted binary cross-entropy, one value per sample.

    Formula:
        ``loss = mean(-(pos_weight * y * log p + neg_weight * (1 - y) * log(1 - p)), axis=-1)``

    Args:
        y_true: labels in [0, 1], shape ``(batch, ...)``.
        y_pred: probabilities or logits of class 1 (a ``(batch, 1)`` output against 1-D labels is aligned).
        pos_weight: weight of the positive term, > 0.
        neg_weight: weight of the negative term, > 0.
        from_logits: whether ``y_pred`` holds logits.
    """
    y_true, y_pred = align(y_true, y_pred)
    log_p, log_q = binary_log_probs(y_pred, from_logits)
    return ops.mean(-(pos_weight * y_true * log_p + neg_weight * (1.0 - y_true) * log_q), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassBCE(Loss):
    """Binary cross-entropy with separate weights for the positive and the negative class.

    Formula:
        ``loss = mean(-(pos_weight * y * log p + neg_weight * (1 - y) * log(1 - p)), axis=-1)``

    Only the ratio ``pos_weight / neg_weight`` changes the minimiser; the overall scale acts like a
    learning-rate factor. With ``pos_weight = n_neg / n_pos`` and ``neg_weight = 1`` both classes weigh the
    same in total.

    Args:
        pos_weight: weight of class 1, > 0.
        neg_weight: weight of class 0, > 0.
        from_logits: whether ``y_pred`` holds logits rather than probabilities.

    Example:
        >>> loss = ClassBCE(pos_weight=5.0, from_logits=True)
        >>> model.compile(optimizer="adam", loss=loss)
    """

    def __init__(
        self, pos_weight: float = 1.0, neg_weight: float = 1.0, from_logits: bool = False, **kwargs: Any
    ):
        kwargs.setdefault("name", "class_bce")
        super().__init__(**kwargs)
        self.pos_weight = FINITE_POSITIVE.check("class_bce", "pos_weight", pos_weight)
        self.neg_weight = FINITE_POSITIVE.check("class_bce", "neg_weight", neg_weight)
        self.from_logits = check_bool("class_bce", "from_logits", from_logits)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return class_bce(y_true, y_pred, self.pos_weight, self.neg_weight, self.from_logits)

    def _params(self) -> dict[str, Any]:
        return {"pos_weight": self.pos_weight, "neg_weight": self.neg_weight, "from_logits": self.from_logits}


def check_class_weights(owner: str, class_weights: Any) -> list[float] | None:
    """Validate a list of per-class weights (each finite and > 0); ``None`` means all ones."""
    if class_weights is None:
        return None
    if isinstance(class_weights, np.ndarray):
        class_weights = class_weights.tolist()
    if (
        isinstance(class_weights, (str, bytes))
        or not isinstance(class_weights, Sequence)
        or not class_weights
    ):
        raise ConfigError(
            f"{owner}: `class_weights` must be a non-empty list of numbers > 0 (one per class) or null, "
            f"but got class_weights={describe(class_weights)}."
        )
    return [FINITE_POSITIVE.check(owner, f"class_weights[{i}]", w) for i, w in enumerate(class_weights)]


def class_cce(
    y_true: Any, y_pred: Any, class_weights: Sequence[float] | None = None, from_logits: bool = False
) -> Any:
    """Class-weighted categorical cross-entropy, one value per sample.

    Formula:
        ``loss = -sum_c(class_weights[c] * y_c * log p_c)``

    For one-hot labels this is the cross-entropy times the weight of the true class, as Keras's
    ``class_weight`` argument of ``fit`` would give.

    Args:
        y_true: one-hot (or soft) labels, shape ``(batch, ..., C)``.
        y_pred: probabilities or logits, shape ``(batch, ..., C)``.
        class_weights: ``C`` weights > 0, or ``None`` for all ones.
        from_logits: whether ``y_pred`` holds logits (log-softmax) or probabilities.

    Raises:
        ConfigError: ``len(class_weights)`` differs from the number of classes ``C`` of ``y_pred``.
    """
    y_true, y_pred = align(y_true, y_pred)
    check_one_hot_rank("class_cce", y_true, y_pred)
    log_probs = categorical_log_probs(y_pred, from_logits)
    if class_weights is None:
        return -ops.sum(y_true * log_probs, axis=-1)
    n_classes = y_pred.shape[-1]
    if n_classes is not None and n_classes != len(class_weights):
        raise ConfigError(
            f"class_cce: `class_weights` must have one weight per class of y_pred ({n_classes}), but got "
            f"{len(class_weights)} weights: class_weights={describe(list(class_weights))}."
        )
    weights = ops.convert_to_tensor(list(class_weights), dtype=y_pred.dtype)
    return -ops.sum(weights * y_true * log_probs, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassCCE(Loss):
    """Categorical cross-entropy with one weight per class.

    Formula:
        ``loss = -sum_c(class_weights[c] * y_c * log p_c)``

    The number of weights is checked against the number of classes of ``y_pred`` at the first call.

    Args:
        class_weights: one weight > 0 per class, or ``None`` (all ones: plain cross-entropy).
        from_logits: whether ``y_pred`` holds logits rather than probabilities.

    Example:
        >>> loss = ClassCCE(class_weights=[1.0, 4.0, 2.0], from_logits=True)
        >>> model.compile(optimizer="adam", loss=loss)  # one-hot labels, Dense(3) output
    """

    def __init__(
        self, class_weights: Sequence[float] | None = None, from_logits: bool = False, **kwargs: Any
    ):
        kwargs.setdefault("name", "class_cce")
        super().__init__(**kwargs)
        self.class_weights = check_class_weights("class_cce", class_weights)
        self.from_logits = check_bool("class_cce", "from_logits", from_logits)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return class_cce(y_true, y_pred, self.class_weights, self.from_logits)

    def _params(self) -> dict[str, Any]:
        weights = None if self.class_weights is None else list(self.class_weights)
        return {"class_weights": weights, "from_logits": self.from_logits}
