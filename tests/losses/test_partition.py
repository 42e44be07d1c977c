"""log Z(alpha), the NLL, the density and the sampler, against quadrature and closed forms.

The reference log-partition here is computed independently of ``scripts/make_partition_table.py``: plain
``scipy.integrate.quad`` on the ``expm1``/``log1p`` form of rho (the script uses other formulas), plus mpmath
at a few points and the closed forms at 0, 1, 2 and infinity.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import keras
import mpmath as mp
import numpy as np
import pytest
from keras import ops
from scipy import integrate, special, stats

from aloss_tune.errors import ConfigError
from aloss_tune.losses import log_partition, robust_nll, robust_sample

BACKEND = keras.backend.backend()
LOG_Z_0 = math.log(math.pi * math.sqrt(2.0))
LOG_Z_1 = math.log(2.0 * math.e * special.k1(1.0))  # integral of exp(-(sqrt(x^2 + 1) - 1)) = 2 e K1(1)
LOG_Z_2 = 0.5 * math.log(2.0 * math.pi)
TABLE_TOL = 1e-7  # the target for the interpolated table (measured: 1.1e-8)


def rho_ref(x: np.ndarray | float, alpha: float) -> Any:
    """float64 rho(x, alpha, 1) for alpha >= 0, the plain expm1 / log1p form."""
    z = np.square(x)
    if alpha == 0.0:
        return np.log1p(z / 2)
    if alpha == 2.0:
        return z / 2
    if math.isinf(alpha):
        return np.expm1(z / 2)
    b = abs(alpha - 2.0)
    return b / alpha * np.expm1(alpha / 2 * np.log1p(z / b))


def log_z_quad(alpha: float) -> float:
    """log of the integral of exp(-rho) over the real line: [0, 1] plus the tail mapped by x = 1 / t."""

    def density(x: float) -> float:
        with np.errstate(over="ignore"):
            return float(np.exp(-rho_ref(x, alpha)))

    def tail(t: float) -> float:
        return density(1.0 / t) / (t * t) if t > 0 else 0.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)  # tolerance at round-off; fine
        head = integrate.quad(density, 0.0, 1.0, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
        rest = integrate.quad(tail, 0.0, 1.0, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    return math.log(2.0 * (head + rest))


def log_z(alpha: Any, dtype: str = "float64") -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(log_partition(np.asarray(alpha, dtype))), dtype=np.float64)


# ---- values -------------------------------------------------------------------------------------------------

def test_known_values(dtype):
    got = log_z([0.0, 1.0, 2.0, np.inf], dtype)
    tol = {"float32": 3e-7, "float64": 1e-9}[dtype]
    np.testing.assert_allclose(got, [LOG_Z_0, LOG_Z_1, LOG_Z_2, 0.7052602544175697], rtol=0, atol=tol)
    # The value quoted by Barron's reference, 0.70526025442689566, is 9e-12 off (mpmath, 30 digits, agrees
    # with ours); well within the table's tolerance.
    assert abs(got[3] - 0.70526025442689566) < TABLE_TOL
    assert math.exp(got[0]) == pytest.approx(math.pi * math.sqrt(2), rel=5 * tol)
    assert math.exp(got[2]) == pytest.approx(math.sqrt(2 * math.pi), rel=5 * tol)


def _off_grid_alphas() -> list[float]:
    rng = np.random.default_rng(7)
    return sorted(
        list(rng.uniform(0.0, 4.0, 30))
        + list(np.exp(rng.uniform(math.log(1e-8), math.log(1e6), 20)))
        + [1e-8, 1e-4, 2.5e-3, 1e-2, 1.99, 1.999999, 2.000001, 2.01, 3.7, 1e3, 1e6]
    )


def test_matches_independent_quadrature_off_grid(dtype):
    alphas = _off_grid_alphas()
    want = np.array([log_z_quad(float(np.asarray(a, dtype))) for a in alphas])
    got = log_z(alphas, dtype)
    err = np.abs(got - want)
    # float32 adds its own rounding of alpha, t and log Z (about 5 ulp of log Z).
    tol = {"float32": 2e-6, "float64": TABLE_TOL}[dtype]
    assert err.max() <= tol, f"max |error| {err.max():.3g} at alpha={alphas[int(np.argmax(err))]}"


def test_matches_mpmath_at_a_few_points():
    with mp.workdps(25):  # local precision: other modules rely on their own global setting
        for alpha in (0.3, 1.5, 3.0):
            a = mp.mpf(alpha)
            b = abs(a - 2)

            def density(x: Any) -> Any:
                return mp.exp(-(b / a) * (mp.power(x * x / b + 1, a / 2) - 1))

            want = mp.log(2 * mp.quad(density, [0, 1, 10, 100, mp.inf]))
            assert log_z([alpha])[0] == pytest.approx(float(want), abs=TABLE_TOL)


def test_alpha_below_zero_is_infinite_and_nan_stays_nan():
    got = log_z([-0.5, -math.inf, math.nan, 0.0])
    assert got[0] == math.inf and got[1] == math.inf and math.isnan(got[2]) and got[3] == pytest.approx(LOG_Z_0)


# ---- derivative -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.05, 0.3, 1.0, 1.5, 1.9, 1.999, 2.001, 2.1, 3.0, 6.0, 50.0])
def test_derivative_matches_quadrature(alpha, grad, x64):
    h = 1e-5 if abs(alpha - 2) > 0.01 else 1e-7
    want = (log_z_quad(alpha + h) - log_z_quad(alpha - h)) / (2 * h)
    _, got = grad(lambda a: log_partition(a), np.array([alpha]))
    assert got[0] == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_derivative_diverges_like_log_at_two_and_is_finite_everywhere(grad, x64):
    alphas = np.array([0.0, 1e-9, 2.0 - 1e-6, 2.0 - 1e-9, 2.0, 2.0 + 1e-9, 2.0 + 1e-6, 7.0, 1e30, np.inf, -1.0])
    _, slopes = grad(lambda a: log_partition(a), alphas)
    assert np.all(np.isfinite(slopes))
    # d log Z / d alpha = log|alpha - 2| / 4 + O(1) near 2: three decades closer, 3 log(10) / 4 steeper.
    assert slopes[3] - slopes[2] == pytest.approx(-0.75 * math.log(10), abs=0.01)
    assert slopes[5] - slopes[6] == pytest.approx(-0.75 * math.log(10), abs=0.01)
    assert slopes[4] < slopes[3] < 0  # at 2 itself: as at 1e-10 from it, the floor of |alpha - 2|
    assert slopes[9] == 0.0 and slopes[10] == 0.0


def test_spline_is_continuous_with_a_continuous_derivative_across_nodes(grad, x64):
    nodes = np.load(_table_path())["alpha"]
    picked = nodes[[5, 100, 300, 550, 650, 900, 1100, 1180]]
    for node in picked:
        eps = 1e-9 * max(node, 1.0)
        values = log_z([node - eps, node + eps])
        _, slopes = grad(lambda a: log_partition(a), np.array([node - eps, node + eps]))
        assert slopes[0] == pytest.approx(slopes[1], rel=1e-5, abs=1e-12), node
        assert values[1] - values[0] == pytest.approx(2 * eps * slopes[0], rel=1e-3, abs=1e-14), node


def _table_path() -> Any:
    from importlib import resources

    return resources.files("aloss_tune.losses").joinpath("data", "log_partition.npz")


def test_table_metadata():
    with np.load(_table_path()) as data:
        assert data["values"].shape == data["slopes"].shape == data["alpha"].shape == (1201,)
        assert data["alpha"][0] == 0.0 and data["alpha"][600] == 2.0 and np.isinf(data["alpha"][-1])
        assert float(data["max_abs_error"]) <= TABLE_TOL


# ---- NLL and density ------------------------------------------------------------------------------------------

@functools.cache
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


@pytest.mark.parametrize("scale", [0.3, 2.5])
@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.5, 1.0, 1.999, 2.0, 3.0, 10.0, math.inf])
def test_density_integrates_to_one(alpha, scale, dtype):
    # x = sqrt(2) c tan(theta) turns the Cauchy-heavy tails into a smooth integrand on (-pi/2, pi/2).
    nodes, weights = _gauss_legendre(1000)
    theta = nodes * math.pi / 2
    x = math.sqrt(2) * scale * np.tan(theta)
    jacobian = math.sqrt(2) * scale / np.cos(theta) ** 2 * math.pi / 2
    nll = np.asarray(ops.convert_to_numpy(robust_nll(x.astype(dtype), alpha, scale)), dtype=np.float64)
    total = float(np.sum(weights * jacobian * np.exp(-nll)))
    assert total == pytest.approx(1.0, abs={"float32": 2e-6, "float64": 1e-7}[dtype])


def test_nll_is_rho_plus_log_scale_plus_log_z_per_dimension(rng, x64):
    x = rng.standard_cauchy((5, 3))
    alpha = np.array([0.2, 1.0, 1.8])
    scale = np.array([0.5, 1.0, 3.0])
    got = np.asarray(ops.convert_to_numpy(robust_nll(x, alpha, scale)))
    want = np.stack(
        [rho_ref(x[:, j] / scale[j], alpha[j]) + math.log(scale[j]) + log_z_quad(alpha[j]) for j in range(3)], 1
    )
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=TABLE_TOL)
    # Scalars give the same as tensors.
    scalar = np.asarray(ops.convert_to_numpy(robust_nll(x[:, 1], 1.0, 1.0)))
    np.testing.assert_allclose(scalar, got[:, 1], rtol=1e-12)


def test_nll_can_be_negative_and_invalid_scalars_are_rejected():
    # A density above 1 (small scale) has a negative log-likelihood: expected, not a bug.
    value = float(ops.convert_to_numpy(robust_nll(np.array([0.0], "float32"), 1.0, 0.01))[0])
    assert value == pytest.approx(math.log(0.01) + LOG_Z_1, abs=1e-6) and value < 0
    with pytest.raises(ConfigError, match="alpha"):
        robust_nll(np.zeros(2, "float32"), -1.0, 1.0)
    with pytest.raises(ConfigError, match="scale"):
        robust_nll(np.zeros(2, "float32"), 1.0, 0.0)
    with pytest.raises(ConfigError, match="alpha"):
        log_partition(math.nan)


# ---- sampling ---------------------------------------------------------------------------------------------

def test_samples_match_cauchy_at_zero_normal_at_two_and_the_density_at_one():
    n = 20000
    cauchy = robust_sample(0.0, 0.7, n, seed=1)
    assert stats.kstest(cauchy, stats.cauchy(scale=0.7 * math.sqrt(2)).cdf).pvalue > 1e-3
    normal = robust_sample(2.0, 1.5, n, seed=2)
    assert stats.kstest(normal, stats.norm(scale=1.5).cdf).pvalue > 1e-3

    # alpha = 1: the CDF by integrating exp(-rho(x, 1, 1)) / Z(1) numerically.
    def cdf(points: np.ndarray) -> np.ndarray:
        grid = np.linspace(0.0, 60.0, 60001)
        pdf = np.exp(-rho_ref(grid, 1.0) - LOG_Z_1)
        half = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
        inner = np.interp(np.abs(points), grid, half)
        return 0.5 + np.sign(points) * inner

    pseudo_huber = robust_sample(1.0, 1.0, n, seed=3)
    assert stats.kstest(pseudo_huber, cdf).pvalue > 1e-3


def test_sampler_shapes_seeds_and_validation():
    a = robust_sample(0.5, 2.0, (3, 4), seed=5)
    assert a.shape == (3, 4) and a.dtype == np.float64
    np.testing.assert_array_equal(a, robust_sample(0.5, 2.0, (3, 4), seed=5))
    assert robust_sample(math.inf, 1.0, 1000, seed=0).std() < 1.0  # lighter than normal tails
    for kwargs in ({"alpha": -1.0}, {"alpha": 1.0, "scale": 0.0}, {"alpha": 1.0, "size": -3}):
        with pytest.raises(ConfigError):
            robust_sample(**kwargs)
