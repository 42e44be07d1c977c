"""Barron's general loss: closed forms, a 50-digit reference, derivatives, limits and the RobustLoss class.

Every check runs on both code paths of `general_loss` (a scalar alpha chosen when tracing, a tensor alpha as
learned) and in float32 and float64. The reference is mpmath at 50 digits, evaluated at the inputs as rounded
to the dtype under test, so that the errors measured are the function's own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import keras
import mpmath as mp
import numpy as np
import pytest
from keras import ops

import aloss_tune
from aloss_tune.errors import ConfigError
from aloss_tune.losses import RobustLoss, general_loss

BACKEND = keras.backend.backend()
mp.mp.dps = 50


@pytest.fixture(autouse=True)
def _fifty_digits():
    """The references need 50 digits whatever another module set globally."""
    with mp.workdps(50):
        yield
INF = math.inf

# The grid of the issue (+-inf, -1e3, +-1e-4, 1.99, 2.01, 1e3) and the special points in between.
ALPHAS = [-INF, -1e3, -8.0, -2.0, -1.0, -1e-4, -1e-8, 0.0, 1e-8, 1e-4, 0.5, 1.0, 1.5, 1.99, 2.0, 2.01, 3.0, 4.0,
          10.0, 1e3, INF]
XS = np.concatenate([-np.logspace(-4, 2.5, 14), [0.0], np.logspace(-4, 2.5, 14)])
SCALE = 1.3
RTOL = {"float32": 1e-5, "float64": 1e-10}
MODES = ["scalar", "tensor"]


# ---- references ------------------------------------------------------------------------------------------

def _mp_alpha(alpha: float) -> Any:
    return mp.inf if alpha == INF else (-mp.inf if alpha == -INF else mp.mpf(alpha))


def rho_mp(x: Any, alpha: Any, c: Any) -> Any:
    z = (mp.mpf(x) / mp.mpf(c)) ** 2
    if alpha == mp.inf:
        return mp.expm1(z / 2)
    if alpha == -mp.inf:
        return -mp.expm1(-z / 2)
    if alpha == 0:
        return mp.log1p(z / 2)
    if alpha == 2:
        return z / 2
    b = abs(alpha - 2)
    return b / alpha * (mp.power(z / b + 1, alpha / 2) - 1)


def drho_dx_mp(x: Any, alpha: Any, c: Any) -> Any:
    """``(x / c^2) (z / b + 1)^(alpha / 2 - 1)`` and its limits (BARRON.md)."""
    x, c = mp.mpf(x), mp.mpf(c)
    z = (x / c) ** 2
    if alpha == mp.inf:
        return x / c**2 * mp.exp(z / 2)
    if alpha == -mp.inf:
        return x / c**2 * mp.exp(-z / 2)
    if alpha == 2:
        return x / c**2
    b = abs(alpha - 2)
    return x / c**2 * mp.power(z / b + 1, alpha / 2 - 1)


def drho_dalpha_mp(x: Any, alpha: Any, c: Any) -> Any:
    if abs(alpha) == mp.inf:
        return mp.mpf(0)
    return mp.diff(lambda a: rho_mp(x, a, c), alpha, h=mp.mpf("1e-20"))


def _round(values: Any, dtype: str) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=dtype).ravel()]


@functools.cache
def reference(alpha: float, dtype: str, scale: float = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """``rho`` and ``d rho / dx`` at ``XS`` (as rounded to ``dtype``)."""
    a = _mp_alpha(float(np.asarray(alpha, dtype)) if math.isfinite(alpha) else alpha)
    c = _round(scale, dtype)[0]
    xs = _round(XS, dtype)
    values = np.array([float(rho_mp(x, a, c)) for x in xs])
    slopes = np.array([float(drho_dx_mp(x, a, c)) for x in xs])
    return values, slopes


# ---- helpers ------------------------------------------------------------------------------------------------

def value_and_grads(fn: Callable[..., Any], *arrays: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """``fn(*arrays)`` and the element-wise derivatives of ``sum(fn)`` with respect to every input.

    On JAX the function is compiled once per ``fn`` (pass the same object again to reuse it): running it op
    by op would compile every primitive for every new shape.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(a) for a in arrays]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            out = fn(*tensors)
            total = tf.reduce_sum(out)
        return np.asarray(out), [np.asarray(g) for g in tape.gradient(total, tensors)]
    if BACKEND == "jax":
        shape = np.shape(arrays[0])
        out, grads = _jax_value_and_grads(fn, len(arrays))(*_padded(arrays))
        return _unpad(out, shape), [_unpad(g, shape) for g in grads]
    if BACKEND == "torch":
        import torch

        tensors = [ops.convert_to_tensor(a).requires_grad_(True) for a in arrays]  # on Keras's device
        out = fn(*tensors)
        grads = torch.autograd.grad(torch.sum(out), tensors)
        return ops.convert_to_numpy(out), [ops.convert_to_numpy(g) for g in grads]
    pytest.skip(f"no gradient helper for the {BACKEND} backend")


