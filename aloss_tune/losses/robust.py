"""Barron's general robust loss ``rho(x, alpha, scale)`` and the `RobustLoss` class built on it.

One function covers L2, Charbonnier, Cauchy, Geman-McClure, Welsch and everything in between through a
single shape parameter ``alpha`` in ``[-inf, +inf]``. Two code paths compute it:

* **a scalar ``alpha``** (a Python or NumPy number, fixed for a loss) picks its formula when the graph is
  traced: the exact closed form at ``alpha`` in {2, 0, 1, -2, -inf, +inf}, a series for tiny ``alpha`` and
  ``(b / alpha) * expm1((alpha / 2) * log1p(z / b))`` otherwise; one short chain of element-wise operations
  that XLA fuses into one kernel.
* **a tensor ``alpha``** (learned, or one value per output) uses one formula valid for every ``alpha``,
  ``rho = 0.5 * P * exprel(u)`` with ``P = b * log1p(z / b)``, ``u = (alpha / 2) * log1p(z / b)`` and
  ``exprel(u) = expm1(u) / u``; at ``alpha = +-inf`` ``P`` and ``u`` take their limits ``z`` and ``+-z / 2``.
  There is no division by ``alpha`` and no switch at 0 or 2, so ``d rho / d alpha`` is right there too.

Numerical notes (each fixes a measured defect of the reference implementation):

* Tiny non-zero ``alpha``: no quantity is clamped in one place and not in another; ``exprel`` removes the
  ``1 / alpha`` analytically, so ``alpha = 1e-8`` is as exact as ``alpha = 1``.
* ``alpha`` near 2: ``b = |alpha - 2|`` is floored at ``EPS_ALPHA2 = 1e-10`` (everywhere it appears), which
  changes ``rho`` by less than ``EPS_ALPHA2 / (2e)`` relative. The true ``d rho / d alpha`` diverges like
  ``(z / 4) * log(1 / |alpha - 2|)`` as ``alpha -> 2``; at ``alpha = 2`` we return its (large, finite,
  positive) value at distance ``EPS_ALPHA2``.
* ``alpha = +-inf``: the limits are selected with ``where`` from branches whose inputs are all finite, so no
  NaN reaches the gradient; ``d rho / d alpha = 0`` there (the limit of the derivative).
* Overflow: ``exp`` is continued linearly past ``sqrt(max_float)`` (`expm1_sat`), so for ``alpha > 2`` values
  and gradients stay finite instead of overflowing (the value saturates near ``1.8e19`` per unit of
  exponent in float32). Below that point results are exact. ``z = (x / scale)^2`` itself overflows for
  ``|x / scale| > sqrt(max_float)`` (1.8e19 in float32): such inputs are out of range.
* Precision: float64 inputs are computed in float64; 16-bit inputs in float32.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from aloss_tune.losses._base import FINITE_POSITIVE, PACKAGE, Interval, Loss, align
from aloss_tune.losses._safe import (
    EPS_ALPHA2,
    compute_dtype,
    exprel_series,
    exprel_threshold,
    expm1_sat,
    is_scalar,
    max_float,
)

__all__ = ["RobustLoss", "general_loss"]

#: Any shape parameter, the infinities included (NaN excluded).
ANY_ALPHA = Interval()


def _check_scale(scale: Any, owner: str) -> Any:
    if is_scalar(scale):
        return FINITE_POSITIVE.check(owner, "scale", scale)
    return scale


def general_loss(x: Any, alpha: Any, scale: Any = 1.0) -> Any:
    """Barron's general robust loss, element-wise.

    Formula:
        ```
        z = (x / scale)^2,   b = |alpha - 2|
        rho(x, alpha, scale) = (b / alpha) * ((z / b + 1)^(alpha / 2) - 1)
        ```
        with its limits: ``z / 2`` (``alpha = 2``, L2), ``log(z / 2 + 1)`` (0, Cauchy),
        ``sqrt(z + 1) - 1`` (1, Charbonnier), ``2z / (z + 4)`` (-2, Geman-McClure), ``1 - exp(-z / 2)``
        (``-inf``, Welsch) and ``exp(z / 2) - 1`` (``+inf``).

    ``rho`` is 0 at ``x = 0``, about ``z / 2`` near it for every ``alpha``, increasing in ``|x|`` and in
    ``alpha``, decreasing in ``scale``, bounded by ``(alpha - 2) / alpha`` for ``alpha < 0``, and scale
    invariant: ``rho(m x, alpha, m scale) = rho(x, alpha, scale)``.

    A scalar ``alpha`` selects its formula when the graph is traced (fast, one fused kernel); a tensor
    ``alpha`` (learned, per output dimension) uses a formulation that is exact and differentiable in
    ``alpha`` everywhere, ``+-inf`` included. See the module docstring for the numerical details.

    Args:
        x: residuals, any shape; float64 is computed in float64, 16-bit floats and integers in float32.
        alpha: the shape, a number in ``[-inf, +inf]`` or a tensor broadcastable to ``x``.
        scale: the scale ``c > 0``, a number or a tensor broadcastable to ``x``.

    Returns:
        ``rho``, with the broadcast shape of the inputs, in the compute dtype.

    Example:
        >>> general_loss([0.0, 1.0, 10.0], alpha=1.0, scale=1.0)  # Charbonnier: sqrt(x^2 + 1) - 1

    References:
        J. T. Barron, "A General and Adaptive Robust Loss Function", CVPR 2019, arXiv:1701.03077.
    """
    x = ops.convert_to_tensor(x)
    dtype = compute_dtype(x)
    x = ops.cast(x, dtype)
    scale = _check_scale(scale, "general_loss")
    if is_scalar(scale):
        z = ops.square(x / scale)
    else:
        z = ops.square(x / ops.cast(scale, dtype))
    if is_scalar(alpha):
        return _rho_fixed(z, ANY_ALPHA.check("general_loss", "alpha", alpha), dtype)
    return _rho_tensor(z, ops.cast(alpha, dtype), dtype)


def _log1p_ratio(z: Any, b: Any, dtype: str) -> Any:
    """``log1p(z / b)`` with ``z / b`` kept finite (it can overflow only when ``b`` is tiny)."""
    return ops.log1p(ops.minimum(z / b, max_float(dtype)))


def _rho_fixed(z: Any, alpha: float, dtype: str) -> Any:
    """``rho`` for a Python-float ``alpha``: the branch is chosen once, when the graph is traced."""
    if abs(alpha - 2.0) < EPS_ALPHA2:
        return 0.5 * z
    if alpha == 0.0:
        return ops.log1p(0.5 * z)
    if alpha == 1.0:
        return z / (ops.sqrt(z + 1.0) + 1.0)  # sqrt(z + 1) - 1 without cancellation at small z
    if alpha == -2.0:
        return 2.0 * z / (z + 4.0)
    if alpha == -math.inf:
        return -ops.expm1(-0.5 * z)
    if alpha == math.inf:
        return expm1_sat(0.5 * z, dtype)
    b = abs(alpha - 2.0)
    log_term = _log1p_ratio(z, b, dtype) if b < 1.0 else ops.log1p(z / b)
    # |u| = |alpha| * log_term / 2 stays below the series threshold for every representable z:
    # evaluate exprel by its series alone (no 1 / alpha, no underflow of alpha / 2).
    if abs(alpha) < _tiny_alpha(dtype):
        return (0.5 * b) * log_term * exprel_series((0.5 * alpha) * log_term, dtype)
    u = (0.5 * alpha) * log_term
    return (b / alpha) * (expm1_sat(u, dtype) if alpha > 2.0 else ops.expm1(u))


def _rho_tensor(z: Any, alpha: Any, dtype: str) -> Any:
    """``rho`` for a tensor ``alpha``: exact and differentiable (in ``x``, ``alpha`` and ``scale``) everywhere.

    ``alpha``-only quantities are computed on ``alpha``'s own (usually small) shape and broadcast once.
    """
    is_inf = ops.isinf(alpha)
    finite_alpha = ops.where(is_inf, 1.0, alpha)  # a safe stand-in where alpha is infinite
    b = ops.maximum(ops.abs(finite_alpha - 2.0), EPS_ALPHA2)
    # Where |alpha| < tiny, |u| stays below the series threshold for every representable z: rho is the
    # series form 0.5 * b * L * exprel(u), free of 1 / alpha. Elsewhere (b / alpha) * expm1(u), whose
    # gradient has no cancellation even where it is exponentially small (Welsch-like tails).
    tiny = _tiny_alpha(dtype)
    is_tiny = ops.abs(finite_alpha) < tiny
    safe_alpha = ops.where(is_tiny, tiny, finite_alpha)
    factor = ops.where(is_inf, ops.sign(alpha), b / safe_alpha)
    half_alpha = 0.5 * finite_alpha
    log_term = _log1p_ratio(z, b, dtype)
    # alpha -> +-inf: (alpha / 2) * log1p(z / b) -> +-z / 2 (and the factor b / alpha -> +-1).
    u = ops.where(is_inf, (0.5 * ops.sign(alpha)) * z, half_alpha * log_term)
    u_tiny = ops.where(is_tiny, u, 0.0)
    series = (0.5 * b) * log_term * exprel_series(u_tiny, dtype)
    return ops.where(is_tiny, series, factor * expm1_sat(u, dtype))


def _tiny_alpha(dtype: str) -> float:
    """Below this ``|alpha|``, ``|alpha| * log1p(z / b) / 2`` is within the exprel series' range for any z."""
    return 2.0 * exprel_threshold(dtype) / (math.log(max_float(dtype)) + 1.0)


