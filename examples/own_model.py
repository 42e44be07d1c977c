"""Tune a loss jointly with *your* model on *your* data, from Python.

    python examples/own_model.py            # 6 trials of 15 epochs
    python examples/own_model.py --quick    # 3 trials of 5 epochs: one per loss (a smoke run)

The space comes from a dict here (a YAML file works the same); the model builder reads its hyperparameters
from the flat params dict, the same keys MLflow shows.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

import aloss_tune


def make_data(seed: int = 0):
    """A regression with heavy-tailed noise and 15% gross outliers in the training targets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 8)).astype("float32")
    w = rng.normal(size=8)
    y = (x @ w + 0.3 * rng.standard_t(df=3, size=600)).astype("float32")
    train, val = slice(0, 450), slice(450, 600)
    y_train = y[train].copy()
    hit = rng.choice(450, size=68, replace=False)
    y_train[hit] += rng.uniform(5, 15, size=68).astype("float32")
    return x[train], y_train, x[val], y[val]


def build_model(params):
    """Any Keras model; hyperparameters come from the flat params (``model.*`` keys)."""
    units = params.get("model.units", 32)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(1),
    ])


SPACE = {
    "study": "own_model_example",
    "model": {"builder": "own_model:build_model", "params": {"units": {"type": "int", "low": 8, "high": 64, "log": True}}},
    "optimizer": {"name": "adam", "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
    "objective": {"metric": "val_mae", "direction": "minimize"},
    "training": {"epochs": 15, "batch_size": 32},
    "loss": {"choices": ["mse", "huber", "barron"]},
    "search": {"n_trials": 6, "seed": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description="Tune a loss jointly with your own model.")
    parser.add_argument("--quick", action="store_true", help="3 trials of 5 epochs (a smoke run)")
    quick = parser.parse_args().quick
    space = aloss_tune.SearchSpace.from_dict(
        {**SPACE, "training": {**SPACE["training"], "epochs": 5}, "search": {**SPACE["search"], "n_trials": 3}}
        if quick else SPACE)
    result = aloss_tune.tune(space, data=make_data(), build_model=build_model,
                             storage="sqlite:///examples.db", tracking_uri="sqlite:///mlflow.db")
    print(f"best trial {result.best_trial}: val_mae = {result.best_value:.4f}")
    print("best params:", result.best_params)
    print("best loss:  ", result.best_loss.get_config())


if __name__ == "__main__":
    main()
