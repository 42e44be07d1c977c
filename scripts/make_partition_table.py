"""Tabulate the log-partition function of Barron's robust distribution.

``Z(alpha) = integral over the real line of exp(-rho(x, alpha, 1)) dx`` for ``alpha`` in ``[0, +inf]``. This
script integrates ``log Z`` and its derivative numerically (``scipy.integrate.quad``, tails mapped with
``x = 1 / t``) on a grid, and writes ``aloss_tune/losses/data/log_partition.npz``, which
`aloss_tune.losses.log_partition` interpolates at run time with a cubic Hermite spline in `keras.ops`.

Coordinates. ``log Z`` has a vertical tangent at ``alpha = 2``: with ``d = alpha - 2``,
``log Z(2 + d) = log Z(2) + (d / 4) log|d| + O(d)``. The table therefore holds the remainder

    g(alpha) = log Z(alpha) - S(d),    S(d) = -(d / 8) * log1p(1 / d^2)   (= (d / 4) log|d| + O(d^3) near 0,
                                                                           -> 0 as |d| -> inf)

as a function of ``t = q / (k + q)`` with ``q = sign(d) * |d|^(1/3)`` and ``k = 2 * 2^(1/3)``: ``alpha = 0``
maps to ``t = -1``, ``alpha = 2`` to ``t = 0`` (a node) and ``alpha = +inf`` to ``t = 1`` (a node). In ``t``
the remainder is smooth: ``g(2) + g'(2) q^3 + O(q^6 log^2 q)`` near ``alpha = 2`` and a power series in
``1 / alpha`` at infinity. Near ``alpha = 0`` ``log Z`` is smooth but its derivatives grow quickly (the Cauchy
tails make the k-th one a moment of ``log(x)^(2k)``), so the map spends more nodes there
(``d alpha / d t`` is 3 at ``alpha = 0``, 27 at ``alpha = 4``).

Run from the repository root (takes about a minute on two cores)::

    python scripts/make_partition_table.py            # writes the table and prints its validation
    python scripts/make_partition_table.py --check    # validates the shipped table only
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import pathlib
import sys
import time
import warnings

import numpy as np
from scipy import integrate

OUT = pathlib.Path(__file__).resolve().parents[1] / "aloss_tune" / "losses" / "data" / "log_partition.npz"
CURVE_K = 2.0 * 2.0 ** (1.0 / 3.0)
T_START = -1.0
LOG_Z_0 = math.log(math.pi * math.sqrt(2.0))
LOG_Z_2 = 0.5 * math.log(2.0 * math.pi)
QUAD = {"epsabs": 1e-15, "epsrel": 1e-13, "limit": 400}


# ---- rho and d rho / d alpha in float64 ---------------------------------------------------------------------

def _exprel(u: float) -> float:
    if abs(u) < 0.5:
        term, total = 1.0, 1.0
        for k in range(1, 30):
            term *= u / (k + 1)
            total += term
        return total
    return math.expm1(u) / u


def _exprel_prime(u: float) -> float:
    if abs(u) < 0.5:
        total, power, fact = 0.0, 1.0, 1.0  # sum_{k>=1} k u^(k-1) / (k+1)!
        for k in range(1, 30):
            fact *= k + 1
            total += k * power / fact
            power *= u
        return total
    return (math.exp(u) * (u - 1.0) + 1.0) / (u * u)


def rho_dalpha(x: float, alpha: float) -> tuple[float, float]:
    """``rho(x, alpha, 1)`` and ``d rho / d alpha`` for ``alpha >= 0`` (``alpha != 2``), in float64.

    Near ``alpha = 2`` (``|alpha - 2| < 1``) the form ``rho = (z + (b + z) expm1(d L / 2)) / alpha`` with
    ``L = log1p(z / b)`` is free of cancellation; elsewhere ``rho = (b / 2) L exprel(alpha L / 2)``.
    """
    z = x * x
    if math.isinf(alpha):
        return (math.expm1(0.5 * z), 0.0) if z < 1400.0 else (math.inf, 0.0)
    d = alpha - 2.0
    b, s = abs(d), math.copysign(1.0, d)
    log_term = math.log1p(z / b)
    if b < 1.0:
        v = 0.5 * d * log_term
        if v > 700.0:
            return math.inf, 0.0
        ev = math.expm1(v)
        rho = (z + (b + z) * ev) / alpha
        drho = (s * ev + (b + z) * math.exp(v) * (0.5 * log_term - 0.5 * z / (b + z))) / alpha - rho / alpha
        return rho, drho
    u = 0.5 * alpha * log_term
    if u > 700.0:
        return math.inf, 0.0
    e, e1 = _exprel(u), _exprel_prime(u)
    rho = 0.5 * b * log_term * e
    dlog = -s * z / (b * (b + z))
    drho = 0.5 * s * (log_term - z / (b + z)) * e + 0.5 * b * log_term * e1 * (0.5 * log_term + 0.5 * alpha * dlog)
    return rho, drho


def _integrate(fn) -> float:
    """``2 * integral_0^inf fn(x) dx``, the tail mapped by ``x = 1 / t`` onto ``(0, 1]``.

    The requested tolerance sits at float64's round-off, so QUADPACK sometimes reports that it cannot be
    reached; its estimates are then about 1e-13, and the spline's check against fresh quadrature (and the
    tests' against mpmath) measures the actual error anyway.
    """

    def tail(t: float) -> float:
        return fn(1.0 / t) / (t * t) if t > 0.0 else 0.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        head = integrate.quad(fn, 0.0, 1.0, **QUAD)[0]
        rest = integrate.quad(tail, 0.0, 1.0, **QUAD)[0]
    return 2.0 * (head + rest)


def log_z_and_slope(alpha: float) -> tuple[float, float]:
    """``log Z(alpha)`` and ``d log Z / d alpha = -E[d rho / d alpha]`` by quadrature."""
    if alpha == 2.0:
        return LOG_Z_2, -math.inf

    def density(x: float) -> float:
        r = rho_dalpha(x, alpha)[0]
        return math.exp(-r) if r < 745.0 else 0.0

    def weighted(x: float) -> float:
        r, dr = rho_dalpha(x, alpha)
        return dr * math.exp(-r) if r < 745.0 else 0.0

    z = _integrate(density)
    return math.log(z), -_integrate(weighted) / z


# ---- the coordinates -----------------------------------------------------------------------------------------

def alpha_of_t(t: float) -> float:
    if t >= 1.0:
        return math.inf
    q = CURVE_K * t / (1.0 - t)
    return 0.0 if t <= T_START else 2.0 + q**3


def dalpha_dt(t: float) -> float:
    q = CURVE_K * t / (1.0 - t)
    return 3.0 * q * q * CURVE_K / (1.0 - t) ** 2


def t_of_alpha(alpha: float) -> float:
    if math.isinf(alpha):
        return 1.0
    d = alpha - 2.0
    q = math.copysign(abs(d) ** (1.0 / 3.0), d)
    return 1.0 - CURVE_K / (CURVE_K + q)


def singular_part(d: float) -> tuple[float, float]:
    """``S(d) = -(d / 8) log1p(1 / d^2)`` and ``S'(d)``; both 0 at ``d = +inf``."""
    if math.isinf(d):
        return 0.0, 0.0
    if d == 0.0:
        return 0.0, -math.inf
    inv = 1.0 / (d * d)
    return -d / 8.0 * math.log1p(inv), -math.log1p(inv) / 8.0 + 0.25 / (1.0 + d * d)


