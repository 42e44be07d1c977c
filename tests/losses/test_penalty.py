"""The lambda weight penalty: a real gradient that shrinks the trained weights, and only through `attach`."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import aloss_tune
from aloss_tune.errors import ConfigError
from aloss_tune.losses import Huber, Penalized, attach, penalized_weights, weight_penalty


def _data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x @ np.array([1.5, -2.0, 1.0, 0.5, -1.0, 2.0]) + 0.1 * rng.normal(size=n)).astype("float32")
    return x, y


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])


def _train(l1: float, l2: float, x: np.ndarray, y: np.ndarray, initial: list[np.ndarray]) -> np.ndarray:
    base = _model()
    base.set_weights(initial)
    loss = Penalized(keras.losses.MeanSquaredError(), l1=l1, l2=l2)
    model = attach(base, loss)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    # 80 full-batch steps in one epoch (per-epoch overhead dominates tiny fits).
    model.fit(np.tile(x, (80, 1)), np.tile(y, 80), epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    return np.asarray(base.layers[-1].kernel).ravel()


def test_larger_l2_and_l1_shrink_the_trained_weights():
    x, y = _data()
    initial = _model().get_weights()
    plain = _train(0.0, 0.0, x, y, initial)
    l2_small, l2_large = _train(0.0, 0.05, x, y, initial), _train(0.0, 0.5, x, y, initial)
    l1_small, l1_large = _train(0.05, 0.0, x, y, initial), _train(0.5, 0.0, x, y, initial)
    assert np.sum(plain**2) > np.sum(l2_small**2) > np.sum(l2_large**2)
    assert np.sum(np.abs(plain)) > np.sum(np.abs(l1_small)) > np.sum(np.abs(l1_large))
    # Without a penalty the least-squares weights are recovered: the test problem is well posed.
    np.testing.assert_allclose(plain, [1.5, -2.0, 1.0, 0.5, -1.0, 2.0], atol=0.1)


@pytest.mark.parametrize(("l1", "l2"), [(0.0, 0.3), (0.2, 0.0), (0.1, 0.05)])
def test_penalty_gradient_is_l1_sign_plus_twice_l2_w(l1, l2, grad):
    w = np.array([[0.5, -1.5], [2.0, -0.25]], dtype="float32")
    value, g = grad(lambda t: weight_penalty([t], l1=l1, l2=l2), w)
    np.testing.assert_allclose(value, l1 * np.abs(w).sum() + l2 * (w**2).sum(), rtol=1e-6)
    np.testing.assert_allclose(g, l1 * np.sign(w) + 2 * l2 * w, rtol=1e-6)


def test_one_training_step_moves_kernels_by_the_penalty_gradient_only():
    # Zero inputs and targets: the data term has no gradient on the kernels, so one SGD step moves them by
    # exactly -lr * (l1 * sign(w) + 2 * l2 * w); biases are not penalised.
    l1, l2, lr = 0.01, 0.2, 0.1
    base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    before = [np.asarray(v) for v in base.trainable_variables]
    loss = Penalized(keras.losses.MeanSquaredError(), l1=l1, l2=l2)
    model = attach(base, loss)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss)
    model.fit(np.zeros((8, 3), "float32"), np.zeros((8, 2), "float32"), epochs=1, batch_size=8, verbose=0)
    after = [np.asarray(v) for v in base.trainable_variables]
    for old, new in zip(before, after, strict=True):
        if old.ndim >= 2:
            np.testing.assert_allclose(
                new, old - lr * (l1 * np.sign(old) + 2 * l2 * old), rtol=1e-5, atol=1e-7
            )
        else:
            np.testing.assert_array_equal(new, old)
    assert len(penalized_weights(base)) == 2


def test_evaluate_reports_data_loss_plus_penalty():
    x, y = _data(32)
    base = _model()
    loss = Penalized(Huber(delta=1.0), l1=0.01, l2=0.1)
    model = attach(base, loss)
    model.compile(optimizer="sgd", loss=loss)
    reported = model.evaluate(x, y, verbose=0, batch_size=32)
    data = float(Huber(delta=1.0)(y, base.predict(x, verbose=0)))
    kernel = np.asarray(base.layers[-1].kernel, np.float64)
    np.testing.assert_allclose(
        reported, data + 0.01 * np.abs(kernel).sum() + 0.1 * (kernel**2).sum(), rtol=1e-5
    )


def test_penalized_loss_without_attach_raises_a_clear_error():
    model = _model()
    model.compile(optimizer="sgd", loss=aloss_tune.build_loss({"loss": "mse", "loss.l2": 1e-3}))
    x, y = _data(8)
    with pytest.raises(ConfigError, match=r"aloss_tune\.attach\(model, loss\)"):
        model.fit(x, y, epochs=1, verbose=0)


def test_build_loss_wraps_only_when_a_penalty_is_asked():
    assert not isinstance(aloss_tune.build_loss({"loss": "huber", "loss.l2": 0.0}), Penalized)
    loss = aloss_tune.build_loss({"loss": "huber", "loss.delta": 2.0, "loss.l1": 1e-4, "loss.l2": 1e-3})
    assert isinstance(loss, Penalized) and (loss.l1, loss.l2) == (1e-4, 1e-3)
    config = loss.get_config()
    assert config["loss"]["config"]["delta"] == 2.0
    assert Penalized.from_config(config).get_config() == config
    model = _model()
    assert attach(model, Huber()) is model  # an ordinary loss needs no wrapper


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda: Penalized(keras.losses.MeanSquaredError(), l1=-1.0), "`loss.l1`|`l1`"),
        (lambda: Penalized(keras.losses.MeanSquaredError(), l2=float("nan")), "`l2`"),
        (lambda: Penalized("mse"), "`loss`"),
        (lambda: Penalized(Penalized(keras.losses.MeanSquaredError(), l2=0.1), l2=0.1), "already penalized"),
        (lambda: aloss_tune.build_loss({"loss": "mse", "loss.l2": -0.5}), "`loss.l2`"),
    ],
)
def test_invalid_penalties(make, text):
    with pytest.raises(ConfigError, match=text):
        make()
