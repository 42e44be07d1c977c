"""What aloss-tune adds to a study's wall time, against hand-written Optuna loops training the same models.

Every arm trains the same MLP on the same data (the built-in contaminated regression set) for the same epochs,
with the same loss (MSE), the same metrics (MAE, RMSE and MSE: the ones aloss-tune logs for a regression),
the same random sampler and the same median pruner settings: started after ``trials + 1`` complete trials, so
that it is asked but prunes nothing and every arm trains every epoch, with aloss-tune's warm-up (a quarter of
the epochs).

* **aloss-tune**: everything on: SQLite Optuna storage, MLflow tracking on SQLite (params at start, one batch
  of metrics per epoch, the loss config, the parent run and its best-so-far after every trial, statuses), the
  reporting callback, the family-aware median pruner, the up-front model check, the first round of trials and
  the end-of-study report. One default is turned off: ``training.stop_dead``, which stops a trial that is not
  learning, so that every arm trains every epoch of every trial (it saves time; it costs none).
* **bare**: ``model.fit`` with no callbacks in an in-memory study.
* **bare + SQLite + pruner**: what Optuna itself costs for the same features: a SQLite storage (Optuna's
  defaults) and ``MedianPruner`` asked every epoch, as its documentation's loops do.
* **bare + SQLite (WAL) + pruner**: the same on a SQLite file in write-ahead-log mode with
  ``synchronous=NORMAL``, as aloss-tune opens its stores: what aloss-tune adds on top of Optuna with the same
  storage settings.

Runs alternate (one of each arm per round) so that background load hits all alike; the figures are ratios of
the medians. A last, instrumented aloss-tune study (3 trials) gives the per-epoch cost of aloss-tune itself: the
time of its epoch callback on the training thread without Optuna's own ``trial.report`` and ``should_prune``
(which the bare + SQLite loops pay too), and the CPU time of its background tracking thread.

A warm-up first imports TensorFlow, MLflow and the report's libraries and creates the MLflow store (a one-time
cost per process and per store, printed separately); the timed runs then add studies to that existing store,
as a user's second and later studies do.

    python benchmarks/trial_overhead.py [--trials 6] [--epochs 20] [--repeats 3]

Targets: at most 3 % against bare + SQLite + pruner, at most 5 % against bare, at most 1 ms an epoch of
aloss-tune's own.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import optuna  # noqa: E402

import aloss_tune  # noqa: E402
from aloss_tune import runner, tracking  # noqa: E402
from aloss_tune._sqlite import use_wal  # noqa: E402
from aloss_tune.backends.pruning import default_warmup  # noqa: E402
from aloss_tune.datasets import contaminated_regression  # noqa: E402
from aloss_tune.models import mlp  # noqa: E402

UNITS, LAYERS, BATCH = 32, 2, 32
ARMS = ("aloss-tune", "bare", "bare + SQLite + pruner", "bare + SQLite (WAL) + pruner")


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
                    tracking_uri=f"sqlite:///{folder}/mlflow.db", study_name=f"overhead{run}", progress=False)
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
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse",
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae"),
                               keras.metrics.RootMeanSquaredError(name="rmse"),
                               keras.metrics.MeanSquaredError(name="mse")])
        history = model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                            epochs=epochs, batch_size=BATCH, verbose=0,
                            callbacks=[Report(trial)] if storage else [])
        return min(history.history["val_mae"])

    if storage:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=trials + 1, n_warmup_steps=default_warmup(epochs))
        study = optuna.create_study(storage=storage, study_name=f"pruned{run}",
                                    sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner)
    else:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start


def epoch_cost(folder: str, epochs: int, trials: int = 3) -> dict[str, tuple[float, float]]:
    """``{part: (wall ms, CPU ms of its thread) per epoch}`` of an instrumented aloss-tune study."""
    spent: dict[str, list[float]] = {}

    def timed(owner: Any, name: str, part: str) -> Callable[[], None]:
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                total = spent.setdefault(part, [0.0, 0.0])
                total[0] += time.perf_counter() - wall
                total[1] += time.thread_time() - cpu

        setattr(owner, name, wrapper)
        return lambda: setattr(owner, name, original)

    undo = [timed(runner.EpochReporter, "on_epoch_end", "callback"), timed(optuna.Trial, "report", "report"),
            timed(optuna.Trial, "should_prune", "should_prune"), timed(tracking._Sender, "_call", "sender")]
    try:
        ours(trials, epochs, folder, -2)
    finally:
        for restore in undo:
            restore()
    n = trials * epochs
    own = [spent["callback"][i] - spent["report"][i] - spent.get("should_prune", [0.0, 0.0])[i] for i in (0, 1)]
    return {"aloss-tune's epoch callback, without Optuna's report and should_prune": (1e3 * own[0] / n,
                                                                                       1e3 * own[1] / n),
            "Optuna's trial.report + should_prune (paid by the bare SQLite arms too)":
                tuple(1e3 * (spent["report"][i] + spent.get("should_prune", [0.0, 0.0])[i]) / n for i in (0, 1)),
            "background tracking thread (MLflow calls)": (1e3 * spent["sender"][0] / n, 1e3 * spent["sender"][1] / n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bare(1, 1)  # warm up TensorFlow once for all
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        startup = ours(1, 1, folder, -1) - bare(1, 1)
        print(f"one-time start-up (import MLflow and the report's libraries, create the MLflow store): "
              f"{startup:.2f} s", flush=True)
        use_wal(f"sqlite:///{folder}/bare_wal.db")
        for run in range(args.repeats):
            times["aloss-tune"].append(ours(args.trials, args.epochs, folder, run))
            times["bare"].append(bare(args.trials, args.epochs))
            times["bare + SQLite + pruner"].append(bare(args.trials, args.epochs, f"sqlite:///{folder}/bare.db", run))
            times["bare + SQLite (WAL) + pruner"].append(
                bare(args.trials, args.epochs, f"sqlite:///{folder}/bare_wal.db", run))
            print(f"run {run}: " + ", ".join(f"{arm} {times[arm][-1]:.2f} s" for arm in ARMS), flush=True)
        per_epoch = epoch_cost(folder, args.epochs)
    after = os.getloadavg()
    medians = {arm: statistics.median(values) for arm, values in times.items()}
    ours_s = medians["aloss-tune"]
    print(f"\n{args.trials} trials x {args.epochs} epochs, median of {args.repeats} (load average {load[0]:.1f} "
          f"before, {after[0]:.1f} after, {os.cpu_count()} CPUs):")
    for arm in ARMS:
        line = f"  {arm:<32} {medians[arm]:8.2f} s"
        if arm != "aloss-tune":
            line += f"   aloss-tune {100 * (ours_s / medians[arm] - 1):+6.1f} %"
        print(line)
    print("  targets: <= +3 % against bare + SQLite + pruner, <= +5 % against bare")
    print("\nper epoch (ms, wall and CPU of its thread; target <= 1 ms for aloss-tune's own):")
    for part, (wall, cpu) in per_epoch.items():
        print(f"  {part:<74} {wall:6.2f} {cpu:6.2f}")


if __name__ == "__main__":
    main()
