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
    expm1_sat_and_slope,
    exprel_series,
    exprel_series_and_slope,
    exprel_threshold,
    is_scalar,
    max_float,
    power1p_m1,
    sqrt1p_m1,
    sum_to_shape,
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
    if not _is_number_like(scale):
        scale = ops.cast(scale, dtype)
    if _is_number_like(alpha):
        z = ops.square(x / scale)
        return _rho_fixed(z, ANY_ALPHA.check("general_loss", "alpha", alpha), dtype)
    return _rho_tensor(x, ops.cast(alpha, dtype), scale, dtype)


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
        return sqrt1p_m1(z)
    if alpha == -2.0:
        return 2.0 * z / (z + 4.0)
    if alpha == -math.inf:
        return -expm1(-0.5 * z)
    if alpha == math.inf:
        return expm1_sat(0.5 * z, exp_cap(dtype))
    b = abs(alpha - 2.0)
    if b < NEAR_TWO:
        # (z + (b + z) * expm1((alpha - 2) / 2 * L)) / alpha: the exponent is small (|.| < 0.1 * L), nothing
        # cancels and nothing overflows for z below the largest float.
        log_term = _log1p_ratio(z, b, dtype)
        return (z + (z + b) * ops.expm1((0.5 * (alpha - 2.0)) * log_term)) / alpha
    ratio = z * (1.0 / b)  # a multiplication per element, not a division
    if b < 1.0:
        ratio = ops.minimum(ratio, max_float(dtype))  # z / b overflows only for b < 1
    if abs(alpha) < _tiny_alpha(dtype):
        # |u| = |alpha| * L / 2 is within the exprel series' range for every representable z: no 1 / alpha.
        log_term = ops.log1p(ratio)
        return (0.5 * b) * log_term * exprel_series((0.5 * alpha) * log_term, dtype)
    factor = b / alpha
    if alpha < 2.0:  # u = (alpha / 2) log1p(z / b) < log1p(z / b): no overflow possible
        return factor * power1p_m1(ratio, 0.5 * alpha)
    u = (0.5 * alpha) * ops.log1p(ratio)
    return factor * expm1_sat(u, exp_cap(dtype) - math.log(factor))


def _rho_tensor(x: Any, alpha: Any, scale: Any, dtype: str) -> Any:
    """``rho`` for a tensor ``alpha``: exact and differentiable (in ``x``, ``alpha`` and ``scale``) everywhere.

    Three forms share one ``log1p`` and one ``expm1`` per element; which one applies depends on ``alpha`` alone:

    * ``|alpha - 2| < NEAR_TWO``: ``(z + (b + z) * expm1((alpha - 2) / 2 * L)) / alpha`` (exact at 2, no
      amplified rounding from a large exponent);
    * ``|alpha| < tiny``: ``(b / 2) * L * exprel(alpha / 2 * L)`` by its series (no ``1 / alpha``);
    * otherwise ``(b / alpha) * expm1(alpha / 2 * L)``, whose gradient has no cancellation even where it
      is exponentially small (Welsch-like tails); ``alpha = +-inf`` takes its limit ``+-expm1(+-z / 2)``.

    All three are written as ``rho = (A + B z) * E + B z`` with ``E = expm1(k1 L + k2 z)`` and coefficients
    ``A, B, k1, k2`` that depend on ``alpha`` only (the series replaces it for tiny ``alpha``). The gradient is
    written by hand from the same pieces: the coefficients and their derivatives are computed once per value
    of ``alpha`` (once per column for a learned ``alpha``), and each element costs one ``exp`` and one
    division more than the loss itself, with one reduction for ``alpha`` and one for ``scale``. Autodiff of
    the same formula takes one reduction per coefficient, each over its own full-size product.
    """
    tensors = [x, alpha] if is_scalar(scale) else [x, alpha, scale]
    if any(n is None for t in tensors[1:] for n in t.shape):
        # Static shapes tell which axes a gradient sums over; an unknown size is broadcast here instead.
        tensors = [tensors[0]] + [ops.broadcast_to(t, ops.shape(x)) for t in tensors[1:]]
    shapes = [tuple(t.shape) for t in tensors]

    def forward(*args: Any) -> Any:
        x, alpha = args[0], args[1]
        inv_scale = 1.0 / scale if len(args) == 2 else 1.0 / args[2]  # per value of the scale, not per element
        c = _Shape(alpha, dtype)
        scaled = x * inv_scale
        z = ops.square(scaled)
        log_term = ops.log1p(ops.minimum(z * c.inv_b, max_float(dtype)))  # z / b overflows only for tiny b
        exponent = c.k1 * log_term + c.k2 * z
        e, slope = expm1_sat_and_slope(exponent, exp_cap(dtype))
        bz = c.a_coef + c.b_coef * z
        general = bz * e + c.b_coef * z
        series, series_slope = exprel_series_and_slope(ops.where(c.tiny, exponent, 0.0), dtype)
        half_b_log = (0.5 * c.b) * log_term
        value = ops.where(c.tiny, half_b_log * series, general)

        def grad(*upstream: Any, **kwargs: Any) -> Any:
            g = kwargs["upstream"] if "upstream" in kwargs else upstream[0]
            inv_bz = 1.0 / (c.b + z)  # d log_term / dz
            dlog_dalpha = -(c.sigma_over_b * z) * inv_bz
            # The general form.
            drho_dz = slope * (bz * (c.k1 * inv_bz + c.k2) + c.b_coef)
            drho_dalpha = c.a_coef_da * e + slope * (c.b_coef_da * z + bz * (c.k1_da * log_term + c.k1 * dlog_dalpha))
            # The series (tiny alpha): rho = (b / 2) L R(u), u = (alpha / 2) L.
            inner = series + (c.k1 * log_term) * series_slope
            series_dz = (0.5 * c.b) * inner * inv_bz
            series_dalpha = (
                (0.5 * c.sigma) * log_term * series
                + (0.5 * c.b) * dlog_dalpha * inner
                + 0.5 * half_b_log * log_term * series_slope
            )
            # Each summand of a reduction is finished inside one select: XLA:CPU's reduction kernels otherwise
            # take the trailing products in, reading each factor as a separate full-size array.
            g_x = g * ops.where(c.tiny, series_dz, drho_dz) * ((2.0 * inv_scale) * scaled)
            grads = [
                sum_to_shape(g_x, shapes[0]),
                sum_to_shape(ops.where(c.tiny, g * series_dalpha, g * drho_dalpha), shapes[1]),
            ]
            if len(args) == 3:
                dz_dscale = (-2.0 * inv_scale) * z
                g_scale = ops.where(c.tiny, g * series_dz * dz_dscale, g * drho_dz * dz_dscale)
                grads.append(sum_to_shape(g_scale, shapes[2]))
            return tuple(grads)

        return value, grad

    return ops.custom_gradient(forward)(*tensors)


