"""One trial: the objective is the best epoch of a loss-independent metric; 1-D labels do not broadcast."""

from __future__ import annotations

import numpy as np
import pytest

from aloss_tune.runner import flatten_learned, prepare, run_trial
from aloss_tune.space import SearchSpace


def linear_data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype("float32")
    y = (3 * x[:, 0] - x[:, 1]).astype("float32")  # 1-D labels: Keras gives losses y_true (B,), y_pred (B, 1)
    return x[:150], y[:150], x[150:], y[150:]


@pytest.mark.parametrize("loss", ["mse", "huber", "error_mse"])
def test_a_trial_learns_a_linear_map(loss):
    space = SearchSpace.from_dict({
        "study": "t", "loss": [loss], "optimizer": {"name": "adam", "learning_rate": 0.05},
        "model": {"builder": "mlp", "params": {"layers": 0}}, "training": {"epochs": 30, "batch_size": 32}})
    ctx = prepare(space, data=linear_data())
    seen = []
    outcome = run_trial(ctx, {"loss": loss, "optimizer.learning_rate": 0.05, "model.layers": 0}, seed=0,
                        reporters=[lambda epoch, metrics: seen.append((epoch, metrics["val_mae"]))])
    assert [e for e, _ in seen] == list(range(30))
    assert outcome.value == pytest.approx(min(v for _, v in seen))
    # With (B, B) broadcasting the model could not fit y = 3 x0 - x1; with aligned shapes it does.
    assert outcome.value < 0.15 * np.mean(np.abs(linear_data()[3]))
    assert outcome.loss_config["params"] == {"loss": loss}


def test_flatten_learned():
    assert flatten_learned({"alpha": np.array([0.5])}) == {"alpha": 0.5}
    assert flatten_learned({"scale": np.array([1.0, 2.0])}) == {"scale.0": 1.0, "scale.1": 2.0}


def test_baseline_is_the_median_predictor():
    ctx = prepare(SearchSpace.from_dict({"study": "t", "loss": ["mse"]}), data=linear_data())
    y_train, y_val = linear_data()[1], linear_data()[3]
    assert ctx.baseline_value() == pytest.approx(np.mean(np.abs(y_val - np.median(y_train))), rel=1e-6)


def test_accuracy_baseline_is_the_most_common_training_class_on_the_validation_data():
    from aloss_tune.datasets import Dataset

    # Multiclass (one-hot): class 2 is the most common in training; 3 of the 8 validation rows are class 2.
    y_train = np.eye(3, dtype="float32")[[2, 2, 2, 0, 1, 2, 0]]
    y_val = np.eye(3, dtype="float32")[[0, 2, 1, 2, 0, 0, 2, 1]]
    x_train, x_val = np.zeros((7, 2), "float32"), np.zeros((8, 2), "float32")
    space = SearchSpace.from_dict({"study": "t", "loss": ["cce"], "model": {"builder": "mlp"}})
    ctx = prepare(space, data=Dataset("m", "multiclass", x_train, y_train, x_val, y_val))
    assert ctx.objective.metric == "val_accuracy" and ctx.baseline_value() == 3 / 8
    # Binary accuracy: the positives are the most common training class; 2 of the 5 validation rows.
    y_train, y_val = np.array([1, 1, 0, 1], "float32"), np.array([0, 1, 0, 0, 1], "float32")
    space = SearchSpace.from_dict({"study": "t", "loss": ["bce"], "objective": {"metric": "val_accuracy"}})
    ctx = prepare(space, data=Dataset("b", "binary", np.zeros((4, 2), "float32"), y_train,
                                      np.zeros((5, 2), "float32"), y_val))
    assert ctx.baseline_value() == 2 / 5


