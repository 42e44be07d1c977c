"""What a user's own code looks like: a model builder and a data function, addressed as module:function."""

from __future__ import annotations

import keras
import numpy as np


def tiny_regression(n: int = 160, seed: int = 0):
    """A small linear problem with a few outliers: (x_train, y_train, x_val, y_val)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=n)).astype("float32")
    y[: n // 10] += 20.0
    cut = int(0.75 * n)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def build(params):
    """A one-hidden-layer model; ``model.mode == "fail"`` fails on purpose (to test failed trials)."""
    if params.get("model.mode") == "fail":
        raise RuntimeError("deliberate failure for testing")
    units = int(params.get("model.units", 8))
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(1)])


def tiny_multiclass(n: int = 150, seed: int = 0):
    """Three classes in 4 features, one-hot labels: (x_train, y_train, x_val, y_val)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    x = (rng.normal(size=(n, 4)) + labels[:, None]).astype("float32")
    y = np.eye(3, dtype="float32")[labels]
    cut = int(0.75 * n)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def lenient_mlp(params, data):
    """The built-in MLP, ignoring model parameters it does not know (spaces that test sampling only)."""
    from aloss_tune.models import MLP_DEFAULTS, mlp

    known = {k: v for k, v in params.items()
             if not k.startswith("model.") or k[len("model."):] in MLP_DEFAULTS}
    return mlp(known, data)


def stuck_or_mlp(params, data):
    """The built-in MLP; with ``model.mode == "stuck"``, a model that predicts -50 whatever it is shown and
    learns far too slowly to change that: a trial that is not learning."""
    from aloss_tune.models import mlp

    if params.get("model.mode") == "stuck":
        return keras.Sequential([keras.Input(data.x_train.shape[1:]), keras.layers.Dense(
            1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(-50.0))])
    return mlp({k: v for k, v in params.items() if k != "model.mode"}, data)
