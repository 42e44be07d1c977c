"""The share of validation targets that `aloss_tune.runner.contaminated_share` counts as outlying, on the
built-in regression data, per seed: what the automatic objective (``val_median_ae`` above
`CONTAMINATED_SHARE`) decides for each. No training; a few seconds.

    python benchmarks/contamination.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.datasets import make_friedman1  # noqa: E402

from aloss_tune.datasets import Dataset, contaminated_regression, friedman_regression  # noqa: E402
from aloss_tune.runner import CONTAMINATED_MIN, CONTAMINATED_SHARE, contaminated_share  # noqa: E402


def gaussian_friedman(seed: int) -> Dataset:
    """scikit-learn's Friedman #1 with its own Gaussian noise (sd 1), split 60/20/20: a clean reference."""
    x, y = make_friedman1(n_samples=2000, noise=1.0, random_state=seed)
    n = len(y)
    a, b = int(0.6 * n), int(0.8 * n)
    return Dataset("friedman1", "regression", x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


CASES = {
    "contaminated_regression (20 % outliers)": lambda s: contaminated_regression(seed=s),
    "contaminated_regression, outlier_fraction 0": lambda s: contaminated_regression(seed=s, outlier_fraction=0.0),
    "friedman_regression, noise heavy_tailed": lambda s: friedman_regression(seed=s, noise="heavy_tailed"),
    "friedman_regression, noise proportional": lambda s: friedman_regression(seed=s, noise="proportional"),
    "friedman_regression, noise gross": lambda s: friedman_regression(seed=s, noise="gross"),
    "Friedman #1, Gaussian noise (scikit-learn)": gaussian_friedman,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    print(f"switch to val_median_ae above {CONTAMINATED_SHARE:.2%} (and at least {CONTAMINATED_MIN} residuals)")
    print(f"| data | {' | '.join(f'seed {s}' for s in args.seeds)} | objective |")
    print("|---|" + "---:|" * len(args.seeds) + "---|")
    for name, make in CASES.items():
        rows = [make(seed) for seed in args.seeds]
        shares = [contaminated_share(data) for data in rows]
        robust = [share > CONTAMINATED_SHARE and round(share * np.size(data.y_val)) >= CONTAMINATED_MIN
                  for share, data in zip(shares, rows, strict=True)]
        choice = "val_median_ae" if all(robust) else "val_mae" if not any(robust) else "mixed"
        print(f"| {name} | {' | '.join(f'{share:.2%}' for share in shares)} | {choice} |")


if __name__ == "__main__":
    main()
