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
