"""The adaptive robust loss: alpha and scale learned by an ordinary ``model.fit`` through the NLL.

Validation, initial and fixed values, the loss value, training on both backends (TensorFlow with and without
XLA), recovery of a known alpha and scale, per-epoch reading, a save and reload in a fresh process, mixed
precision, the weight penalty on top, and the ``adaptive_barron`` factory.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from scipy import special

import aloss_tune
from aloss_tune.errors import ConfigError
from aloss_tune.losses import AdaptiveRobustLoss, AdaptiveRobustState, LossModel, attach, robust_sample

BACKEND = keras.backend.backend()
# JAX without jit runs op by op. On torch, Keras's default is eager: jit_compile=True is torch.compile, whose
# compilation of this loss's training step costs 30-45 CPU seconds (test_robust.py and test_label_noise.py
# compile theirs).
JIT_MODES = {"tensorflow": [True, False], "jax": [True], "torch": [False]}.get(BACKEND, [True])
JIT = JIT_MODES[0]
LOG_Z_1 = math.log(2.0 * math.e * special.k1(1.0))


def _model(inputs: int = 3, outputs: int = 2, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(outputs)])


def _data(n: int = 256, inputs: int = 3, outputs: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    w = rng.normal(size=(inputs, outputs))
    y = (x @ w + 0.3 * rng.standard_cauchy((n, outputs))).astype("float32")
    return x, y


def _compiled(loss: Any, jit_compile: Any = JIT, lr: float = 0.05, **model_kwargs: Any) -> keras.Model:
    model = attach(_model(**model_kwargs), loss)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, jit_compile=jit_compile)
    return model


# ---- construction ---------------------------------------------------------------------------------------------

INVALID = [
    ({"alpha_lo": -0.1}, "alpha_lo"),
    ({"alpha_lo": 1.5, "alpha_hi": 1.0}, "alpha_lo <= alpha_hi"),
    ({"alpha_hi": math.inf}, "alpha_hi"),
    ({"alpha_lo": "0"}, "alpha_lo"),
    ({"alpha_init": 2.5}, "alpha_init"),
    ({"alpha_init": 0.001}, "strictly"),
    ({"alpha_lo": 1.0, "alpha_hi": 1.0, "alpha_init": 0.5}, "fixed alpha"),
    ({"scale_lo": 0.0}, "scale_lo"),
    ({"scale_lo": 2.0, "scale_init": 1.0}, "scale_lo <= scale_init"),
    ({"scale_init": math.nan}, "scale_init"),
    ({"num_dims": 0}, "num_dims"),
    ({"num_dims": 2.5}, "num_dims"),
    ({"shared": 1}, "shared"),
]


@pytest.mark.parametrize(("kwargs", "match"), INVALID)
def test_rejects_invalid_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AdaptiveRobustLoss(**kwargs)


def test_config_is_exact_and_round_trips():
    loss = AdaptiveRobustLoss(4, alpha_lo=0.5, alpha_hi=1.5, alpha_init=0.7, scale_lo=1e-3, scale_init=0.2)
    assert loss.get_config() == {
        "name": "adaptive_robust_loss",
        "reduction": "sum_over_batch_size",
        "num_dims": 4,
        "shared": False,
        "alpha_lo": 0.5,
        "alpha_hi": 1.5,
        "alpha_init": 0.7,
        "scale_lo": 1e-3,
        "scale_init": 0.2,
    }
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, AdaptiveRobustLoss) and again.get_config() == loss.get_config()
    assert AdaptiveRobustLoss().get_config()["alpha_init"] is None  # the midpoint, resolved on use
    state = AdaptiveRobustState(3, 0.5, 1.5, 0.7, 1e-3, 0.2)
    assert AdaptiveRobustState.from_config(state.get_config()).get_config() == state.get_config()


def test_starts_at_the_initial_values():
    loss = AdaptiveRobustLoss()
    model = attach(_model(outputs=3), loss)
    values = aloss_tune.learned_values(model)
    np.testing.assert_allclose(values["alpha"], [1.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(values["scale"], [1.0, 1.0, 1.0], rtol=1e-6)
    assert loss.num_dims == 3  # inferred, and kept in the config for reloading
    custom = AdaptiveRobustLoss(alpha_lo=0.2, alpha_hi=1.4, alpha_init=0.5, scale_lo=0.01, scale_init=0.3)
    values = aloss_tune.learned_values(attach(_model(outputs=2), custom))
    np.testing.assert_allclose(values["alpha"], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(values["scale"], [0.3, 0.3], rtol=1e-6)
    shared = aloss_tune.learned_values(attach(_model(outputs=5), AdaptiveRobustLoss(shared=True)))
    assert shared["alpha"].shape == shared["scale"].shape == (1,)


def test_output_size_is_inferred_checked_or_required():
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="build it first"):
        attach(unbuilt, AdaptiveRobustLoss())
    with pytest.raises(ConfigError, match="num_dims"):
        attach(_model(outputs=3), AdaptiveRobustLoss(num_dims=2))
    given = AdaptiveRobustLoss(num_dims=2)
    model = attach(keras.Sequential([keras.layers.Dense(2)]), given)  # unbuilt, but the size is given
    assert aloss_tune.learned_values(model)["alpha"].shape == (2,)
    inputs = keras.Input((3,))
    two_heads = keras.Model(inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(1)(inputs)])
    with pytest.raises(ConfigError, match="outputs"):
        attach(two_heads, AdaptiveRobustLoss())


def test_unattached_use_is_a_clear_error():
    loss = AdaptiveRobustLoss(num_dims=2)
    model = _model()
    model.compile(optimizer="adam", loss=loss)
    with pytest.raises(ConfigError, match="attach"):
        model.fit(*_data(32), epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="attach"):
        loss.learned_values()


def test_loss_is_the_per_sample_mean_nll_and_may_be_negative(rng):
    loss = AdaptiveRobustLoss()
    model = attach(_model(outputs=3), loss)  # the loss holds its model weakly: keep it
    y_true = rng.normal(size=(4, 3)).astype("float32")
    y_pred = (y_true + rng.normal(size=(4, 3))).astype("float32")
    per_sample = keras.ops.convert_to_numpy(keras.losses.Loss.__call__(_unreduced(loss), y_true, y_pred))
    x = (y_pred - y_true).astype(np.float64)
    want = (np.sqrt(x**2 + 1) - 1 + LOG_Z_1).mean(axis=-1)  # alpha = 1, scale = 1 at the start
    np.testing.assert_allclose(per_sample, want, rtol=1e-6)
    # A small scale makes the density exceed 1: the NLL of a perfect prediction is negative.
    small = AdaptiveRobustLoss(scale_lo=1e-3, scale_init=1e-3)
    other = attach(_model(outputs=3), small)
    assert float(keras.ops.convert_to_numpy(small(y_true, y_true))) == pytest.approx(math.log(1e-3) + LOG_Z_1, abs=1e-5)
    assert isinstance(model, LossModel) and isinstance(other, LossModel)


def _unreduced(loss: AdaptiveRobustLoss) -> AdaptiveRobustLoss:
    loss.reduction = None
    return loss


def test_one_dimensional_targets_keep_one_value_per_sample():
    loss = AdaptiveRobustLoss(reduction=None)
    model = attach(_model(outputs=1), loss)
    y_true = np.array([0.0, 1.0, -2.0], "float32")
    y_pred = np.array([[0.5], [1.0], [0.0]], "float32")
    values = keras.ops.convert_to_numpy(loss(y_true, y_pred))
    assert values.shape == (3,)
    np.testing.assert_allclose(values, np.sqrt(np.array([0.25, 0.0, 4.0]) + 1) - 1 + LOG_Z_1, rtol=1e-6)
    assert aloss_tune.learned_values(model)["alpha"].shape == (1,)


# ---- training -------------------------------------------------------------------------------------------------

class _Recorder(keras.callbacks.Callback):
    """Reads the learned values at the end of every epoch, as a tracking callback would."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.seen.append(aloss_tune.learned_values(self.model))


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_fit_trains_alpha_and_scale_and_they_can_be_read_every_epoch(jit_compile):
    x, y = _data(256)
    loss = AdaptiveRobustLoss()
    model = _compiled(loss, jit_compile=jit_compile, lr=0.1)
    state = model.loss_state
    assert {id(v) for v in state.trainable_variables} <= {id(v) for v in model.trainable_variables}
    recorder = _Recorder()
    history = model.fit(x, y, epochs=3, batch_size=128, verbose=0, callbacks=[recorder])
    assert np.all(np.isfinite(history.history["loss"]))
    alphas = [r["alpha"] for r in recorder.seen]
    scales = [r["scale"] for r in recorder.seen]
    assert not np.allclose(alphas[0], 1.0) and not np.allclose(alphas[0], alphas[-1])
    assert not np.allclose(scales[0], 1.0) and not np.allclose(scales[0], scales[-1])
    np.testing.assert_array_equal(recorder.seen[-1]["alpha"], aloss_tune.learned_values(model)["alpha"])
    assert np.all((0.001 <= alphas[-1]) & (alphas[-1] <= 1.999)) and np.all(scales[-1] >= 1e-5)