def node(t: float) -> tuple[float, float, float]:
    """``(alpha, g, dg/dt)`` at grid point ``t``."""
    alpha = alpha_of_t(t)
    if t == 0.0:
        return 2.0, LOG_Z_2, 0.0
    if math.isinf(alpha):
        log_z, _ = log_z_and_slope(math.inf)
        return alpha, log_z, 0.0
    log_z, slope = log_z_and_slope(alpha)
    s, s_prime = singular_part(alpha - 2.0)
    return alpha, log_z - s, (slope - s_prime) * dalpha_dt(t)


def log_z_at(alpha: float) -> float:
    return log_z_and_slope(alpha)[0]


# ---- the spline (the same arithmetic as aloss_tune.losses.partition, in numpy) -----------------------------

def spline(values: np.ndarray, slopes: np.ndarray, step: float, alpha: float) -> float:
    t = t_of_alpha(alpha)
    pos = (t - T_START) / step
    i = int(min(max(math.floor(pos), 0), len(values) - 2))
    s = pos - i
    h00, h10 = (1 + 2 * s) * (1 - s) ** 2, s * (1 - s) ** 2
    h01, h11 = s * s * (3 - 2 * s), s * s * (s - 1)
    g = h00 * values[i] + h10 * step * slopes[i] + h01 * values[i + 1] + h11 * step * slopes[i + 1]
    return g + singular_part(alpha - 2.0)[0]


