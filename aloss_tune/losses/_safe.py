"""Guarded elementary functions for the robust-loss maths, in `keras.ops` only.

Everything here is written so that *both* the value and the gradient stay finite for every finite input:

* `expm1_sat` is ``expm1`` saturating smoothly beyond a cap (by default half the log of the dtype's
  largest number), so ``exp`` can never overflow, in value or in gradient;
* `expm1` has the derivative ``exp(u)`` on every backend (JAX's own cancels to 0 for ``u < log(eps)``);
* `exprel_series` is the Taylor polynomial of ``expm1(u) / u``, which removes the ``1 / alpha`` of Barron's
  formula analytically near ``alpha = 0`` (no division by zero, the right derivative there);
* every ``where`` gets inputs that are safe in *both* branches, because both branches are differentiated
  and a NaN in the unused one would leak into the gradient;
* `power1p_m1` and `sqrt1p_m1` carry hand-written derivatives that reuse their value's own pieces, and
  `expm1_sat_and_slope`, `exprel_series_and_slope` and `sum_to_shape` serve gradients written by hand
  (`robust.py`): autodiff of the same formulas costs extra divisions and full-size intermediates per element.

Nothing here imports anything of ours.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

__all__: list[str] = []

#: A shape ``alpha`` closer than this to 2 is evaluated as if it were this far from 2 (see `robust.py`).
EPS_ALPHA2 = 1e-10

# Taylor series of exprel(u) = expm1(u) / u = sum_k u^k / (k + 1)!, used where |u| < threshold: the truncation
# error is below 2e-10 (float32, |u| < 0.1, degree 5) and 3e-19 (float64, |u| < 0.01, degree 6) relative.
_EXPREL_SERIES = {
    "float32": (0.1, 5),
    "float64": (0.01, 6),
}


def compute_dtype(x: Any) -> str:
    """The dtype to compute in for a tensor ``x``: its own if float32/64; float32 for 16-bit and integers."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    return dtype if dtype in ("float32", "float64") else "float32"


def is_scalar(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy real scalar (known when the graph is traced)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, np.generic) and np.issubdtype(type(value), np.number)


def max_float(dtype: str) -> float:
    """The largest finite number of ``dtype``."""
    return float(np.finfo(dtype).max)


def exp_cap(dtype: str) -> float:
    """``log(sqrt(max))`` of ``dtype`` (44.4 for float32, 354.9 for float64): where results start to saturate."""
    return 0.5 * math.log(max_float(dtype))


@ops.custom_gradient
def expm1(u: Any) -> Any:
    """``expm1(u)`` whose derivative is computed as ``exp(u)``.

    JAX differentiates ``expm1`` as ``expm1(u) + 1``, which cancels to exactly 0 once ``exp(u)`` drops below
    the dtype's epsilon (``u < -16.6`` in float32): the small but non-zero gradients of bounded losses
    (``alpha < 0``) at large residuals would vanish. TensorFlow already uses ``exp(u)``.
    """

    def grad(*args: Any, upstream: Any = None) -> Any:
        if upstream is None:
            (upstream,) = args
        return upstream * ops.exp(u)

    return ops.expm1(u), grad


def power1p_m1(r: Any, power: float) -> Any:
    """``(1 + r)^power - 1``, as ``expm1(power * log1p(r))``, for ``r >= 0``.

    Its derivative is written as ``power * exp((power - 1) * log1p(r))`` from the same logarithm: one ``exp``
    per element, where autodiff of the formula takes an ``exp`` and a division (``log1p``'s ``1 / (1 + r)``).
    Exact for tiny gradients too (no ``expm1(u) + 1`` that cancels for a negative ``power``).
    """

    @ops.custom_gradient
    def fn(r: Any) -> Any:
        log_term = ops.log1p(r)

        def grad(*args: Any, upstream: Any = None) -> Any:
            if upstream is None:
                (upstream,) = args
            return upstream * (power * ops.exp((power - 1.0) * log_term))

        return ops.expm1(power * log_term), grad

    return fn(r)


