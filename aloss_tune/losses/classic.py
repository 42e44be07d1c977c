"""Classic losses with hyperparameters: Huber, binary focal cross-entropy and Poly-1.

Each is a pure function in `keras.ops` returning one value per sample, plus a thin `Loss` class that
validates the hyperparameters, keeps them in ``get_config`` and lets Keras apply ``sample_weight`` and the
reduction.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from aloss_tune.domains import POLY1_EPSILON, POLY1_MODES  # noqa: F401 - also read from here
from aloss_tune.losses._base import (
    FINITE_NON_NEGATIVE,
    FINITE_POSITIVE,
    PACKAGE,
    UNIT,
    Loss,
    align,
    check_bool,
    check_choice,
)
from aloss_tune.losses._prob import (
    binary_crossentropy,
    binary_log_probs,
    binary_probs,
    categorical_log_probs,
    check_one_hot_rank,
)

__all__ = [
    "Huber",
    "FocalCrossentropy",
    "Poly1Crossentropy",
    "huber",
    "focal_crossentropy",
    "poly1_crossentropy",
]


def huber(y_true: Any, y_pred: Any, delta: float = 1.0) -> Any:
    """Huber loss, one value per sample: quadratic near zero, linear beyond ``delta``.

    Formula:
        ``e = y_pred - y_true``
        ``rho(e) = 0.5 * e^2                        if |e| <= delta``
        ``rho(e) = delta * |e| - 0.5 * delta^2      otherwise``
        ``loss = mean(rho(e), axis=-1)``

    Both pieces are computed and one is selected per element, as ``keras.losses.huber`` does: a residual so
    large that its square overflows only reaches the unused quadratic piece, whose gradient there is
    ``e * 0 = 0``, so values and gradients stay finite for every finite residual.

    Args:
        y_true: targets, shape ``(batch, ...)``; a 1-D ``y_true`` against ``(batch, 1)`` predictions is
            aligned first.
        y_pred: predictions.
        delta: the residual at which the loss turns from quadratic to linear, > 0, in target units.

    References:
        Huber, "Robust Estimation of a Location Parameter", Annals of Mathematical Statistics, 1964.
    """
    y_true, y_pred = align(y_true, y_pred)
    error = y_pred - y_true
    abs_error = ops.abs(error)
    # A select of the two pieces fuses into one loop on XLA; a clip-based branchless form costs about twice as
    # much on JAX's CPU backend (the clip's derivative and a second materialised array).
    linear = delta * abs_error - 0.5 * delta**2
    return ops.mean(ops.where(abs_error <= delta, 0.5 * ops.square(error), linear), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Huber(Loss):
    """Huber loss with a ``delta`` that survives ``get_config`` (Keras 3.15's own drops it).

    Formula:
        ``loss = mean(0.5 * e^2 if |e| <= delta else delta * |e| - 0.5 * delta^2, axis=-1)``,
        ``e = y_pred - y_true``.

    Args:
        delta: the residual at which the loss turns linear, > 0, in target units.

    Example:
        >>> loss = Huber(delta=0.5)
        >>> loss([[0.0, 1.0]], [[0.2, 3.0]])  # mean(0.5 * 0.2**2, 0.5 * 2.0 - 0.5 * 0.5**2) = 0.4475

    References:
        Huber, "Robust Estimation of a Location Parameter", Annals of Mathematical Statistics, 1964.
    """

    def __init__(self, delta: float = 1.0, **kwargs: Any):
        kwargs.setdefault("name", "huber")
        super().__init__(**kwargs)
        self.delta = FINITE_POSITIVE.check("huber", "delta", delta)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return huber(y_true, y_pred, self.delta)

    def _params(self) -> dict[str, Any]:
        return {"delta": self.delta}


def focal_crossentropy(
    y_true: Any, y_pred: Any, gamma: float = 2.0, alpha: float = 0.25, from_logits: bool = False
) -> Any:
    """Class-balanced binary focal cross-entropy, one value per sample.

    Formula:
        ``p_t = y * p + (1 - y) * (1 - p)``, ``alpha_t = y * alpha + (1 - y) * (1 - alpha)``
        ``loss = mean(alpha_t * (1 - p_t)^gamma * bce(y, p), axis=-1)``

    The cross-entropy is exact for logits (log-sigmoid); the modulating factor uses probabilities clipped
    to ``[eps, 1 - eps]``, so its gradient stays finite for ``gamma < 1`` at a confident prediction. The
    modulating factor is differentiated, as in the paper and in Keras: it is part of the loss, not a weight
    of the sample. Equals ``keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True)`` to float
    tolerance away from saturation; for saturated logits (``|z| > ~16``) Keras clips the probability and
    reports ``-log(1e-7)`` where this function returns the exact cross-entropy.

    Args:
        y_true: labels in [0, 1], shape ``(batch, ...)``.
        y_pred: probabilities or logits of class 1, same shape (a ``(batch, 1)`` output against 1-D labels is
            aligned).
        gamma: focusing parameter, >= 0; 0 gives the alpha-weighted cross-entropy.
        alpha: weight of class 1 in [0, 1]; class 0 gets ``1 - alpha``.
        from_logits: whether ``y_pred`` holds logits.

    References:
        Lin, Goyal, Girshick, He and Dollar, "Focal Loss for Dense Object Detection", ICCV 2017.
    """
    y_true, y_pred = align(y_true, y_pred)
    log_p, log_q = binary_log_probs(y_pred, from_logits)
    p, q = binary_probs(y_pred, from_logits, clip=True)
    one_minus_pt = y_true * q + (1.0 - y_true) * p
    alpha_t = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
    focal = alpha_t * _power(one_minus_pt, gamma) * binary_crossentropy(y_true, log_p, log_q)
    return ops.mean(focal, axis=-1)


def _power(base: Any, exponent: float) -> Any:
    """``base ** exponent``; by repeated multiplication for a whole exponent up to 8.

    A product is exact to rounding and far cheaper, with its derivative, than the general power
    ``exp(exponent * log(base))`` (the common gamma = 2 costs one multiplication).
    """
    if isinstance(exponent, (int, float)) and float(exponent).is_integer() and 0 <= exponent <= 8:
        if exponent == 0:
            return ops.ones_like(base)
        result = base
        for _ in range(int(exponent) - 1):
            result = result * base
        return result
    return ops.power(base, exponent)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FocalCrossentropy(Loss):
    """Binary focal cross-entropy with class balancing: down-weights easy, well-classified examples.

    Formula:
        ``loss = mean(alpha_t * (1 - p_t)^gamma * bce(y, p), axis=-1)``, with ``p_t`` the predicted
        probability of the true class and ``alpha_t = alpha`` for class 1, ``1 - alpha`` for class 0.

    Args:
        gamma: focusing parameter, >= 0 (0: alpha-weighted cross-entropy).
        alpha: weight of class 1, in [0, 1].
        from_logits: whether ``y_pred`` holds logits rather than probabilities.

    Example:
        >>> loss = FocalCrossentropy(gamma=2.0, alpha=0.25, from_logits=True)
        >>> model.compile(optimizer="adam", loss=loss)  # a model ending in Dense(1) without activation

    References:
        Lin, Goyal, Girshick, He and Dollar, "Focal Loss for Dense Object Detection", ICCV 2017.
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, from_logits: bool = False, **kwargs: Any):
        kwargs.setdefault("name", "focal_crossentropy")
        super().__init__(**kwargs)
        self.gamma = FINITE_NON_NEGATIVE.check("focal", "gamma", gamma)
        self.alpha = UNIT.check("focal", "alpha", alpha)
        self.from_logits = check_bool("focal", "from_logits", from_logits)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return focal_crossentropy(y_true, y_pred, self.gamma, self.alpha, self.from_logits)

    def _params(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "alpha": self.alpha, "from_logits": self.from_logits}