def test_a_trial_no_better_than_the_baseline_after_its_warm_up_is_stopped():
    from aloss_tune.errors import TrialDead
    from aloss_tune.runner import DeadCheck

    # Minimizing against a baseline of 10: better at epoch 2 of a 3-epoch warm-up is learning.
    check = DeadCheck("val_mae", "minimize", baseline=10.0, warmup=3)
    for epoch, value in enumerate([12.0, 9.5, 11.0, 12.0]):
        check.check(epoch, value, last_epoch=10, history={})
    # Never better: stopped after the warm-up's third epoch, with its best value and history.
    check = DeadCheck("val_mae", "minimize", baseline=10.0, warmup=3)
    check.check(0, 12.0, last_epoch=10, history={})
    check.check(1, 10.0, last_epoch=10, history={})  # equal to the baseline is no better
    with pytest.raises(TrialDead, match=r"after 3 epochs the best val_mae \(10\) is no better than the baseline "
                                        r"10 \(a constant prediction\); stopped as dead") as caught:
        check.check(2, 11.0, last_epoch=10, history={"val_mae": [12.0, 10.0, 11.0]})
    assert caught.value.record() == {"epochs": 3, "best": 10.0, "baseline": 10.0}
    assert caught.value.history == {"val_mae": [12.0, 10.0, 11.0]}
    # The warm-up counts from the trial's first epoch (a continued trial starts at epoch 5), and a trial is
    # never stopped at its last epoch (it completes, and counts as dead there).
    check = DeadCheck("val_auc", "maximize", baseline=0.5, warmup=3, initial_epoch=5)
    for epoch in (5, 6):
        check.check(epoch, 0.4, last_epoch=10, history={})
    with pytest.raises(TrialDead):
        check.check(7, 0.5, last_epoch=10, history={})
    check = DeadCheck("val_auc", "maximize", baseline=0.5, warmup=3)
    for epoch in range(3):
        check.check(epoch, 0.4, last_epoch=3, history={})