class _Shape:
    """The coefficients of `_rho_tensor` and their derivatives in ``alpha``, on ``alpha``'s own shape."""

    def __init__(self, alpha: Any, dtype: str):
        is_inf = ops.isinf(alpha)
        sign = ops.sign(alpha)
        a = ops.where(is_inf, 1.0, alpha)  # a finite stand-in where alpha is infinite
        delta = a - 2.0
        abs_delta = ops.abs(delta)
        self.b = ops.maximum(abs_delta, EPS_ALPHA2)
        self.inv_b = 1.0 / self.b
        # d b / d alpha: 0 where b is floored (and for infinite alpha, whose loss does not depend on it).
        self.sigma = ops.where(ops.logical_and(abs_delta > EPS_ALPHA2, ops.logical_not(is_inf)), ops.sign(delta), 0.0)
        self.sigma_over_b = self.sigma * self.inv_b
        tiny = _tiny_alpha(dtype)
        self.tiny = ops.abs(a) < tiny
        near = abs_delta < NEAR_TWO
        inv_a = 1.0 / ops.where(self.tiny, tiny, a)
        # rho = (A + B z) * expm1(k1 L + k2 z) + B z:
        #   general (b / alpha) expm1(alpha / 2 L):  A = b / alpha, B = 0,         k1 = alpha / 2, k2 = 0
        #   near 2 (z + (b + z) expm1(d / 2 L)) / a: A = b / alpha, B = 1 / alpha, k1 = d / 2,     k2 = 0
        #   alpha = +-inf, +-expm1(+-z / 2):          A = +-1,       B = 0,         k1 = 0,         k2 = +-1 / 2
        self.a_coef = ops.where(is_inf, sign, self.b * inv_a)
        self.b_coef = ops.where(near, inv_a, 0.0)
        self.k1 = ops.where(is_inf, 0.0, 0.5 * ops.where(near, delta, a))
        self.k2 = ops.where(is_inf, 0.5 * sign, 0.0)
        # Their derivatives in alpha (all 0 at +-inf, where rho does not depend on alpha).
        self.a_coef_da = ops.where(is_inf, 0.0, (self.sigma * a - self.b) * ops.square(inv_a))
        self.b_coef_da = ops.where(near, -ops.square(inv_a), 0.0)
        self.k1_da = 0.5 * ops.cast(ops.logical_not(is_inf), a.dtype)


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