def sqrt1p_m1(z: Any) -> Any:
    """``sqrt(1 + z) - 1`` for ``z >= 0``, as ``z / (sqrt(1 + z) + 1)`` (no cancellation at small ``z``).

    Its derivative ``1 / (2 sqrt(1 + z))`` is written from the value ``v`` itself, as ``1 / (2 (1 + v))``: one
    division, and nothing but the value kept for the gradient (autodiff of the quotient takes three divisions
    and keeps the root as well).
    """

    @ops.custom_gradient
    def fn(z: Any) -> Any:
        value = z / (ops.sqrt(z + 1.0) + 1.0)

        def grad(*args: Any, upstream: Any = None) -> Any:
            if upstream is None:
                (upstream,) = args
            return upstream * (0.5 / (value + 1.0))

        return value, grad

    return fn(z)


def expm1_sat(u: Any, cap: Any) -> Any:
    """``expm1(u)``, saturating smoothly (C1: value and slope matched) for ``u > cap``.

    Formula:
        ``expm1(u)`` for ``u <= cap``, else ``exp(cap) * (1 + cap - cap^2 / u) - 1``

    Exact up to the cap; beyond, the value rises towards ``(1 + cap) * exp(cap)`` with slope
    ``exp(cap) * (cap / u)^2``, so the value, the derivative and the derivative times ``u`` all stay
    bounded: no ``inf`` and no ``NaN`` in any chain rule downstream. The two pieces are selected with
    ``where`` (not added) so that below the cap the large constant ``exp(cap)`` never meets a cotangent,
    which could be large itself. ``cap`` (> 0) may be a number or a tensor broadcastable to ``u``; a caller
    multiplying the result by ``k`` passes ``exp_cap(dtype) - log(k)``, so that saturation starts where the
    *product* reaches ``sqrt(max_float)``.
    """
    if isinstance(cap, float):
        grow, grow_m1 = math.exp(cap), math.expm1(cap)
    else:
        grow, grow_m1 = ops.exp(cap), ops.expm1(cap)
    top = ops.maximum(u, cap)
    # The ratio is formed first so that neither it nor its derivative can overflow.
    saturated = grow_m1 + (grow * cap) * ((top - cap) / top)
    return ops.where(u > cap, saturated, expm1(ops.minimum(u, cap)))


def exprel_series(u: Any, dtype: str) -> Any:
    """The Taylor polynomial of ``expm1(u) / u`` (valid for ``|u|`` below the dtype's threshold)."""
    _, degree = _EXPREL_SERIES[dtype]
    coeffs = [1.0 / math.factorial(k + 1) for k in range(degree + 1)]
    out = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        out = out * u + c
    return out


def exprel_series_and_slope(u: Any, dtype: str) -> tuple[Any, Any]:
    """`exprel_series` and its derivative ``d exprel / du``, both by Horner's rule."""
    _, degree = _EXPREL_SERIES[dtype]
    coeffs = [1.0 / math.factorial(k + 1) for k in range(degree + 1)]
    value, slope = coeffs[-1], 0.0
    for c in reversed(coeffs[:-1]):
        slope = slope * u + value
        value = value * u + c
    return value, slope


def expm1_sat_and_slope(u: Any, cap: float) -> tuple[Any, Any]:
    """`expm1_sat` and its derivative (``exp(u)``, or the saturated slope beyond ``cap``), without autodiff.

    For hand-written gradients: both are element-wise selects of finite values, so nothing needs guarding.
    """
    grow, grow_m1 = math.exp(cap), math.expm1(cap)
    below = ops.minimum(u, cap)
    ratio = cap / ops.maximum(u, cap)  # in (0, 1]: 1 - ratio = (top - cap) / top as in expm1_sat
    value = ops.where(u > cap, grow_m1 + (grow * cap) * (1.0 - ratio), ops.expm1(below))
    slope = ops.where(u > cap, grow * ops.square(ratio), ops.exp(below))
    return value, slope


def sum_to_shape(value: Any, shape: tuple[Any, ...]) -> Any:
    """Sum ``value`` over the axes along which a tensor of static ``shape`` was broadcast to it.

    The gradient of a broadcast input. An unknown (``None``) size in ``shape`` counts as not broadcast: callers
    broadcast such an input to the full shape first.
    """
    extra = len(value.shape) - len(shape)
    if extra > 0:
        value = ops.sum(value, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and value.shape[i] != 1)
    if axes:
        value = ops.sum(value, axis=axes, keepdims=True)
    return value


def exprel_threshold(dtype: str) -> float:
    """Below this ``|u|`` `exprel_series` is accurate to the dtype's precision."""
    return _EXPREL_SERIES[dtype][0]

