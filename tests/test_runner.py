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
    assert result.counts == {"complete": 2, "pruned": 0, "failed": 0}
    assert widths[0] == 4 and all(4 <= w <= 8 for w in widths) and len(widths) == 3  # the check, 2 trials
    assert result.best_params["model.units1"] in widths[1:]
    # Run with its own builder (the built-in mlp, as `aloss-tune tune` does), the file's params are refused.
    with pytest.raises(ConfigError, match=r"space\.yaml: model\.params\.units1: unknown parameter for model 'mlp'"):
        prepare(space, data=linear_data())