def test_fixed_values_stay_fixed():
    x, y = _data(128)
    both = AdaptiveRobustLoss(alpha_lo=1.3, alpha_hi=1.3, scale_lo=0.7, scale_init=0.7)
    model = _compiled(both, lr=0.1)
    assert not model.loss_state.latent_alpha.trainable and not model.loss_state.latent_scale.trainable
    assert not any(v is model.loss_state.latent_alpha for v in model.trainable_variables)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    values = aloss_tune.learned_values(model)
    np.testing.assert_allclose(values["alpha"], [1.3, 1.3], rtol=1e-7)
    np.testing.assert_allclose(values["scale"], [0.7, 0.7], rtol=1e-7)
    # Fixing one leaves the other learned.
    alpha_only = AdaptiveRobustLoss(alpha_lo=0.8, alpha_hi=0.8)
    model = _compiled(alpha_only, lr=0.1)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    values = aloss_tune.learned_values(model)
    np.testing.assert_allclose(values["alpha"], [0.8, 0.8], rtol=1e-7)
    assert not np.allclose(values["scale"], 1.0)


def test_fit_recovers_a_known_alpha_and_scale():
    # Residuals drawn from Barron's distribution with per-dimension alpha and scale; the model only has to
    # find the location. 8192 samples, full batches, 400 Adam steps.
    alpha, scale, location = np.array([0.5, 1.5]), np.array([0.7, 2.0]), np.array([1.0, -2.0])
    n, steps = 8192, 400
    noise = np.stack([robust_sample(a, c, n, seed=10 + i) for i, (a, c) in enumerate(zip(alpha, scale))], 1)
    y = (noise + location).astype("float32")
    x = np.ones((n, 1), "float32")
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, use_bias=False)])
    loss = AdaptiveRobustLoss()
    model = attach(base, loss)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=loss, jit_compile=JIT)
    model.fit(np.tile(x, (steps, 1)), np.tile(y, (steps, 1)), epochs=1, batch_size=n, shuffle=False, verbose=0)
    values = aloss_tune.learned_values(model)
    np.testing.assert_allclose(values["alpha"], alpha, atol=0.1)
    np.testing.assert_allclose(values["scale"], scale, atol=0.1)
    np.testing.assert_allclose(np.asarray(base.layers[0].kernel).ravel(), location, atol=0.1)


