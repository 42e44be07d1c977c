"""Trials per hour with 1, 2 (and more) local worker processes sharing one study.

Every side runs the same study through `aloss_tune.workers.run_workers` (so all pay the same start-up: fresh
worker interpreters, study and parent run set-up): the built-in contaminated regression data, a 2 x 32 MLP,
a fixed number of epochs, random sampling, no pruning (so every trial does the same work), everything on:
Optuna storage and MLflow tracking (temporary SQLite files unless ``--storage`` / ``--tracking-uri`` name
servers). Runs alternate (1 worker, 2 workers, 1, 2, ...) so background load hits all alike; figures are
medians.

Per run:

* wall: trials / wall time of the whole command (start-up, set-up and the last straggler included);
* steady: trials / (end of the last trial - start of the first), from the storage's timestamps;
* CPU: the CPU seconds the workers used per trial, and the cores they kept busy on average (CPU time /
  wall time). Equal CPU per trial on both sides means the workers do not thrash; on a machine shared with
  other jobs, the cores the workers can get (not the code) cap the speed-up: compare the cores busy, and
  the load average printed before and after each run.

``--reference`` also times the machine's own ceiling: the same model fitted with bare Keras (no Optuna, no
MLflow, no aloss-tune) in 1, 2, ... independent processes, as fits per hour.

    python benchmarks/parallel.py [--workers 1 2] [--trials 16] [--epochs 30] [--repeats 2] [--threads N]
                                  [--reference] [--storage postgresql+psycopg2://...] [--tracking-uri http://...]

``--threads`` overrides the threads per worker (default: CPUs // workers) to compare with uncapped workers.
Target on a 2-core machine: >= 1.8x the trials per hour with 2 workers.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
import uuid

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import optuna  # noqa: E402

from aloss_tune.workers import available_cpus, limit_threads, run_workers  # noqa: E402

UNITS, LAYERS, BATCH = 32, 2, 32


def space(epochs: int) -> dict:
    return {
        "study": "parallel",
        "data": "contaminated_regression",
        "model": {"builder": "mlp", "params": {"units": UNITS, "layers": LAYERS}},
        "optimizer": {"name": "adam",
                      "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "objective": {"metric": "val_mae", "direction": "minimize"},
        "training": {"epochs": epochs, "batch_size": BATCH, "stop_dead": False},  # every trial the same length
        "loss": ["mse", "huber"],
        "search": {"sampler": "random", "pruner": "none", "seed": 0},
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(workers: int, args: argparse.Namespace, folder: str) -> tuple[float, float, float, float]:
    """``(wall, steady)`` trials per hour, CPU seconds per trial and busy cores of one run."""
    name = f"parallel-{workers}w-{uuid.uuid4().hex[:6]}"
    storage = args.storage or f"sqlite:///{folder}/{name}.db"
    tracking = args.tracking_uri or f"sqlite:///{folder}/mlflow.db"
    start, cpu = time.perf_counter(), _children_cpu()
    result = run_workers(space(args.epochs), workers, n_trials=args.trials, storage=storage, study_name=name,
                         tracking_uri=tracking, threads=args.threads)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    trials = [t for t in result.study.get_trials(deepcopy=False) if t.state.is_finished()]
    finished = result.counts["complete"] + result.counts["dead"]
    assert len(trials) == args.trials and finished == args.trials, result.counts
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return 3600 * args.trials / wall, 3600 * args.trials / span, cpu / args.trials, cpu / wall


def _bare_fits(threads: int, epochs: int, fits: int, out: multiprocessing.Queue) -> None:
    """In a fresh process: ``fits`` bare Keras fits of the benchmark's model; reports seconds per fit."""
    limit_threads(threads)
    from aloss_tune._quiet import import_keras_quietly

    import_keras_quietly()
    import keras

    from aloss_tune.datasets import contaminated_regression
    from aloss_tune.models import mlp

    data = contaminated_regression()

    def fit() -> None:
        keras.backend.clear_session()
        model = mlp({"model.units": UNITS, "model.layers": LAYERS}, data)
        model.compile(optimizer="adam", loss="mse", metrics=["mae"])
        model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), epochs=epochs,
                  batch_size=BATCH, verbose=0)

    fit()  # tracing and first-call costs, like a worker's start-up
    start = time.perf_counter()
    for _ in range(fits):
        fit()
    out.put((time.perf_counter() - start) / fits)


def reference(processes: int, args: argparse.Namespace) -> float:
    """Bare Keras fits per hour with ``processes`` independent processes (no coordination at all)."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    threads = args.threads or max(1, available_cpus() // processes)
    procs = [context.Process(target=_bare_fits, args=(threads, args.epochs, 4, out))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    seconds = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    return sum(3600 / s for s in seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="threads per worker (default: CPUs // workers)")
    parser.add_argument("--reference", action="store_true",
                        help="also time bare Keras in independent processes")
    parser.add_argument("--storage", help="an Optuna storage URL shared by the workers (default: SQLite)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite)")
    args = parser.parse_args()
    counts = sorted(set(args.workers) | {1})
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{available_cpus()} CPUs; {args.trials} trials x {args.epochs} epochs per run; "
          f"threads per worker: {args.threads or 'CPUs // workers'}")
    figures: dict[int, list[tuple[float, ...]]] = {n: [] for n in counts}
    bare: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.repeats):
            for workers in counts:
                load = os.getloadavg()[0]
                figures[workers].append(one_run(workers, args, folder))
                print(f"run {run}, {workers} worker(s): " + _row(figures[workers][-1])
                      + f"  (load before {load:.1f}, after {os.getloadavg()[0]:.1f})", flush=True)
                if args.reference:
                    bare[workers].append(reference(workers, args))
                    print(f"run {run}, bare Keras in {workers} process(es): {bare[workers][-1]:6.0f} fits/h",
                          flush=True)
    print(f"\nmedian of {args.repeats}:")
    medians = {w: tuple(statistics.median(f[i] for f in runs) for i in range(4))
               for w, runs in figures.items()}
    for workers, row in medians.items():
        print(f"  {workers} worker(s): " + _row(row))
    for workers in counts[1:]:
        line = (f"  speed-up with {workers}: {medians[workers][0] / medians[1][0]:.2f}x wall, "
                f"{medians[workers][1] / medians[1][1]:.2f}x steady")
        if args.reference:
            ratio = statistics.median(bare[workers]) / statistics.median(bare[1])
            line += f"; bare Keras in {workers} processes: {ratio:.2f}x"
        print(line + ("  (target >= 1.8x)" if workers == 2 else ""))


def _row(row: tuple[float, ...]) -> str:
    wall, steady, cpu_per_trial, cores = row
    return (f"{wall:6.0f} trials/h wall, {steady:6.0f} trials/h steady, {cpu_per_trial:5.2f} CPU s/trial, "
            f"{cores:4.2f} cores busy")


if __name__ == "__main__":
    main()
