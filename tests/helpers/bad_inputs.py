"""User-side code that is wrong on purpose: defective data and model builders (as module:function)."""

from __future__ import annotations

import keras
import numpy as np

from aloss_tune.errors import ConfigError


def data(defect: str = "none", n: int = 64, seed: int = 0):
    """``(x_train, y_train, x_val, y_val)`` of a tiny linear problem, with one ``defect``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0])).astype("float32")
    cut = 3 * n // 4
    x_train, y_train, x_val, y_val = x[:cut], y[:cut], x[cut:], y[cut:]
    if defect == "nan_x":
        x_train[3, 1] = np.nan
    elif defect == "inf_y":
        y_val[2] = np.inf
    elif defect == "y_val_shape":
        y_val = np.stack([y_val, y_val], axis=1)
    elif defect == "features":
        x_val = x_val[:, :3]
    elif defect == "empty":
        x_train, y_train = x_train[:0], y_train[:0]
    elif defect == "strings":
        y_train = np.array(["a"] * len(y_train), dtype=object)
    elif defect == "complex":
        x_train = x_train + 1j * x_train
    elif defect in ("labels_0_1", "labels_0_1_2", "binary_with_a_2"):
        y_train, y_val = (y_train > 0).astype("float32"), (y_val > 0).astype("float32")
        if defect != "labels_0_1":
            y_train[5] = 2.0
        if defect == "binary_with_a_2":  # declared binary: only the label check can tell
            from aloss_tune.datasets import Dataset

            return Dataset("labels", "binary", x_train, y_train, x_val, y_val)
    elif defect != "none":
        raise ValueError(f"unknown defect {defect!r}")
    return x_train, y_train, x_val, y_val


def raises(n: int = 64):
    """A data function that fails."""
    raise OSError("cannot reach the data server")


def needs(path, n: int = 64):
    """A data function with an argument the space does not give."""
    return data(n=n)


def text():
    """Returns something that is not data."""
    return "x_train.csv"


def scalars():
    """Returns four numbers instead of four arrays."""
    return 1.0, 2.0, 3.0, 4.0


def as_dict(extra: bool = False):
    """The data as a dict (a valid return), with a misspelt key when ``extra``."""
    x_train, y_train, x_val, y_val = data()
    out = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    if extra:
        out["x_valid"] = out.pop("x_val")
    return out


def indexes_its_data(params, data):
    """Takes its `Dataset` for a tuple."""
    x_train = data[0]
    return keras.Sequential([keras.Input(x_train.shape[1:]), keras.layers.Dense(1)])


def three_outputs(params):
    """Predicts 3 values per row where the target is one value."""
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def softmax_two(params):
    """A softmax over 2 classes for 0/1 labels (which take one sigmoid unit)."""
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])


def not_a_model(params):
    """Returns a layer, not a model."""
    return keras.layers.Dense(1)


def key_error(params):
    """Reads a parameter that the space does not define."""
    units = params["model.width"]
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units), keras.layers.Dense(1)])


def wrong_input(params):
    """Expects 5 features where the data has 4."""
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])


_calls = {"n": 0}


def fails_after_first(params):
    """Builds the first model (the up-front check) and refuses every later one with one `ConfigError`."""
    _calls["n"] += 1
    if _calls["n"] > 1:
        raise ConfigError("model.params.units: this builder cannot build more than one model.")
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
