"""Label-noise losses at their published settings on MNIST-1D, against cross-entropy.

The protocol of the label-noise literature (Ma et al. 2020; Wang et al. 2019; Ye et al. 2023): one fixed
model and optimiser for every loss, training labels with symmetric or asymmetric noise, no early stopping,
and the **last epoch's** clean-test accuracy (a loss that memorises the noise is not rescued by a lucky
epoch). Here the model is aloss-tune's built-in MLP (2 x 256 ReLU units) on the built-in ``mnist1d`` data
(10,000 signals, generated offline), Adam at 1e-3 for 60 epochs, batch 128, 3 seeds (each seed changes the
data, the noise and the initialisation).

Losses, at the settings their papers use on MNIST (the dataset nearest to MNIST-1D):

* ``CE``; ``GCE`` q = 0.7 (Zhang & Sabuncu 2018); ``SCE`` alpha = 0.01, beta = 1, A = -4 (Wang et al.
  2019, MNIST); ``NCE+RCE``, ``NCE+MAE``, ``NGCE+MAE`` (q = 0.1), ``NFL+RCE`` (gamma = 0.5), all alpha = 1,
  beta = 10 on MNIST (Ma et al. 2020, their configs); ``ANL-CE`` = NCE + NNCE, alpha = 1, beta = 1 and the
  L1 weight penalty 1e-6 (Ye et al. 2023, their MNIST config); bootstrapping soft beta = 0.95 and hard
  beta = 0.8 (Reed et al. 2015).

    .venv/bin/python benchmarks/label_noise.py                     # 3 noise settings x 3 seeds
    .venv/bin/python benchmarks/label_noise.py --noise sym0.8 --seeds 0 --epochs 20   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

NOISE = {
    "sym0.6": {"kind": "symmetric", "rate": 0.6},
    "sym0.8": {"kind": "symmetric", "rate": 0.8},
    "asym0.4": {"kind": "asymmetric", "rate": 0.4},
}

LOSSES: dict[str, dict[str, Any]] = {
    "CE": {"loss": "cce"},
    "GCE": {"loss": "gce", "loss.q": 0.7},
    "SCE": {"loss": "sce", "loss.alpha": 0.01, "loss.beta": 1.0},
    "NCE+RCE": {"loss": "active_passive", "loss.active": "nce", "loss.passive": "rce",
                "loss.alpha": 1.0, "loss.beta": 10.0},
    "NCE+MAE": {"loss": "active_passive", "loss.active": "nce", "loss.passive": "mae",
                "loss.alpha": 1.0, "loss.beta": 10.0},
    "NGCE+MAE": {"loss": "active_passive", "loss.active": "ngce", "loss.passive": "mae", "loss.q": 0.1,
                 "loss.alpha": 1.0, "loss.beta": 10.0},
    "NFL+RCE": {"loss": "active_passive", "loss.active": "nfocal", "loss.passive": "rce", "loss.gamma": 0.5,
                "loss.alpha": 1.0, "loss.beta": 10.0},
    "ANL-CE": {"loss": "active_passive", "loss.active": "nce", "loss.passive": "nnce",
               "loss.alpha": 1.0, "loss.beta": 1.0, "loss.l1": 1e-6},
    "Bootstrap soft": {"loss": "bootstrap", "loss.target": "soft", "loss.beta": 0.95},
    "Bootstrap hard": {"loss": "bootstrap", "loss.target": "hard", "loss.beta": 0.8},
}

UNITS, LAYERS = 256, 2


def run_one(params: dict[str, Any], data: Any, *, epochs: int, seed: int, batch_size: int) -> tuple[float, float]:
    """Last-epoch clean-test accuracy and the seconds it took to train."""
    import keras
    import numpy as np

    import aloss_tune
    from aloss_tune.models import mlp

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    loss = aloss_tune.build_loss(params)
    model = aloss_tune.attach(mlp({"model.units": UNITS, "model.layers": LAYERS}, data), loss)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    started = time.perf_counter()
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - started
    predicted = np.argmax(model.predict(data.x_test, verbose=0), axis=-1)
    return float(np.mean(predicted == np.argmax(data.y_test, axis=-1))), seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--noise", nargs="+", choices=list(NOISE), default=list(NOISE))
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=10000, help="MNIST-1D signals in all (60%% train)")
    args = parser.parse_args(argv)

    from aloss_tune.datasets import as_dataset

    scores: dict[tuple[str, str], list[float]] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        for noise in args.noise:
            data = as_dataset("mnist1d", args={"seed": seed, "n_samples": args.samples,
                                               "label_noise": {**NOISE[noise], "seed": seed}})
            for name in args.losses:
                accuracy, seconds = run_one(LOSSES[name], data, epochs=args.epochs, seed=seed,
                                            batch_size=args.batch_size)
                scores.setdefault((noise, name), []).append(accuracy)
                print(f"[{time.perf_counter() - started:6.0f}s] seed {seed} {noise} {name}: "
                      f"{100 * accuracy:.1f} % ({seconds:.0f} s)", flush=True)
    print(f"\nMNIST-1D ({args.samples} signals), MLP {LAYERS} x {UNITS}, Adam 1e-3, {args.epochs} epochs, "
          f"last-epoch clean-test accuracy (%), mean ± std over seeds {', '.join(map(str, args.seeds))}:\n")
    print("| loss | " + " | ".join(args.noise) + " |")
    print("|---|" + "---:|" * len(args.noise))
    for name in args.losses:
        cells = []
        for noise in args.noise:
            values = [100 * v for v in scores[(noise, name)]]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.1f} ± {std:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n{(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
