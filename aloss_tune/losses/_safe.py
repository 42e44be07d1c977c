"""Guarded elementary functions for the robust-loss maths, in `keras.ops` only.

Everything here is written so that *both* the value and the gradient stay finite for every finite input:

* `expm1_sat` is ``expm1`` continued by its tangent line beyond ``exp(cap)`` with ``cap`` half the log of the
  dtype's largest number, so ``exp`` can never overflow (in value or in gradient);
* `exprel_series` is the Taylor polynomial of ``expm1(u) / u``, which removes the ``1 / alpha`` of Barron's
  formula analytically near ``alpha = 0`` (no division by zero, the right derivative there);
* every ``where`` gets inputs that are safe in *both* branches, because both branches are differentiated
  and a NaN in the unused one would leak into the gradient.

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
    """``log(sqrt(max))``: past this argument `expm1_sat` grows linearly (44.4 for float32, 354.9 for float64)."""
    return 0.5 * math.log(max_float(dtype))


def expm1_sat(u: Any, dtype: str) -> Any:
    """``expm1(u)``, continued linearly (value and slope matched, so C1) for ``u > cap``.

    Formula:
        ``expm1(min(u, cap)) + exp(cap) * max(u - cap, 0)`` with ``cap = log(sqrt(max_float))``.

    Exact for ``u <= cap``; beyond, both the value (about ``sqrt(max) * (u - cap)``) and the derivative
    (``exp(cap) = sqrt(max)``, about 1.8e19 in float32) stay finite, so neither the loss nor the gradients
    overflow to ``inf`` or ``NaN`` for realistic inputs.
    """
    cap = exp_cap(dtype)
    return ops.expm1(ops.minimum(u, cap)) + math.exp(cap) * ops.maximum(u - cap, 0.0)


def exprel_series(u: Any, dtype: str) -> Any:
    """The Taylor polynomial of ``expm1(u) / u`` (valid for ``|u|`` below the dtype's threshold)."""
    _, degree = _EXPREL_SERIES[dtype]
    coeffs = [1.0 / math.factorial(k + 1) for k in range(degree + 1)]
    out = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        out = out * u + c
    return out


def exprel_threshold(dtype: str) -> float:
    """Below this ``|u|`` `exprel_series` is accurate to the dtype's precision."""
    return _EXPREL_SERIES[dtype][0]

