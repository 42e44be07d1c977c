"""The probability distribution behind Barron's loss: ``log Z(alpha)``, the negative log-likelihood, samples.

``p(x | alpha, c) = exp(-rho(x, alpha, c)) / (c * Z(alpha))`` is a proper density for ``alpha >= 0``: Cauchy at
``alpha = 0``, normal at ``alpha = 2``, ever lighter tails beyond. Its negative log-likelihood is what the
adaptive loss minimises, so that ``alpha`` and the scale can be learned instead of collapsing.

``log Z`` has no closed form. ``scripts/make_partition_table.py`` integrates it (and its derivative) with
scipy's adaptive quadrature on a grid and writes ``data/log_partition.npz``; here a cubic Hermite spline in
`keras.ops` interpolates the table, so nothing but Keras is needed at run time. The spline works on the
remainder ``g = log Z - S`` where ``S(d) = -(d / 8) log1p(1 / d^2)``, ``d = alpha - 2``, carries the
``(d / 4) log|d|`` singularity of ``log Z`` at ``alpha = 2`` exactly; ``g`` is tabulated against
``t = q / (k + q)``, ``q = sign(d) |d|^(1/3)``, which maps ``[0, +inf]`` onto ``[-1, 1]`` and makes ``g`` smooth.
Measured: ``|spline - quadrature| <= 1.1e-8`` at 3,615 off-grid points (worst near ``alpha = 0``), ``1e-11``
for ``alpha >= 0.5``; the first derivative is continuous, and exact in its ``log|alpha - 2|`` divergence.
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from typing import Any

import numpy as np
from keras import ops

from aloss_tune.errors import ConfigError
from aloss_tune.losses._base import FINITE_POSITIVE, NON_NEGATIVE, Interval
from aloss_tune.losses._safe import EPS_ALPHA2, compute_dtype, is_scalar
from aloss_tune.losses.robust import general_loss

__all__ = ["log_partition", "robust_nll", "robust_sample"]

#: ``log Z(+inf) = log of the integral of exp(-expm1(x^2 / 2))`` (mpmath, 30 digits).
LOG_Z_INF = 0.7052602544175697
_TABLE_FILE = "log_partition.npz"


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    """The spline: grid constants and, per interval, the cubic's coefficients in the local coordinate."""
    with resources.as_file(resources.files("aloss_tune.losses").joinpath("data", _TABLE_FILE)) as path:
        with np.load(path) as data:
            values, slopes = data["values"], data["slopes"]
            step, t_start, curve_k = float(data["t_step"]), float(data["t_start"]), float(data["curve_k"])
    y0, y1 = values[:-1], values[1:]
    d0, d1 = step * slopes[:-1], step * slopes[1:]
    coeffs = (y0, d0, -3.0 * y0 - 2.0 * d0 + 3.0 * y1 - d1, 2.0 * y0 + d0 - 2.0 * y1 + d1)
    return {"coeffs": coeffs, "step": step, "t_start": t_start, "curve_k": curve_k, "intervals": len(y0)}


@functools.lru_cache(maxsize=4)
def _coeffs(dtype: str) -> tuple[np.ndarray, ...]:
    return tuple(c.astype(dtype) for c in _table()["coeffs"])


def log_partition(alpha: Any) -> Any:
    """``log Z(alpha)``, the log-normaliser of Barron's distribution, differentiable in ``alpha``.

    Formula:
        ```
        Z(alpha) = integral over x in R of exp(-rho(x, alpha, 1)) dx
        ```
        ``Z(0) = pi * sqrt(2)`` (Cauchy), ``Z(2) = sqrt(2 pi)`` (normal), ``log Z(+inf) = 0.70526025441757``.
        For ``alpha < 0`` the integral diverges: the result is ``+inf``.

    Interpolated from a table integrated numerically (see the module docstring); absolute error below
    ``1.1e-8`` in float64 for all ``alpha >= 0``. The derivative is continuous and diverges like
    ``log|alpha - 2| / 4`` at ``alpha = 2``, exactly as the true one does; within ``1e-10`` of 2 it is
    evaluated at that distance, as in `general_loss`.

    Args:
        alpha: a number or tensor of shapes in ``[0, +inf]``; float64 is computed in float64.

    Returns:
        ``log Z(alpha)``, with ``alpha``'s shape.

    References:
        J. T. Barron, "A General and Adaptive Robust Loss Function", CVPR 2019, arXiv:1701.03077 (Sec. 2).
    """
    if is_scalar(alpha):
        alpha = Interval().check("log_partition", "alpha", alpha)
    alpha = ops.convert_to_tensor(alpha)
    dtype = compute_dtype(alpha)
    alpha = ops.cast(alpha, dtype)
    table = _table()
    is_pos_inf = ops.logical_and(ops.isinf(alpha), alpha > 0)
    is_negative = alpha < 0
    safe_alpha = ops.where(ops.logical_or(is_pos_inf, is_negative), 3.0, alpha)
    delta = safe_alpha - 2.0
    # Spline coordinate t; |alpha - 2| is floored at EPS_ALPHA2 so that the cube root's derivative is finite.
    root = ops.cbrt(ops.maximum(ops.abs(delta), EPS_ALPHA2))
    q = ops.where(delta < 0, -root, root)
    k = table["curve_k"]
    t = 1.0 - k / (k + q)
    pos = (t - table["t_start"]) / table["step"]
    index = ops.clip(ops.cast(ops.floor(pos), "int32"), 0, table["intervals"] - 1)
    s = pos - ops.cast(index, dtype)
    c0, c1, c2, c3 = (ops.take(ops.convert_to_tensor(c), index) for c in _coeffs(dtype))
    remainder = c0 + s * (c1 + s * (c2 + s * c3))
    # The singular part S(d) = (d / 4) log|d| + O(d^3) near 2, -> 0 at infinity; log's argument floored.
    singular = (-0.125 * delta) * ops.log1p(1.0 / ops.maximum(ops.square(delta), EPS_ALPHA2**2))
    value = ops.where(is_pos_inf, LOG_Z_INF, remainder + singular)
    return ops.where(is_negative, math.inf, value)


