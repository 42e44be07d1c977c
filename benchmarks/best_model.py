"""What logging the best trial's model (``--log-model``) costs, against retraining the best trial instead.

Trains the built-in MLP of ``search_spaces/robust_regression.yaml`` (contaminated regression, 40 epochs,
batch 32, no early stopping) with a few losses and the `BestEpoch` callback that every trial gets under
``--log-model``, timing the time spent inside the callback (on two shared cores the wall time of a fit
varies by more than the callback costs) and the ``save_weights`` of a trial that becomes a worker's best;
then, as a study's end does, rebuilds the best trial's model from its weights and logs it to a fresh SQLite
MLflow store (a LoggedModel, then again with a Model Registry version). The alternative, retraining the
best trial when the study ends, costs one more training of that trial: the "retrain" line.

    python benchmarks/best_model.py [--repeats 2] [--epochs 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PARAMS = [
    {"loss": "mse"},
    {"loss": "huber", "loss.delta": 20.0},
    {"loss": "barron", "loss.alpha": 0.5, "loss.scale": 20.0},
    {"loss": "adaptive_barron", "loss.l2": 1e-4},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()

    import aloss_tune  # noqa: F401
    from aloss_tune.best_model import BestEpoch, BestWeights, log_best_model
    from aloss_tune.runner import prepare, train
    from aloss_tune.space import SearchSpace
    from aloss_tune.tracking import StudyTracker, TrackingSettings

    space = SearchSpace.from_dict({
        "study": "best_model_cost", "data": "contaminated_regression",
        "model": {"builder": "mlp", "params": {"units": 64, "layers": 2}},
        "training": {"epochs": args.epochs, "batch_size": 32}, "loss": [p["loss"] for p in PARAMS],
    })
    ctx = prepare(space)
    keeper = BestWeights(ctx.objective.metric, ctx.objective.direction)

    class TimedBestEpoch(BestEpoch):
        spent = 0.0

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            super().on_epoch_end(epoch, logs)
            TimedBestEpoch.spent += time.perf_counter() - started

        def on_train_end(self, logs=None):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            super().on_train_end(logs)
            TimedBestEpoch.spent += time.perf_counter() - started

    fits, callback, saves = [], [], []
    best: tuple[float, dict, int] | None = None
    for repeat in range(args.repeats):
        for number, loss_params in enumerate(PARAMS):
            params = {**loss_params, "model.units": 64, "model.layers": 2, "optimizer.learning_rate": 3e-3}
            TimedBestEpoch.spent = 0.0
            started = time.perf_counter()
            model, outcome = train(ctx, params, seed=number,
                                   callbacks=[TimedBestEpoch(ctx.objective.metric, ctx.objective.direction)])
            fits.append(time.perf_counter() - started)
            callback.append(TimedBestEpoch.spent)
            started = time.perf_counter()
            model.save_weights(str(keeper.folder / "timing.weights.h5"))
            saves.append(time.perf_counter() - started)
            keeper.offer(number, outcome.value, params, model, None)
            if best is None or outcome.value < best[0]:
                best = (outcome.value, params, number)
            print(f"repeat {repeat} {params['loss']:<16} fit {fits[-1]:6.2f} s   in BestEpoch "
                  f"{1000 * callback[-1]:6.1f} ms   save_weights {1000 * saves[-1]:6.1f} ms", flush=True)
    assert best is not None
    started = time.perf_counter()
    train(ctx, best[1], seed=best[2])
    retrain = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        settings = TrackingSettings(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        os.chdir(tmp)  # the store's artifacts go to ./mlruns
        tracker = StudyTracker(settings, "best_model_cost", backend="optuna")
        tracker.open()  # MLflow's import and the store's creation: a one-time cost, not timed
        timings = {}
        for label, register in (("log", None), ("log + register", "best_model_cost")):
            started = time.perf_counter()
            model = keeper.model(ctx)
            log_best_model(tracker, model, number=keeper.number or 0, value=keeper.value, params=keeper.params,
                           loss_config=None, run_id=None, x_example=ctx.data.x_val, register=register)
            timings[label] = time.perf_counter() - started
        tracker.close()
    keeper.close()

    med = statistics.median
    print(f"\nper trial: fit {med(fits):.2f} s, of which in BestEpoch {1000 * med(callback):.1f} ms "
          f"({100 * med(callback) / med(fits):.2f} %); save_weights of a new best {1000 * med(saves):.0f} ms")
    print(f"end of study: rebuild + log {timings['log']:.2f} s; rebuild + log + register "
          f"{timings['log + register']:.2f} s")
    print(f"the alternative: retrain the best trial {retrain:.2f} s")


if __name__ == "__main__":
    main()