def validation_alphas(step: float, n: int) -> list[float]:
    """Off-grid points: every interval's midpoint and quarter points, plus hand-picked values."""
    ts = T_START + step * (np.arange(n - 1)[:, None] + np.array([0.25, 0.5, 0.75])[None, :])
    picked = [1e-8, 1e-4, 1e-2, 0.5, 1.0, 1.5, 1.99, 1.999999, 2.000001, 2.01, 3.0, 4.0, 10.0, 1e3, 1e6]
    return [alpha_of_t(float(t)) for t in ts.ravel()] + picked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", type=int, default=1200, help="grid intervals (an even number)")
    parser.add_argument("--check", action="store_true", help="validate the shipped table, write nothing")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    start = time.time()
    with multiprocessing.Pool(args.processes) as pool:
        if args.check:
            data = np.load(OUT)
            values, slopes, step = data["values"], data["slopes"], float(data["t_step"])
        else:
            if args.intervals % 2:
                parser.error("--intervals must be even (so that alpha = 2 is a node)")
            step = (1.0 - T_START) / args.intervals
            ts = [T_START + i * step for i in range(args.intervals)] + [1.0]
            ts[args.intervals // 2] = 0.0
            nodes = pool.map(node, ts, chunksize=8)
            alphas = np.array([n[0] for n in nodes])
            values = np.array([n[1] for n in nodes])
            slopes = np.array([n[2] for n in nodes])
        checks = validation_alphas(step, len(values))
        reference = pool.map(log_z_at, checks, chunksize=8)
    errors = np.array([abs(spline(values, slopes, step, a) - r) for a, r in zip(checks, reference)])
    worst = int(np.argmax(errors))
    print(f"nodes: {len(values)}, step in t: {step:.6g}")
    log_z_0 = spline(values, slopes, step, 0.0)
    log_z_inf = spline(values, slopes, step, math.inf)
    print(f"log Z(0) = {log_z_0:.17g}  (exact {LOG_Z_0:.17g}, diff {log_z_0 - LOG_Z_0:.2e})")
    print(f"log Z(2) = {spline(values, slopes, step, 2.0):.17g}  (exact {LOG_Z_2:.17g})")
    print(f"log Z(inf) = {log_z_inf:.17g}  (Barron's value 0.70526025442689566)")
    print(f"max |spline - quadrature| over {len(checks)} off-grid alphas: {errors.max():.3e} "
          f"at alpha={checks[worst]:.6g}")
    print(f"took {time.time() - start:.1f} s")
    if not args.check:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            OUT,
            t_start=np.float64(T_START),
            t_step=np.float64(step),
            curve_k=np.float64(CURVE_K),
            values=values,
            slopes=slopes,
            alpha=alphas,
            max_abs_error=np.float64(errors.max()),
        )
        print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