def robust_nll(x: Any, alpha: Any, scale: Any = 1.0) -> Any:
    """The negative log-likelihood of residuals ``x`` under Barron's distribution, element-wise.

    Formula:
        ```
        nll(x, alpha, c) = rho(x, alpha, c) + log(c) + log Z(alpha)
        ```

    Minimising it over ``alpha`` and ``c`` as well as the model is the adaptive robust loss: the ``log c`` and
    ``log Z`` terms stop the optimiser from simply inflating the scale or pushing ``alpha`` to a bound.
    **The NLL can be negative** (a density may exceed 1 when ``c`` is small): that is correct, not a bug.

    Args:
        x: residuals, any shape; float64 is computed in float64.
        alpha: the shape, in ``[0, +inf]`` (the distribution is improper below 0), number or tensor.
        scale: the scale ``c > 0``, number or tensor broadcastable to ``x``.

    Returns:
        The NLL per element, with the broadcast shape of the inputs.

    References:
        J. T. Barron, "A General and Adaptive Robust Loss Function", CVPR 2019, arXiv:1701.03077 (Sec. 2).
    """
    x = ops.convert_to_tensor(x)
    dtype = compute_dtype(x)
    if is_scalar(alpha):
        alpha = NON_NEGATIVE.check("robust_nll", "alpha", alpha)
    log_z = log_partition(ops.cast(ops.convert_to_tensor(alpha), dtype))
    if is_scalar(scale):
        scale = FINITE_POSITIVE.check("robust_nll", "scale", scale)
        return general_loss(x, alpha, scale) + (math.log(scale) + log_z)
    scale = ops.cast(scale, dtype)
    return general_loss(x, alpha, scale) + (ops.log(scale) + log_z)


def robust_sample(alpha: float, scale: float = 1.0, size: int | tuple[int, ...] = 1, seed: Any = None) -> np.ndarray:
    """Draw samples of Barron's distribution by rejection from a Cauchy proposal (NumPy, not differentiable).

    Formula:
        ```
        x ~ Cauchy(0, sqrt(2) c),  accept with probability exp(-(rho(x, alpha, c) - rho(x, 0, c)))
        ```
        valid because ``rho`` increases with ``alpha``; the acceptance rate is ``Z(alpha) / Z(0) >= 0.45``.

    Args:
        alpha: the shape, a number in ``[0, +inf]``.
        scale: the scale ``c > 0``.
        size: the output shape.
        seed: anything `numpy.random.default_rng` accepts.

    Returns:
        A float64 array of shape ``size``.

    References:
        J. T. Barron, "A General and Adaptive Robust Loss Function", CVPR 2019, arXiv:1701.03077 (Sec. 2).
    """
    alpha = NON_NEGATIVE.check("robust_sample", "alpha", alpha)
    scale = FINITE_POSITIVE.check("robust_sample", "scale", scale)
    shape = (size,) if isinstance(size, int) else tuple(size)
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise ConfigError(f"robust_sample: `size` must be a non-negative integer or shape, but got size={size!r}.")
    count = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(seed)
    rate = math.exp(LOG_Z_INF) / (math.pi * math.sqrt(2.0))  # Z(alpha) / Z(0) >= Z(inf) / Z(0) = 0.456
    chunks, total = [], 0
    while total < count:
        n = int((count - total) / rate * 1.1) + 16
        x = math.sqrt(2.0) * rng.standard_cauchy(n)
        with np.errstate(over="ignore"):
            excess = _rho_numpy(x, alpha) - np.log1p(0.5 * x * x)
        kept = x[rng.uniform(size=n) < np.exp(-excess)]
        chunks.append(kept)
        total += kept.size
    return scale * np.concatenate(chunks)[:count].reshape(shape)


def _rho_numpy(x: np.ndarray, alpha: float) -> np.ndarray:
    """``rho(x, alpha, 1)`` for ``alpha >= 0`` in float64 NumPy (the sampler's; identical on every backend)."""
    z = np.square(x)
    if alpha == 0.0:
        return np.log1p(0.5 * z)
    if abs(alpha - 2.0) < EPS_ALPHA2:
        return 0.5 * z
    if math.isinf(alpha):
        return np.expm1(0.5 * z)
    b = abs(alpha - 2.0)
    return (b / alpha) * np.expm1(0.5 * alpha * np.log1p(z / b))
