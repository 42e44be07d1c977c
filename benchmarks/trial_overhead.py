"""What aloss-tune adds to a study's wall time, against a hand-written bare Optuna loop.

Both train the same MLP on the same data (the built-in contaminated regression set) for the same epochs
with the same seeds and loss (MSE). aloss-tune runs with everything on: SQLite Optuna storage, MLflow
tracking on SQLite (params at start, one batch of metrics per epoch, loss config, parent run, statuses),
the reporting callback and a median pruner (with ``n_startup_trials`` above the trial count, so it is
consulted every epoch but prunes nothing and both sides train the same number of epochs). The bare loop
uses an in-memory study and ``model.fit`` with no callbacks; a third arm adds to it what Optuna itself costs
for the same features (a SQLite storage and a median pruner asked every epoch), so the last ratio is what
aloss-tune adds on top of Optuna (tracking, reports, checks). Runs alternate (ours, bare, bare + pruner,
ours, ...) so background load hits all alike; the figures are ratios of the medians.

A warm-up run first imports MLflow and creates the MLflow store (a one-time cost per process and per
store, printed separately); the timed runs then add studies to that existing store, as a user's second and
later studies do.

    python benchmarks/trial_overhead.py [--trials 6] [--epochs 20] [--repeats 3]

Target: overhead <= 3% of wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import optuna  # noqa: E402

import aloss_tune  # noqa: E402
from aloss_tune.datasets import contaminated_regression  # noqa: E402
from aloss_tune.models import mlp  # noqa: E402

UNITS, LAYERS, BATCH = 32, 2, 32


def space(trials: int, epochs: int) -> dict:
    return {
        "study": "overhead",
        "data": "contaminated_regression",
        "model": {"builder": "mlp", "params": {"units": UNITS, "layers": LAYERS,
                                               "dropout": {"type": "float", "low": 0.0, "high": 0.2}}},
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "objective": {"metric": "val_mae", "direction": "minimize"},
        "training": {"epochs": epochs, "batch_size": BATCH, "stop_dead": False},  # every trial the same length
        "loss": ["mse"],
        "search": {"sampler": "random", "pruner": {"name": "median", "n_startup_trials": trials + 1},
                   "n_trials": trials, "seed": 0},
    }


def ours(trials: int, epochs: int, folder: str, run: int) -> float:
    start = time.perf_counter()
    aloss_tune.tune(space(trials, epochs), storage=f"sqlite:///{folder}/optuna.db",
                    tracking_uri=f"sqlite:///{folder}/mlflow.db", study_name=f"overhead{run}")
    return time.perf_counter() - start


def bare(trials: int, epochs: int, storage: str | None = None, run: int = 0) -> float:
    """The hand-written loop; with ``storage``, it also reports every epoch to a median pruner on that
    storage (the Optuna features a study through aloss-tune uses), still without tracking."""
    data = contaminated_regression()
    start = time.perf_counter()

    class Report(keras.callbacks.Callback):
        def __init__(self, trial: optuna.Trial):
            super().__init__()
            self.trial = trial

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.trial.report(logs["val_mae"], epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned()

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        keras.utils.set_random_seed(trial.number)
        dropout = trial.suggest_float("dropout", 0.0, 0.2)
        model = mlp({"model.units": UNITS, "model.layers": LAYERS, "model.dropout": dropout}, data)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
        history = model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                            epochs=epochs, batch_size=BATCH, verbose=0,
                            callbacks=[Report(trial)] if storage else [])
        return min(history.history["val_mae"])

    if storage:
        study = optuna.create_study(storage=storage, study_name=f"pruned{run}",
                                    sampler=optuna.samplers.RandomSampler(seed=0),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=trials + 1))
    else:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bare(1, 1)  # warm up TensorFlow once for both
    a, b, c = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        startup = ours(1, 1, folder, -1) - bare(1, 1)
        print(f"one-time start-up (import MLflow, create its store): {startup:.2f} s")
        for run in range(args.repeats):
            a.append(ours(args.trials, args.epochs, folder, run))
            b.append(bare(args.trials, args.epochs))
            c.append(bare(args.trials, args.epochs, f"sqlite:///{folder}/bare.db", run))
            print(f"run {run}: aloss-tune {a[-1]:.2f} s, bare optuna {b[-1]:.2f} s, "
                  f"bare optuna + SQLite + pruner {c[-1]:.2f} s", flush=True)
    ma, mb, mc = statistics.median(a), statistics.median(b), statistics.median(c)
    print(f"\n{args.trials} trials x {args.epochs} epochs, median of {args.repeats}:")
    print(f"  aloss-tune (tracking + pruning)     {ma:8.2f} s")
    print(f"  bare Optuna loop                    {mb:8.2f} s")
    print(f"  bare Optuna + SQLite + pruner       {mc:8.2f} s")
    print(f"  overhead vs bare                    {100 * (ma / mb - 1):+7.1f} %  (target <= 3 %)")
    print(f"  overhead vs bare + SQLite + pruner  {100 * (ma / mc - 1):+7.1f} %  (tracking, reports, checks)")


if __name__ == "__main__":
    main()