def test_mixed_precision_computes_in_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        loss = AdaptiveRobustLoss()
        model = _compiled(loss, lr=0.05)
        assert keras.backend.standardize_dtype(model.loss_state.latent_alpha.dtype) == "float32"
        x, y = _data(64)
        value = loss(y, model(x))
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        history = model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        assert np.isfinite(history.history["loss"][-1])
        assert aloss_tune.learned_values(model)["alpha"].dtype == np.float64
    finally:
        keras.config.set_dtype_policy(previous)


def test_weight_penalty_on_top_of_the_adaptive_loss():
    loss = aloss_tune.build_loss({"loss": "adaptive_barron", "loss.alpha_hi": 1.5, "loss.l2": 1e-3})
    model = attach(_model(), loss)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=loss)
    model.fit(*_data(128), epochs=2, batch_size=64, verbose=0)
    values = aloss_tune.learned_values(model)
    assert values["alpha"].shape == (2,) and np.all(values["alpha"] <= 1.5)
    assert not np.allclose(values["alpha"], 0.7505)


# ---- saving -----------------------------------------------------------------------------------------------------

RELOAD = """
import json, sys
import numpy as np
import keras
import aloss_tune.losses  # registers the classes; nothing else is given to load_model
folder = sys.argv[1]
data = np.load(folder + "/data.npz")
out = {}
for name in ("adaptive", "barron"):
    model = keras.saving.load_model(f"{folder}/{name}.keras")
    out[name] = {
        "class": type(model).__name__,
        "learned": {k: v.tolist() for k, v in aloss_tune.losses.learned_values(model).items()},
        "prediction": model.predict(data["x"], verbose=0).tolist(),
        "evaluation": float(model.evaluate(data["x"], data["y"], batch_size=64, verbose=0)),
        "loss": keras.saving.serialize_keras_object(model.loss)["config"],
    }
    model.fit(data["x"], data["y"], epochs=1, batch_size=64, verbose=0)  # still trains after reloading
    out[name]["learned_after_fit"] = {k: v.tolist() for k, v in aloss_tune.losses.learned_values(model).items()}
print(json.dumps(out))
"""