def _padded(arrays: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Element-wise inputs of one shape, flattened and padded (with ones) to a power of two >= 64, so that
    the compiled functions are reused across tests."""
    size = max(64, 1 << int(np.ceil(np.log2(max(np.size(arrays[0]), 1)))))
    out = []
    for a in arrays:
        flat = np.ravel(a)
        out.append(np.concatenate([flat, np.ones(size - flat.size, flat.dtype)]))
    return out


def _unpad(values: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(values)[: int(np.prod(shape))].reshape(shape)


@functools.cache
def _jax_value_and_grads(fn: Callable[..., Any], count: int) -> Callable[..., Any]:
    import jax
    import jax.numpy as jnp

    def total(*args: Any) -> Any:
        out = fn(*args)
        return jnp.sum(out), out

    step = jax.value_and_grad(total, argnums=tuple(range(count)), has_aux=True)
    return jax.jit(lambda *args: (lambda res: (res[0][1], res[1]))(step(*args)))


@functools.cache
def _loss_fn(alpha: Any = None) -> Callable[..., Any]:
    """``general_loss`` with a fixed scalar ``alpha`` (or, for ``None``, a tensor alpha argument)."""
    if alpha is None:
        return lambda x, a, c: general_loss(x, a, c)
    return lambda x, c: general_loss(x, alpha, c)


def rho_and_grads(x: Any, alpha: Any, scale: Any, dtype: str, mode: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """``rho`` and ``[d/dx, d/dscale, d/dalpha (tensor mode only)]`` element-wise, as float64 arrays."""
    x = np.asarray(x, dtype=dtype)
    c = np.broadcast_to(np.asarray(scale, dtype=dtype), x.shape).copy()
    if mode == "tensor":
        a = np.broadcast_to(np.asarray(alpha, dtype=dtype), x.shape).copy()
        out, (gx, ga, gc) = value_and_grads(_loss_fn(), x, a, c)
        return out.astype(np.float64), [gx.astype(np.float64), gc.astype(np.float64), ga.astype(np.float64)]
    out, (gx, gc) = value_and_grads(_loss_fn(alpha), x, c)
    return out.astype(np.float64), [gx.astype(np.float64), gc.astype(np.float64)]


def grid_rho_and_grads(
    x: Any, alphas: list[float], scale: float, dtype: str, mode: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``rho`` and its derivatives on the grid ``x[:, None]`` by ``alphas[None, :]``, shape ``(len(x), len(alphas))``.

    The tensor path takes the whole grid in one call (alpha per column); the scalar path one call per alpha.
    """
    x = np.asarray(x, dtype=np.float64)
    if mode == "tensor":
        grid_x = np.broadcast_to(x[:, None], (x.size, len(alphas)))
        grid_a = np.broadcast_to(np.asarray(alphas, dtype=np.float64)[None, :], grid_x.shape)
        return rho_and_grads(grid_x, grid_a, scale, dtype, mode)
    columns = [rho_and_grads(x, alpha, scale, dtype, mode) for alpha in alphas]
    rho = np.stack([c[0] for c in columns], axis=1)
    grads = [np.stack([c[1][k] for c in columns], axis=1) for k in range(2)]
    return rho, grads


def rho_np(x: Any, alpha: Any, scale: Any = 1.0, dtype: str = "float64") -> np.ndarray:
    x = np.asarray(x, dtype)
    if BACKEND == "jax" and not isinstance(alpha, (str, type(None))) and not isinstance(scale, (str, type(None))):
        c = np.broadcast_to(np.asarray(scale, dtype), x.shape)
        if np.ndim(alpha) == 0 and not isinstance(alpha, np.ndarray):
            out = _jax_value(_loss_fn(float(alpha)))(*_padded((x, c)))
        else:
            out = _jax_value(_loss_fn())(*_padded((x, np.broadcast_to(np.asarray(alpha, dtype), x.shape), c)))
        return _unpad(out, x.shape).astype(np.float64)
    return np.asarray(ops.convert_to_numpy(general_loss(x, alpha, scale)), dtype=np.float64)


@functools.cache
def _jax_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    import jax

    return jax.jit(fn)


def _rel(got: np.ndarray, want: np.ndarray, floor: float = 1e-300) -> np.ndarray:
    """Relative error; 0 where the reference is not finite (compared elsewhere)."""
    finite = np.isfinite(want)
    safe = np.where(finite, want, 1.0)
    return np.where(finite, np.abs(got - safe) / np.maximum(np.abs(safe), floor), 0.0)


# ---- closed forms ---------------------------------------------------------------------------------------------

CLOSED_FORMS = {
    2.0: lambda z: z / 2,
    1.0: lambda z: np.sqrt(z + 1) - 1,
    0.0: lambda z: np.log1p(z / 2),
    -2.0: lambda z: 2 * z / (z + 4),
    -INF: lambda z: -np.expm1(-z / 2),
    INF: lambda z: np.expm1(z / 2),
    4.0: lambda z: z**2 / 8 + z / 2,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("alpha", list(CLOSED_FORMS))
def test_closed_forms_at_every_limit(alpha, mode, dtype):
    x = np.linspace(-6.0, 6.0, 41).astype(dtype)
    z = (x.astype(np.float64) / 0.7) ** 2
    want = CLOSED_FORMS[alpha](z)
    a = alpha if mode == "scalar" else np.full(x.shape, alpha, dtype)
    got = rho_np(x, a, 0.7, dtype)
    # float32: exp of an argument near 37 amplifies the rounding of z itself (about 3e-6 relative).
    tol = {"float32": 1e-5, "float64": 1e-13}[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_matches_fifty_digit_reference_on_the_alpha_grid(mode, dtype):
    limit = math.sqrt(np.finfo(dtype).max) / 10  # below the saturation of alpha > 2 (see test below)
    want = np.stack([reference(alpha, dtype)[0] for alpha in ALPHAS], axis=1)
    if mode == "tensor":
        grid = np.broadcast_to(np.asarray(ALPHAS, dtype)[None, :], want.shape)
        got = rho_np(np.broadcast_to(XS[:, None], want.shape).astype(dtype), grid, SCALE, dtype)
    else:
        got = np.stack([rho_np(XS.astype(dtype), alpha, SCALE, dtype) for alpha in ALPHAS], axis=1)
    err = np.where(np.abs(want) < limit, _rel(got, want), 0.0)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= RTOL[dtype], f"max relative error {err.max():.3g} at alpha={ALPHAS[worst[1]]}"


@pytest.mark.parametrize("mode", MODES)
def test_tiny_nonzero_alpha_is_exact(mode, dtype):
    # The reference implementation returns 0.143 here (its clamped alpha and its raw alpha disagree).
    for alpha in (1e-8, -1e-8, 1e-30, -1e-30):
        a = alpha if mode == "scalar" else np.asarray([alpha], dtype)
        got = rho_np([3.0], a, 1.0, dtype)[0]
        want = float(rho_mp(3, mp.mpf(float(np.asarray(alpha, dtype))), 1))
        assert got == pytest.approx(want, rel=RTOL[dtype]), alpha
    assert rho_np([3.0], 1e-8, 1.0, dtype)[0] == pytest.approx(1.7047480922, rel=1e-6)


# ---- properties -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_drho_dx_has_the_sign_of_x_and_obeys_the_bounds(mode, dtype):
    c = 0.8
    _, (gx, *_) = grid_rho_and_grads(XS, ALPHAS, c, dtype, mode)
    x = np.broadcast_to(XS.astype(dtype).astype(np.float64)[:, None], gx.shape)
    alphas = np.broadcast_to(np.asarray(ALPHAS)[None, :], gx.shape)
    slope = np.stack([reference(alpha, dtype, c)[1] for alpha in ALPHAS], axis=1)
    # Welsch-like tails underflow (and XLA flushes subnormals): require the sign where the slope is normal.
    normal = np.abs(slope) > 1e6 * np.finfo(dtype).tiny
    assert np.all(np.sign(gx[normal]) == np.sign(x[normal]))
    assert np.all(gx * x >= 0)
    assert np.all((np.abs(gx) <= np.abs(x) / c**2 * (1 + 1e-6))[alphas <= 2])
    assert np.all((np.abs(gx) <= 1 / c * (1 + 1e-6))[alphas <= 1])


def test_rho_increases_with_alpha_and_decreases_with_scale(dtype):
    finite = [a for a in ALPHAS if math.isfinite(a)]
    rho, (_, gc, ga) = grid_rho_and_grads(XS, finite, 1.1, dtype, "tensor")
    # d rho / d alpha = O(x^6) near 0, computed with rounding noise of about eps * rho / |alpha|.
    noise = {"float32": 1e3, "float64": 1e5}[dtype] * np.finfo(dtype).eps * rho
    assert np.all(ga >= -noise)
    assert np.all(gc <= 0)
    x = np.array([0.5, 2.0, 7.0], dtype)
    by_alpha = np.stack([rho_np(x, a, 1.0, dtype) for a in ALPHAS])
    assert np.all(np.diff(by_alpha, axis=0) >= 0)


@pytest.mark.parametrize("mode", MODES)
def test_scale_invariance(mode, dtype):
    x = np.linspace(-10, 10, 33)
    base, _ = grid_rho_and_grads(x, ALPHAS, 1.0, dtype, mode)
    for m in (0.01, 3.0, 250.0):
        scaled, _ = grid_rho_and_grads(m * x, ALPHAS, m, dtype, mode)
        np.testing.assert_allclose(scaled, base, rtol=10 * RTOL[dtype], atol=1e-30)


def test_negative_alpha_is_bounded(dtype):
    x = np.logspace(-2, 6, 30)
    for alpha in (-0.5, -2.0, -8.0, -1e3):
        assert np.all(rho_np(x, alpha, 1.0, dtype) <= (alpha - 2) / alpha * (1 + 1e-7))
    assert np.all(rho_np(x, -INF, 1.0, dtype) <= 1.0)


# ---- derivatives ------------------------------------------------------------------------------------------------

LARGE_XS = np.array([-1e15, -1e9, -1e6, -1e3, -30.0, -3.0, -1e-3, 0.0, 1e-30, 1e-3, 3.0, 30.0, 1e3, 1e6, 1e9, 1e15])


@pytest.mark.parametrize("mode", MODES)
def test_gradients_finite_everywhere_on_the_grid(mode, dtype):
    for c in (1e-3, 1.0, 50.0):
        x = LARGE_XS * (c if dtype == "float32" else 1.0)
        rho, grads = grid_rho_and_grads(x, ALPHAS, c, dtype, mode)
        assert np.all(np.isfinite(rho)), (c, rho)
        for g in grads:
            assert np.all(np.isfinite(g)), (c, g)


def test_large_alpha_and_residuals_saturate_instead_of_overflowing(dtype):
    top = math.sqrt(np.finfo(dtype).max)
    x = np.array([10.0, 1e2, 1e3, 1e4, 1e5] if dtype == "float32" else [10.0, 1e10, 1e20, 1e30, 1e40], dtype)
    for alpha in (10.0, 1e3, INF):
        for mode in MODES:
            rho, (gx, gc, *ga) = rho_and_grads(x, alpha, 1.0, dtype, mode)
            assert np.all(np.isfinite(rho)) and np.all(np.diff(rho) >= 0) and rho[1] > rho[0], (alpha, mode, rho)
            cap = math.log(top)
            assert top / 2 <= rho[-1] <= 1.001 * (1 + cap) * top, (alpha, mode, rho)  # saturated, bounded
            assert np.all(np.isfinite(gx)) and np.all(gx >= 0) and gx[0] > 0
            assert np.all(np.isfinite(gc)) and np.all(gc <= 0) and gc[0] < 0
            assert all(np.all(np.isfinite(g)) for g in ga)


@functools.cache
def _grad_reference(alpha: float, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xs = _round(GRAD_XS, dtype)
    c = _round(SCALE, dtype)[0]
    a = _mp_alpha(float(np.asarray(alpha, dtype)) if math.isfinite(alpha) else alpha)
    rho = np.array([float(rho_mp(x, a, c)) for x in xs])
    gx = np.array([float(drho_dx_mp(x, a, c)) for x in xs])
    gc = -np.array(xs) / c * gx
    ga = np.array([float(drho_dalpha_mp(x, a, c)) for x in xs])
    return rho, gx, gc, ga


GRAD_XS = np.array([-30.0, -4.0, -1.0, -0.25, -1e-3, 0.0, 1e-3, 0.3, 1.0, 2.5, 8.0, 30.0])


@pytest.mark.parametrize("mode", MODES)
def test_gradients_match_the_reference(mode, dtype):
    rtol = {"float32": 2e-5, "float64": 1e-9}[dtype]
    floor = 1e6 * np.finfo(dtype).tiny  # XLA flushes subnormal intermediates
    alphas = [a for a in ALPHAS if a != 2.0]  # d rho / d alpha is +inf at 2: tested below
    rho_ref, gx_ref, gc_ref, ga_ref = (np.stack(r, axis=1) for r in zip(*(_grad_reference(a, dtype) for a in alphas)))
    ok = np.abs(rho_ref) < 1e15
    _, grads = grid_rho_and_grads(GRAD_XS, alphas, SCALE, dtype, mode)
    for got, want, name in ((grads[0], gx_ref, "x"), (grads[1], gc_ref, "scale")):
        err = np.where(ok & (np.abs(want) > floor), _rel(got, want), 0.0)
        assert err.max() <= rtol, (name, alphas[np.unravel_index(np.argmax(err), err.shape)[1]], err.max())
    if mode == "tensor":
        # d rho / d alpha is O(x^6) at small x: measure it against the size of rho as well.
        err = np.abs(grads[2] - ga_ref) / np.maximum(np.maximum(np.abs(ga_ref), np.abs(rho_ref)), floor)
        err = np.where(ok, err, 0.0)
        assert err.max() <= 5 * rtol, ("alpha", alphas[np.unravel_index(np.argmax(err), err.shape)[1]], err.max())


@pytest.mark.parametrize("alpha", [-3.0, -0.7, 1e-3, 0.4, 1.2, 1.97, 2.3, 6.0])
def test_gradients_match_finite_differences(alpha, x64):
    # float64 central differences of the function itself (checks the gradient code paths for consistency).
    dtype = "float64"
    x = np.array([-5.0, -0.8, 0.3, 2.0, 9.0])
    c, h = 0.9, 1e-6
    _, (gx, gc, ga) = rho_and_grads(x, alpha, c, dtype, "tensor")

    def f(x_: Any, a_: float, c_: float) -> np.ndarray:
        return rho_np(x_, np.full(np.shape(x_), a_), np.full(np.shape(x_), c_), dtype)

    np.testing.assert_allclose(gx, (f(x + h, alpha, c) - f(x - h, alpha, c)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(gc, (f(x, alpha, c + h) - f(x, alpha, c - h)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(ga, (f(x, alpha + h, c) - f(x, alpha - h, c)) / (2 * h), rtol=1e-5, atol=1e-9)


def test_dalpha_is_right_at_zero_and_diverges_correctly_at_two(dtype):
    # At alpha = 0 the reference implementation returns exactly 0 (a hard switch); the truth is not 0.
    for x, want in ((1.0, 0.0050346010858758331), (3.0, 0.28325837746933407)):
        _, (_, _, ga) = rho_and_grads([x], 0.0, 1.0, dtype, "tensor")
        assert ga[0] == pytest.approx(want, rel=1e-4 if dtype == "float32" else 1e-9)
    # At alpha = 2 the true derivative is +inf ((z / 4) log(1 / |alpha - 2|) + O(1)): we return a large,
    # finite, positive value, above the derivative anywhere near 2 that the dtype can represent.
    x = np.array([0.5, 1.0, 3.0])
    _, (_, _, at_two) = rho_and_grads(x, 2.0, 1.0, dtype, "tensor")
    assert np.all(np.isfinite(at_two))
    for delta in (1e-2, -1e-2, 1e-4, -1e-4):
        _, (_, _, near) = rho_and_grads(x, 2.0 + delta, 1.0, dtype, "tensor")
        want = [float(drho_dalpha_mp(v, mp.mpf(2.0 + delta), 1)) for v in x]
        np.testing.assert_allclose(near, want, rtol=1e-3 if dtype == "float32" else 1e-8)
        assert np.all(at_two > near)
    # ... that of a point about 1e-10 from 2 (the floor of |alpha - 2|): between those at 1e-8 and 1e-12.
    far = [float(drho_dalpha_mp(v, mp.mpf(2) + mp.mpf("1e-8"), 1)) for v in x]
    close = [float(drho_dalpha_mp(v, mp.mpf(2) - mp.mpf("1e-12"), 1)) for v in x]
    assert np.all(np.asarray(far) < at_two) and np.all(at_two < np.asarray(close))


# ---- dtypes -------------------------------------------------------------------------------------------------

def test_float64_stays_float64_and_half_precision_computes_in_float32(dtype):
    out = general_loss(np.ones(3, dtype), 0.5, 1.0)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    out = general_loss(np.ones(3, dtype), np.full(3, 0.5, dtype), np.ones(3, dtype))
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    half = general_loss(np.array([1e3, 2.0], "float16"), 0.0, 1.0)
    assert keras.backend.standardize_dtype(half.dtype) == "float32"
    np.testing.assert_allclose(ops.convert_to_numpy(half), np.log1p(np.array([1e6, 4.0]) / 2), rtol=1e-6)


def test_invalid_scalars_are_rejected():
    for alpha in (math.nan, "1", None):
        with pytest.raises(ConfigError, match="alpha"):
            general_loss(np.ones(2, "float32"), alpha, 1.0)
    for scale in (0.0, -1.0, INF, math.nan):
        with pytest.raises(ConfigError, match="scale"):
            general_loss(np.ones(2, "float32"), 1.0, scale)


# ---- RobustLoss -----------------------------------------------------------------------------------------------

def test_robust_loss_config_is_exact_and_round_trips():
    loss = RobustLoss(alpha=-INF, scale=0.25, name="welsch")
    assert loss.get_config() == {"name": "welsch", "reduction": "sum_over_batch_size", "alpha": -INF, "scale": 0.25}
    again = RobustLoss.from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, RobustLoss) and restored.get_config() == loss.get_config()
    assert repr(RobustLoss()) == "RobustLoss(alpha=1.0, scale=1.0)"


@pytest.mark.parametrize(
    "kwargs", [{"alpha": math.nan}, {"alpha": "0"}, {"scale": 0.0}, {"scale": -2.0}, {"scale": INF}, {"scale": True}]
)
def test_robust_loss_rejects_invalid_parameters(kwargs):
    with pytest.raises(ConfigError, match="RobustLoss"):
        RobustLoss(**kwargs)


def test_robust_loss_is_the_mean_over_the_last_axis_with_weights_and_1d_labels(rng):
    y_true = rng.normal(size=(6, 3)).astype("float32")
    y_pred = (y_true + rng.standard_cauchy(size=(6, 3))).astype("float32")
    loss = RobustLoss(alpha=0.5, scale=0.7, reduction=None)
    per_sample = np.asarray(loss(y_true, y_pred))
    want = rho_np(y_pred - y_true, 0.5, 0.7, "float32").mean(axis=-1)
    np.testing.assert_allclose(per_sample, want, rtol=1e-6)
    weights = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 1.0], "float32")
    weighted = float(RobustLoss(alpha=0.5, scale=0.7)(y_true, y_pred, sample_weight=weights))
    assert weighted == pytest.approx(float(np.sum(want * weights) / 6), rel=1e-6)
    # 1-D labels against (B, 1) predictions: one value per sample, no (B, B) broadcast.
    flat = np.asarray(loss(y_true[:, 0], y_pred[:, :1]))
    assert flat.shape == (6,)
    np.testing.assert_allclose(flat, rho_np(y_pred[:, 0] - y_true[:, 0], 0.5, 0.7, "float32"), rtol=1e-6)
    assert float(RobustLoss()(y_true, y_true)) == 0.0


def test_robust_loss_computes_in_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        loss = RobustLoss(alpha=1.0, scale=0.01, reduction=None)
        y_pred = np.array([[300.0], [0.5]], "float16")
        out = loss(np.zeros((2, 1), "float16"), y_pred)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        z = (y_pred.astype(np.float64)[:, 0] / 0.01) ** 2  # 9e8: would overflow float16
        np.testing.assert_allclose(np.asarray(out), np.sqrt(z + 1) - 1, rtol=1e-6)
    finally:
        keras.config.set_dtype_policy(previous)


# JAX without jit runs every step op by op (slow and not what anyone trains with); TensorFlow runs both.
@pytest.mark.parametrize("jit_compile", [True, False] if BACKEND == "tensorflow" else [True])
def test_robust_loss_trains_a_model(jit_compile, rng):
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.standard_cauchy(256)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=RobustLoss(alpha=0.0, scale=0.5), jit_compile=jit_compile)
    model.fit(np.tile(x, (100, 1)), np.tile(y, 100), batch_size=256, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(np.asarray(model.layers[0].kernel).ravel(), [1.0, -2.0, 0.5, 3.0], atol=0.05)


def test_barron_factory():
    factory = aloss_tune.get_factory("barron")
    assert factory.tasks == ("regression",)
    assert factory.defaults() == {"alpha": 1.0, "scale": 1.0}
    space = factory.search_space()
    assert (space["alpha"].low, space["alpha"].high, space["alpha"].log) == (-4.0, 1.5, False)
    assert space["scale"].log and factory.param("scale").relative
    loss = aloss_tune.build_loss({"loss": "barron", "loss.alpha": -INF, "loss.scale": 0.3})
    assert isinstance(loss, RobustLoss) and (loss.alpha, loss.scale) == (-INF, 0.3)
    with pytest.raises(ConfigError):
        aloss_tune.build_loss({"loss": "barron", "loss.scale": -1.0})
