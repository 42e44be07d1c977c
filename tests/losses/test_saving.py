"""Every loss of the basic family, and a penalised attached model, reloads in a fresh process.

Each model is compiled with a loss built from non-default flat params, evaluated, and saved to ``.keras``.
One subprocess (a fresh interpreter that only imports aloss_tune) loads them all without
``custom_objects`` and evaluates them again: the evaluation and the loss's full config must be the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import aloss_tune

CASES: dict[str, dict[str, Any]] = {
    "mse": {"loss": "mse"},
    "mae": {"loss": "mae"},
    "bce": {"loss": "bce", "loss.from_logits": True},
    "cce": {"loss": "cce", "loss.from_logits": True},
    "huber": {"loss": "huber", "loss.delta": 0.7},
    "confidence_bce": {
        "loss": "confidence_bce",
        "loss.clip_min": 1.5,
        "loss.clip_max": 6.0,
        "loss.from_logits": True,
    },
    "error_mse": {"loss": "error_mse", "loss.clip_min": 0.1, "loss.clip_max": 2.0},
    "class_bce": {"loss": "class_bce", "loss.pos_weight": 3.0, "loss.neg_weight": 0.5},
    "class_cce": {"loss": "class_cce", "loss.class_weights": [1.0, 2.0, 0.5], "loss.from_logits": True},
    "focal": {"loss": "focal", "loss.gamma": 1.5, "loss.alpha": 0.4, "loss.from_logits": True},
    "poly1": {"loss": "poly1", "loss.epsilon": 2.0, "loss.from_logits": True},
    "poly1_categorical": {"loss": "poly1", "loss.epsilon": -0.5, "loss.mode": "categorical"},
    "dynamic_alpha": {"loss": "dynamic_alpha", "loss.alpha_formula": "inverse_rms", "loss.power": 0.5},
    "dynamic_alpha_bce": {
        "loss": "dynamic_alpha",
        "loss.base": "bce",
        "loss.from_logits": True,
        "loss.alpha_formula": "outlier_damping",
        "loss.strength": 2.0,
        "loss.alpha_gradient": True,
    },
    "penalized_huber": {"loss": "huber", "loss.delta": 0.5, "loss.l1": 1e-3, "loss.l2": 1e-2},
    "gce": {"loss": "gce", "loss.q": 0.4},
    "sce": {"loss": "sce", "loss.alpha": 6.0, "loss.beta": 0.1, "loss.mode": "categorical"},
    "anl_ce": {
        "loss": "active_passive",
        "loss.passive": "nnce",
        "loss.alpha": 5.0,
        "loss.beta": 5.0,
        "loss.l1": 5e-5,
        "loss.from_logits": True,
        "loss.mode": "categorical",
    },
    "bootstrap_hard": {"loss": "bootstrap", "loss.target": "hard", "loss.from_logits": True},
}

LOADER = """
import json, sys
import numpy as np
import keras
import aloss_tune.losses  # registers the loss classes; nothing else is given to load_model
folder = sys.argv[1]
data = np.load(folder + "/data.npz")
out = {}
for name in json.loads(open(folder + "/names.json").read()):
    model = keras.saving.load_model(f"{folder}/{name}.keras")
    model.run_eagerly = True
    task = name.split(":")[0]
    value = model.evaluate(data["x"], data["y_" + task], batch_size=32, verbose=0)
    out[name.split(":")[1]] = {
        "evaluation": float(value),
        "loss": keras.saving.serialize_keras_object(model.loss),
        "model_class": type(model).__name__,
    }
