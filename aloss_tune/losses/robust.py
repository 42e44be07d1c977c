"""Barron's general robust loss ``rho(x, alpha, scale)`` and the `RobustLoss` class built on it.

One function covers L2, Charbonnier, Cauchy, Geman-McClure, Welsch and everything in between through a
single shape parameter ``alpha`` in ``[-inf, +inf]``. With ``z = (x / scale)^2``, ``b = |alpha - 2|`` and
``L = log1p(z / b)``, three algebraically equal forms are used, each where it is accurate:

* ``(b / alpha) * expm1(alpha / 2 * L)`` in general (BARRON.md's expm1/log1p form);
* ``(z + (b + z) * expm1((alpha - 2) / 2 * L)) / alpha`` within ``NEAR_TWO`` of 2, where the general form's
  large exponent would amplify rounding (and is exact at 2);
* ``(b / 2) * L * exprel(alpha / 2 * L)`` with ``exprel(u) = expm1(u) / u`` by its Taylor series for tiny
  ``|alpha|``, free of ``1 / alpha``, smooth through 0 (so ``d rho / d alpha`` is right there).

Two code paths compute them:

* **a scalar ``alpha``** (a Python or NumPy number, fixed for a loss) picks its formula when the graph is
  traced, with the exact closed forms at ``alpha`` in {2, 0, 1, -2, -inf, +inf}: one short chain of
  element-wise operations that XLA fuses into one kernel.
* **a tensor ``alpha``** (learned, or one value per output) evaluates one ``log1p`` and one ``expm1`` per
  element, the form chosen by masks computed on ``alpha``'s own shape; ``alpha = +-inf`` takes its limit.

Numerical notes (each fixes a measured defect of the reference implementation):

* Tiny non-zero ``alpha``: nothing is clamped in one place and not in another; the series removes the
  ``1 / alpha`` analytically, so ``alpha = 1e-8`` is as exact as ``alpha = 1``.
* ``alpha`` near 2: ``b = |alpha - 2|`` is floored at ``EPS_ALPHA2 = 1e-10`` (everywhere it appears), which
  changes ``rho`` by less than ``EPS_ALPHA2 / (2e)`` relative. The true ``d rho / d alpha`` diverges like
  ``(z / 4) * log(1 / |alpha - 2|)`` as ``alpha -> 2``; at ``alpha = 2`` we return a large, finite, positive
  value, that of a point about ``EPS_ALPHA2 / e`` from 2.
* ``alpha = +-inf``: the limits are selected with ``where`` from branches whose inputs are all finite, so no
  NaN reaches the gradient; ``d rho / d alpha = 0`` there (the limit of the derivative).
* Overflow: for ``alpha > 2`` the exponential saturates smoothly (`expm1_sat`, C1) from the point where
  ``rho`` reaches ``sqrt(max_float)`` (1.8e19 in float32, 1.3e154 in float64; for a tensor alpha from
  ``b / alpha`` times that, at least 1.6e18 in float32) towards about 45 times that value, so values and
  gradients stay finite instead of overflowing to ``inf`` and ``NaN``; below that point results are exact.
  ``z = (x / scale)^2`` itself overflows for ``|x / scale| > sqrt(max_float)``: such inputs are out of range.
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
    exp_cap,
    expm1,
    expm1_sat,
    exprel_series,
    exprel_threshold,
    is_scalar,
    max_float,
)

__all__ = ["RobustLoss", "general_loss"]

#: Any shape parameter, the infinities included (NaN excluded).
ANY_ALPHA = Interval()
#: Within this distance of 2 the loss is computed as ``(z + (b + z) * expm1((alpha - 2) / 2 * L)) / alpha``.
NEAR_TWO = 0.2


def _check_scale(scale: Any, owner: str) -> Any:
    if _is_number_like(scale):
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
    if _is_number_like(scale):
        z = ops.square(x / scale)
    else:
        z = ops.square(x / ops.cast(scale, dtype))
    if _is_number_like(alpha):
        return _rho_fixed(z, ANY_ALPHA.check("general_loss", "alpha", alpha), dtype)
    return _rho_tensor(z, ops.cast(alpha, dtype), dtype)


def _is_number_like(value: Any) -> bool:
    """A scalar known when tracing, or something that can only be a (bad) scalar: validated, not cast."""
    return is_scalar(value) or value is None or isinstance(value, (str, bytes, bool))


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
        return -expm1(-0.5 * z)
    if alpha == math.inf:
        return expm1_sat(0.5 * z, exp_cap(dtype))
    b = abs(alpha - 2.0)
    log_term = _log1p_ratio(z, b, dtype) if b < 1.0 else ops.log1p(z / b)
    if b < NEAR_TWO:
        # (z + (b + z) * expm1((alpha - 2) / 2 * L)) / alpha: the exponent is small (|.| < 0.1 * L), nothing
        # cancels and nothing overflows for z below the largest float.
        return (z + (z + b) * ops.expm1((0.5 * (alpha - 2.0)) * log_term)) / alpha
    if abs(alpha) < _tiny_alpha(dtype):
        # |u| = |alpha| * L / 2 is within the exprel series' range for every representable z: no 1 / alpha.
        return (0.5 * b) * log_term * exprel_series((0.5 * alpha) * log_term, dtype)
    u = (0.5 * alpha) * log_term
    factor = b / alpha
    if alpha < 0.0:  # u < 0: the gradient exp(u) may be tiny, keep it exact
        return factor * expm1(u)
    if alpha < 2.0:  # 0 < u < log1p(z / b): no overflow possible
        return factor * ops.expm1(u)
    return factor * expm1_sat(u, exp_cap(dtype) - math.log(factor))


def _rho_tensor(z: Any, alpha: Any, dtype: str) -> Any:
    """``rho`` for a tensor ``alpha``: exact and differentiable (in ``x``, ``alpha`` and ``scale``) everywhere.

    Three forms share one ``log1p`` and one ``expm1`` per element; the choice between them depends on ``alpha``
    alone, so the masks and coefficients are computed on ``alpha``'s own (usually small) shape:

    * ``|alpha - 2| < NEAR_TWO``: ``(z + (b + z) * expm1((alpha - 2) / 2 * L)) / alpha`` (exact at 2, no
      amplified rounding from a large exponent);
    * ``|alpha| < tiny``: ``(b / 2) * L * exprel(alpha / 2 * L)`` by its series (no ``1 / alpha``);
    * otherwise ``(b / alpha) * expm1(alpha / 2 * L)``, whose gradient has no cancellation even where it
      is exponentially small (Welsch-like tails); ``alpha = +-inf`` takes its limit ``+-expm1(+-z / 2)``.
    """
    is_inf = ops.isinf(alpha)
    finite_alpha = ops.where(is_inf, 1.0, alpha)  # a safe stand-in where alpha is infinite
    delta = finite_alpha - 2.0
    b = ops.maximum(ops.abs(delta), EPS_ALPHA2)
    tiny = _tiny_alpha(dtype)
    is_tiny = ops.abs(finite_alpha) < tiny
    near_two = ops.abs(delta) < NEAR_TWO
    safe_alpha = ops.where(is_tiny, tiny, finite_alpha)
    factor = ops.where(is_inf, ops.sign(alpha), b / safe_alpha)
    # The exponent per unit of L. Saturation starts at exp(.) = sqrt(max_float) for every alpha: a per-alpha
    # cap would cost three transcendentals per element once XLA fuses the broadcast; |factor| >= 0.09
    # outside NEAR_TWO (where the exponent stays small), so rho is exact up to at least 1.6e18 in float32.
    coef = 0.5 * ops.where(near_two, delta, finite_alpha)
    # Both general forms as rho = ((z + b) * g1 + g2) * e + z * g1, with the per-alpha weights
    # (g1, g2) = (1 / alpha, 0) near 2 and (0, b / alpha) elsewhere: no element-wise select, and no
    # unused branch whose overflow could turn a zero cotangent into NaN.
    inv_alpha_near = ops.where(near_two, 1.0 / safe_alpha, 0.0)
    factor_far = ops.where(near_two, 0.0, factor)
    log_term = _log1p_ratio(z, b, dtype)
    # alpha -> +-inf: (alpha / 2) * log1p(z / b) -> +-z / 2 (and the factor b / alpha -> +-1).
    exponent = ops.where(is_inf, (0.5 * ops.sign(alpha)) * z, coef * log_term)
    e = expm1_sat(exponent, exp_cap(dtype))
    general = ((z + b) * inv_alpha_near + factor_far) * e + z * inv_alpha_near
    series = (0.5 * b) * log_term * exprel_series(ops.where(is_tiny, exponent, 0.0), dtype)
    return ops.where(is_tiny, series, general)


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