def test_saved_and_reloaded_model_keeps_the_learned_alpha_and_scale(tmp_path: Path):
    x, y = _data(256)
    loss = AdaptiveRobustLoss(alpha_hi=1.8, scale_init=0.5)
    model = _compiled(loss, lr=0.1)
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    learned = aloss_tune.learned_values(model)
    assert not np.allclose(learned["alpha"], 0.9005)
    model.save(tmp_path / "adaptive.keras")
    barron = _model()
    barron.compile(optimizer="adam", loss=aloss_tune.build_loss({"loss": "barron", "loss.alpha": -2.0}))
    barron.save(tmp_path / "barron.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    expected = {
        "adaptive": (model, loss.get_config()),
        "barron": (barron, barron.loss.get_config()),
    }
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (original, config) in expected.items():
        got = out[name]
        assert got["loss"] == config
        np.testing.assert_allclose(got["prediction"], original.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
        assert got["evaluation"] == pytest.approx(float(original.evaluate(x, y, batch_size=64, verbose=0)), rel=1e-5)
    assert out["adaptive"]["class"] == "LossModel"
    for key in ("alpha", "scale"):
        np.testing.assert_allclose(out["adaptive"]["learned"][key], learned[key], rtol=1e-7)
        assert not np.allclose(out["adaptive"]["learned_after_fit"][key], learned[key])
    assert out["barron"]["learned"] == {}


# ---- factory --------------------------------------------------------------------------------------------------

def test_adaptive_barron_factory():
    factory = aloss_tune.get_factory("adaptive_barron")
    assert factory.adaptive and factory.tasks == ("regression",)
    assert factory.defaults() == {
        "alpha_lo": 0.001, "alpha_hi": 1.999, "alpha_init": None, "scale_lo": 1e-5, "scale_init": 1.0, "shared": False,
    }
    space = factory.search_space()
    assert set(space) == {"alpha_lo", "alpha_hi", "scale_init"}
    assert factory.param("scale_init").relative and factory.param("scale_lo").relative
    # ... and stay robust: alpha below 2 (L2), the initial scale within 3 spreads of the targets.
    assert space["alpha_hi"].high < 2 and space["scale_init"].high <= 3
    # The default ranges never produce an invalid combination: the corners build.
    for lo in (space["alpha_lo"].low, space["alpha_lo"].high):
        for hi in (space["alpha_hi"].low, space["alpha_hi"].high):
            for init in (space["scale_init"].low, space["scale_init"].high):
                built = factory.build(alpha_lo=lo, alpha_hi=hi, scale_init=init)
                assert isinstance(built, AdaptiveRobustLoss)
    loss = aloss_tune.build_loss({"loss": "adaptive_barron", "loss.shared": True, "loss.alpha_init": 0.4})
    assert loss.shared and loss.alpha_init == 0.4
    assert isinstance(attach(_model(), loss), LossModel)
    with pytest.raises(ConfigError):
        aloss_tune.build_loss({"loss": "adaptive_barron", "loss.alpha_lo": 1.5, "loss.alpha_hi": 1.0})