def contaminated_linear_data(n=240, seed=0):
    """y = 3 x0 - x1 with a quarter of the training and validation targets shifted up by 30."""
    x_train, y_train, x_val, y_val = linear_data(n, seed)
    rng = np.random.default_rng(seed + 1)
    y_train, y_val = y_train.copy(), y_val.copy()
    y_train[rng.choice(len(y_train), len(y_train) // 4, replace=False)] += 30
    y_val[rng.choice(len(y_val), len(y_val) // 4, replace=False)] += 30
    return x_train, y_train, x_val, y_val


def test_val_median_ae_is_the_median_of_the_validation_errors():
    from aloss_tune.runner import train

    data = contaminated_linear_data()
    space = SearchSpace.from_dict({
        "study": "t", "loss": ["mae"], "optimizer": {"name": "adam", "learning_rate": 0.05},
        "model": {"builder": "mlp", "params": {"layers": 0}},
        "objective": "val_median_ae", "training": {"epochs": 6, "batch_size": 32}})
    ctx = prepare(space, data=data)
    assert ctx.objective.direction == "minimize"
    seen = []
    model, outcome = train(ctx, {"loss": "mae", "optimizer.learning_rate": 0.05, "model.layers": 0}, seed=0,
                           reporters=[lambda epoch, metrics: seen.append(metrics["val_median_ae"])])
    assert len(seen) == 6 and outcome.history["val_median_ae"] == seen
    assert outcome.value == pytest.approx(min(seen))
    # The last epoch's value, recomputed from the trained model with NumPy alone.
    residuals = data[3] - model.predict(data[2], verbose=0)[:, 0]
    assert seen[-1] == pytest.approx(float(np.median(np.abs(residuals))), rel=1e-6)
    # The outliers shift the mean error, not the median: the median error is far below the mean one.
    assert seen[-1] < 0.5 * outcome.history["val_mae"][-1]
    assert ctx.baseline_value() == pytest.approx(np.median(np.abs(data[3] - np.median(data[1]))), rel=1e-6)


def test_early_stopping_sees_val_median_ae(recwarn):
    # The runner's EarlyStopping monitors the objective; it finds val_median_ae in the epoch's logs.
    space = SearchSpace.from_dict({
        "study": "t", "loss": ["mse"], "model": {"builder": "mlp", "params": {"layers": 0}},
        "objective": "val_median_ae", "training": {"epochs": 40, "batch_size": 32, "early_stopping": 1},
        "optimizer": {"name": "adam", "learning_rate": 0.5}})
    ctx = prepare(space, data=contaminated_linear_data())
    outcome = run_trial(ctx, {"loss": "mse", "optimizer.learning_rate": 0.5, "model.layers": 0}, seed=0)
    assert not [w for w in recwarn if "Early stopping conditioned on metric" in str(w.message)]
    assert outcome.epochs < 40  # it stopped: the metric was in the logs it monitors


@pytest.mark.parametrize(("objective", "message"), [
    ("median_ae", r"'median_ae' is computed on the validation data only; use val_median_ae"),
    ("val_nope", r"'val_nope' is not computed for regression data; allowed: val_mae, val_rmse, val_mse, "
                 r"val_median_ae\.$"),
])
def test_objective_metric_errors_name_what_is_allowed(objective, message):
    from aloss_tune.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        prepare(SearchSpace.from_dict({"study": "t", "loss": ["mse"], "objective": objective}), data=linear_data())


def test_trial_log_writes_one_line_per_trial_with_the_best_so_far():
    import io

    from aloss_tune.progress import TrialLog, resolve

    out = io.StringIO()
    log = TrialLog("val_accuracy", "maximize", stream=out)
    log(0, "complete", "focal", 0.81)
    log(1, "complete", "bce", 0.78)
    log(2, "pruned", "class_bce", 0.5)
    log(3, "failed", "focal", error="ValueError: bad\n  detail")
    log(4, "complete", "bce", 0.9)
    lines = out.getvalue().splitlines()
    assert lines[0] == "trial 0 complete  loss=focal  val_accuracy=0.81  best=0.81 (trial 0)"
    assert lines[1].endswith("best=0.81 (trial 0)")  # maximised: 0.78 is worse
    assert lines[2] == "trial 2 pruned    loss=class_bce  val_accuracy=0.5  best=0.81 (trial 0)"
    assert lines[3] == "trial 3 failed    loss=focal  ValueError: bad detail  best=0.81 (trial 0)"
    assert lines[4].endswith("best=0.9 (trial 4)") and len(lines) == 5
    assert resolve(True) == (True, False) and resolve(False) == (False, False)
    assert resolve("lines") == (False, True)


def test_trial_log_writes_each_line_whole_so_that_workers_sharing_a_stream_never_interleave():
    import io

    from aloss_tune.progress import TrialLog

    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.calls = []

        def write(self, text):
            self.calls.append(text)
            return super().write(text)

    out = Writes()
    log = TrialLog("val_mae", "minimize", stream=out)
    log(0, "complete", "mse", 2.0)
    log(1, "dead", "mse", 3.0)
    assert [call.count("\n") for call in out.calls] == [1, 1] and all(c.endswith("\n") for c in out.calls)


def test_the_progress_bar_shows_the_counts_and_the_best_trials_loss(monkeypatch):
    import io
    import os
    import re
    import shutil

    from aloss_tune.progress import TrialBar, make_reporter

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(100, 24): os.terminal_size((160, 24)))
    out = io.StringIO()
    bar = TrialBar("val_mae", "minimize", stream=out, total=4)
    bar(0, "complete", "barron", 58.3, best=(58.3, 0), best_loss="barron")
    bar(1, "dead", "mse", 150.9, best=(58.3, 0), best_loss="barron")
    bar(2, "failed", "huber", error="ValueError: bad\n detail", best=(58.3, 0), best_loss="barron")
    bar(3, "pruned", "huber", 70.1, best=(58.3, 0), best_loss="barron")
    bar.close()
    text = out.getvalue()
    # One line rewritten in place (carriage returns), a failed trial's line above it, a newline at the end.
    *rewritten, last = text.rstrip("\n").split("\r")
    assert re.search(r"\rtrial 2 failed  loss=huber  ValueError: bad detail *\n", text) and text.endswith("\n")
    assert last.rstrip() == ("4/4 [####################] 1 complete, 1 dead, 1 pruned, 1 failed | "
                             "best val_mae=58.3 (trial 0, barron) | last: trial 3 huber pruned")
    assert rewritten[1].rstrip() == ("1/4 [#####---------------] 1 complete, 0 dead, 0 pruned, 0 failed | "
                                     "best val_mae=58.3 (trial 0, barron) | last: trial 0 barron complete")
    assert isinstance(make_reporter(True, "val_mae", "minimize", total=3), TrialBar)
    assert type(make_reporter("lines", "val_mae", "minimize")).__name__ == "TrialLog"
    assert make_reporter(False, "val_mae", "minimize") is None


def test_contaminated_validation_targets_select_on_the_median_absolute_error(caplog):
    import numpy as np

    from aloss_tune.datasets import Dataset, contaminated_regression
    from aloss_tune.runner import CONTAMINATED_SHARE, contaminated_share, prepare

    dirty = contaminated_regression(seed=1)
    clean = contaminated_regression(seed=1, outlier_fraction=0.0)
    assert contaminated_share(dirty) > 0.1 > CONTAMINATED_SHARE >= contaminated_share(clean)
    # a skewed but clean target that the inputs explain is not contaminated
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3)).astype("float32")
    y = np.exp(x @ np.array([0.8, -0.5, 0.3]) + 0.05 * rng.normal(size=1000)).astype("float32")
    skewed = Dataset("skewed", "regression", x[:600], np.log(y[:600]), x[600:], np.log(y[600:]))
    assert contaminated_share(skewed) <= CONTAMINATED_SHARE
    space = {"study": "s", "loss": ["huber"], "model": {"params": {"units": 4, "layers": 1}}}
    with caplog.at_level("WARNING", logger="aloss_tune"):
        ctx = prepare(SearchSpace.from_dict({**space, "data": "contaminated_regression"}))
    assert (ctx.objective.metric, ctx.objective.direction) == ("val_median_ae", "minimize")
    assert "objective: val_median_ae, as 18% of the validation targets lie beyond 3 robust spreads" in caplog.text
    explicit = prepare(SearchSpace.from_dict({**space, "data": "contaminated_regression", "objective": "val_mae"}))
    assert explicit.objective.metric == "val_mae"
    calm = prepare(SearchSpace.from_dict({**space, "data": {"name": "contaminated_regression",
                                                             "args": {"outlier_fraction": 0.0}}}))
    assert calm.objective.metric == "val_mae"


def test_a_builder_given_from_python_owns_the_model_params(tmp_path):
    """The Python API's pattern: a space without `builder:` whose model params are the user's builder's."""
    import keras
    import yaml

    import aloss_tune
    from aloss_tune.errors import ConfigError

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({
        "study": "own", "loss": ["mse"], "model": {"params": {"units1": {"type": "int", "low": 4, "high": 8}}},
        "training": {"epochs": 1}, "search": {"sampler": "random", "pruner": "none", "n_trials": 2}}))
    space = aloss_tune.SearchSpace.from_yaml(path)  # not refused: the builder is not known yet
    widths = []

    def build(params):
        widths.append(params["model.units1"])
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(params["model.units1"]),
                                 keras.layers.Dense(1)])

    result = aloss_tune.tune(space, build_model=build, data=linear_data(), tracking=False,
                             storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    counts = result.counts
    assert counts["complete"] + counts["dead"] == 2 and counts["pruned"] == counts["failed"] == 0
    assert widths[0] == 4 and all(4 <= w <= 8 for w in widths) and len(widths) == 3  # the check, 2 trials
    assert result.best_params["model.units1"] in widths[1:]
    # Run with its own builder (the built-in mlp, as `aloss-tune tune` does), the file's params are refused.
    with pytest.raises(ConfigError, match=r"space\.yaml: model\.params\.units1: unknown parameter for model 'mlp'"):
        prepare(space, data=linear_data())