def mean_last_axis(values: Any) -> Any:
    """Per-sample values: the mean over the last axis (a 1-D tensor is already one value per sample)."""
    return ops.mean(values, axis=-1) if len(values.shape) >= 2 else values


@keras.saving.register_keras_serializable(package=PACKAGE)
class RobustLoss(Loss):
    """Barron's general robust loss of the residual ``y_pred - y_true``, with a fixed shape and scale.

    Formula:
        ```
        x = y_pred - y_true,   z = (x / scale)^2,   b = |alpha - 2|
        loss = mean over the last axis of (b / alpha) * ((z / b + 1)^(alpha / 2) - 1)
        ```
        ``alpha = 2`` is half the MSE (in units of ``scale``), 1 pseudo-Huber, 0 Cauchy, -2 Geman-McClure,
        ``-inf`` Welsch; smaller ``alpha`` means more robust to outliers. Residuals below ``scale`` are
        treated quadratically whatever ``alpha``.

    Args:
        alpha: the shape, a number in ``[-inf, +inf]`` (default 1.0, pseudo-Huber).
        scale: the scale ``c > 0`` of the quadratic bowl around zero, in units of the target (default 1.0).
        name: the loss's name.
        reduction: Keras reduction (default ``"sum_over_batch_size"``).
        dtype: the compute dtype (default ``keras.config.floatx()``, float32 even under mixed precision).

    Example:
        >>> model.compile(optimizer="adam", loss=RobustLoss(alpha=0.0, scale=0.5))

    References:
        J. T. Barron, "A General and Adaptive Robust Loss Function", CVPR 2019, arXiv:1701.03077.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        scale: float = 1.0,
        *,
        name: str = "robust_loss",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = ANY_ALPHA.check("RobustLoss", "alpha", alpha)
        self.scale = FINITE_POSITIVE.check("RobustLoss", "scale", scale)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = align(y_true, y_pred)
        return mean_last_axis(general_loss(y_pred - y_true, self.alpha, self.scale))

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "scale": self.scale}