print("RESULT" + json.dumps(out))
"""


def _task(params: dict[str, Any]) -> str:
    if params.get("loss.mode") == "categorical" or params["loss"] in ("cce", "class_cce"):
        return "multiclass"
    if (
        params["loss"] in ("mse", "mae", "huber", "error_mse")
        or params.get("loss.base", "mse") in ("mse", "mae")
        and (params["loss"] == "dynamic_alpha")
    ):
        return "regression"
    return "binary"


def _model(task: str, from_logits: bool) -> keras.Model:
    units = 3 if task == "multiclass" else 1
    activation = None if task == "regression" or from_logits else ("softmax" if units == 3 else "sigmoid")
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(units, activation=activation),
        ]
    )


def test_every_loss_reloads_in_a_fresh_process(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    data = {
        "x": x,
        "y_regression": (x @ np.array([1.0, -1.0, 0.5, 2.0]) + rng.standard_t(2, size=32)).astype("float32"),
        "y_binary": (x[:, 0] + 0.5 * rng.normal(size=32) > 0).astype("float32"),  # 1-D labels
        "y_multiclass": np.eye(3, dtype="float32")[np.argmax(x[:, :3], axis=1)],
    }
    np.savez(tmp_path / "data.npz", **data)
    expected, names = {}, []
    keras.utils.set_random_seed(0)
    for case, params in CASES.items():
        task = _task(params)
        loss = aloss_tune.build_loss(params)
        model = aloss_tune.attach(_model(task, bool(params.get("loss.from_logits"))), loss)
        model.compile(optimizer="adam", loss=loss, run_eagerly=True)  # tracing would dominate the test's time
        value = model.evaluate(x, data[f"y_{task}"], batch_size=32, verbose=0)
        assert np.isfinite(value), case
        names.append(f"{task}:{case}")
        model.save(tmp_path / f"{task}:{case}.keras")
        expected[case] = {
            "evaluation": float(value),
            "loss": json.loads(json.dumps(keras.saving.serialize_keras_object(loss))),
            "model_class": type(model).__name__,
        }
    (tmp_path / "names.json").write_text(json.dumps(names))

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    loaded = json.loads(line[len("RESULT") :])

    assert set(loaded) == set(CASES)
    assert expected["penalized_huber"]["model_class"] == "LossModel"
    for case in CASES:
        assert loaded[case]["model_class"] == expected[case]["model_class"], case
        assert loaded[case]["loss"] == expected[case]["loss"], case
        np.testing.assert_allclose(
            loaded[case]["evaluation"], expected[case]["evaluation"], rtol=1e-6, err_msg=case
        )
    penalized = loaded["penalized_huber"]["loss"]["config"]
    assert (penalized["l1"], penalized["l2"], penalized["loss"]["config"]["delta"]) == (1e-3, 1e-2, 0.5)


EXPORT_CHECK = """
import json, sys
import numpy as np
import keras
x = np.load(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    out[path] = keras.saving.load_model(path).predict(x, verbose=0).tolist()
print(json.dumps({"predictions": out, "aloss_tune_imported": "aloss_tune" in sys.modules}))
"""


def test_exported_models_reload_without_aloss_tune(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) + rng.standard_cauchy(size=(64, 1))).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for name, params in {"adaptive_penalised": {"loss": "adaptive_barron", "loss.l2": 1e-3},
                         "huber": {"loss": "huber", "loss.delta": 0.7}}.items():
        loss = aloss_tune.build_loss(params)
        model = aloss_tune.attach(keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                                                    keras.layers.Dense(1)]), loss)
        model.compile(optimizer="adam", loss=loss)
        model.fit(x, y, epochs=2, verbose=0)
        served = aloss_tune.export(model)
        assert not isinstance(served, aloss_tune.losses.LossModel)
        np.testing.assert_allclose(served.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
        path = str(tmp_path / f"{name}.keras")
        served.save(path)
        expected[path] = model.predict(x, verbose=0)
    code = EXPORT_CHECK
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy"), *expected],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["aloss_tune_imported"] is False
    for path, predictions in expected.items():
        np.testing.assert_allclose(np.asarray(result["predictions"][path]), predictions, rtol=1e-5, atol=1e-6)
    with pytest.raises(aloss_tune.ConfigError, match="export: expected a keras.Model, but got str"):
        aloss_tune.export("model.keras")