def poly1_crossentropy(
    y_true: Any, y_pred: Any, epsilon: float = 1.0, from_logits: bool = False, mode: str = "binary"
) -> Any:
    """Poly-1 cross-entropy, one value per sample: cross-entropy plus ``epsilon * (1 - p_t)``.

    Formula:
        binary (sigmoid per output, also multi-label):
        ``loss = mean(bce(y, p) + epsilon * (1 - p_t), axis=-1)``, ``p_t = y * p + (1 - y) * (1 - p)``

        categorical (softmax over the last axis, one-hot or soft labels):
        ``loss = -sum(y * log p) + epsilon * (1 - sum(y * p))``

    The linear term uses unclipped probabilities (it is bounded and smooth); the cross-entropy is exact
    for logits and clipped like Keras's for probabilities.

    Args:
        y_true: labels; in ``categorical`` mode one-hot (or soft) with the shape of ``y_pred``.
        y_pred: probabilities or logits.
        epsilon: coefficient of the first polynomial term, >= -1 (``-1`` removes it, ``0`` is plain
            cross-entropy).
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"binary"`` or ``"categorical"``.

    References:
        Leng, Xu, Wang, et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
        Functions", ICLR 2022.
    """
    y_true, y_pred = align(y_true, y_pred)
    if mode == "categorical":
        check_one_hot_rank("poly1", y_true, y_pred)
        log_probs = categorical_log_probs(y_pred, from_logits)
        if from_logits:
            probs = ops.softmax(y_pred, axis=-1)
        else:
            total = ops.sum(y_pred, axis=-1, keepdims=True)
            probs = y_pred / ops.where(total > 0, total, ops.ones_like(total))
        ce = -ops.sum(y_true * log_probs, axis=-1)
        return ce + epsilon * (1.0 - ops.sum(y_true * probs, axis=-1))
    log_p, log_q = binary_log_probs(y_pred, from_logits)
    p, q = binary_probs(y_pred, from_logits, clip=False)
    one_minus_pt = y_true * q + (1.0 - y_true) * p
    return ops.mean(binary_crossentropy(y_true, log_p, log_q) + epsilon * one_minus_pt, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Poly1Crossentropy(Loss):
    """Poly-1 loss: cross-entropy with a tunable first polynomial coefficient.

    Formula:
        ``loss = CE + epsilon * (1 - p_t)``, with ``p_t`` the predicted probability of the true class.

    Cross-entropy expands as ``sum_j (1 - p_t)^j / j``; Poly-1 changes the weight of the first term from
    1 to ``1 + epsilon``, which raises (``epsilon > 0``) or lowers the gradient for confident examples.

    Args:
        epsilon: coefficient of the added term, >= -1.
        from_logits: whether ``y_pred`` holds logits rather than probabilities.
        mode: ``"binary"`` (sigmoid per output: binary or multi-label) or ``"categorical"`` (softmax over
            the last axis, one-hot labels).

    Example:
        >>> loss = Poly1Crossentropy(epsilon=1.0, from_logits=True)
        >>> model.compile(optimizer="adam", loss=loss)

    References:
        Leng, Xu, Wang, et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
        Functions", ICLR 2022.
    """

    def __init__(self, epsilon: float = 1.0, from_logits: bool = False, mode: str = "binary", **kwargs: Any):
        kwargs.setdefault("name", "poly1_crossentropy")
        super().__init__(**kwargs)
        self.epsilon = POLY1_EPSILON.check("poly1", "epsilon", epsilon)
        self.from_logits = check_bool("poly1", "from_logits", from_logits)
        self.mode = check_choice("poly1", "mode", mode, POLY1_MODES)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return poly1_crossentropy(y_true, y_pred, self.epsilon, self.from_logits, self.mode)

    def _params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "from_logits": self.from_logits, "mode": self.mode}
