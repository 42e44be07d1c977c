"""Huber, binary focal cross-entropy and Poly-1 against NumPy and against Keras's own losses."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from aloss_tune.errors import ConfigError
from aloss_tune.losses import (
    FocalCrossentropy,
    Huber,
    Poly1Crossentropy,
    focal_crossentropy,
    huber,
    poly1_crossentropy,
)


def np_huber(y, y_pred, delta):
    e = np.asarray(y_pred, np.float64) - y
    rho = np.where(np.abs(e) <= delta, 0.5 * e**2, delta * np.abs(e) - 0.5 * delta**2)
    return rho.mean(axis=-1)


# ---------------------------------------------------------------------------------------------- Huber


@pytest.mark.parametrize("delta", [0.1, 1.0, 3.5])
def test_huber_matches_numpy_and_keras(delta, rng, tol, values):
    y = rng.normal(size=(16, 3)).astype("float32")
    y_pred = (y + 3 * rng.normal(size=(16, 3))).astype("float32")
    ours = values(Huber(delta=delta), y, y_pred)
    np.testing.assert_allclose(ours, np_huber(y, y_pred, delta), **tol)
    theirs = keras.losses.Huber(delta=delta, reduction=None)(y, y_pred)
    np.testing.assert_allclose(ours, np.asarray(theirs), **tol)


def test_huber_is_quadratic_then_linear_at_delta():
    delta = 2.0
    e = np.array([[0.5, -2.0, 2.0, 10.0, -1e6]], dtype="float32")
    out = np.asarray(huber(np.zeros_like(e), e, delta))
    expected = np.mean([0.125, 2.0, 2.0, 2.0 * 10 - 2.0, 2.0 * 1e6 - 2.0])
    np.testing.assert_allclose(out, [expected], rtol=1e-6)


def test_huber_gradient_is_residual_then_clipped(grad):
    delta = 1.5
    e = np.array([[0.3, -1.0, 4.0, -1e6, 1e6]], dtype="float32")
    _, g = grad(lambda p: huber(np.zeros((1, 5), "float32"), p, delta), e)
    np.testing.assert_allclose(g, np.clip(e, -delta, delta) / 5, rtol=1e-6)


def test_huber_config_round_trips_delta():
    loss = Huber(delta=0.25, name="h", reduction="sum")
    assert loss.get_config() == {"name": "h", "reduction": "sum", "delta": 0.25}
    again = Huber.from_config(loss.get_config())
    assert again.get_config() == loss.get_config()


# ---------------------------------------------------------------------------------------------- focal


def np_focal(y, y_pred, gamma, alpha, from_logits, eps=1e-7):
    y_pred = np.asarray(y_pred, np.float64)
    if from_logits:
        log_p, log_q = -np.logaddexp(0, -y_pred), -np.logaddexp(0, y_pred)
        p, q = np.exp(log_p), np.exp(log_q)
    else:
        p = np.clip(y_pred, eps, 1 - eps)
        q = 1 - p
        log_p, log_q = np.log(p), np.log(q)
    one_minus_pt = np.clip(y * q + (1 - y) * p, eps, 1 - eps)
    alpha_t = y * alpha + (1 - y) * (1 - alpha)
    return (alpha_t * one_minus_pt**gamma * -(y * log_p + (1 - y) * log_q)).mean(axis=-1)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize(("gamma", "alpha"), [(0.0, 0.5), (2.0, 0.25), (0.5, 0.9), (4.0, 0.0)])
def test_focal_matches_keras_and_numpy(gamma, alpha, from_logits, rng, tol, values):
    y = rng.integers(0, 2, size=(32, 3)).astype("float32")
    y_pred = rng.normal(scale=3, size=(32, 3)) if from_logits else rng.uniform(1e-3, 1 - 1e-3, size=(32, 3))
    y_pred = y_pred.astype("float32")
    ours = values(FocalCrossentropy(gamma=gamma, alpha=alpha, from_logits=from_logits), y, y_pred)
    keras_loss = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=alpha, gamma=gamma, from_logits=from_logits, reduction=None
    )
    np.testing.assert_allclose(ours, np.asarray(keras_loss(y, y_pred)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours, np_focal(y, y_pred, gamma, alpha, from_logits), **tol)


def test_focal_is_exact_for_saturated_logits(tol):
    # Keras clips sigmoid(z) and reports -log(1e-7) ~ 16.1 for a wrong logit of 30; the exact value is 30.
    y = np.array([[0.0, 1.0, 0.0, 1.0]], dtype="float32")
    z = np.array([[30.0, -30.0, 1e4, 3.0]], dtype="float32")
    out = np.asarray(focal_crossentropy(y, z, gamma=2.0, alpha=0.5, from_logits=True))
    np.testing.assert_allclose(out, np_focal(y, z, 2.0, 0.5, True), **tol)
    assert out[0] > 0.5 * (30 + 30 + 1e4) / 4 * 0.99


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0])
def test_focal_gradient_finite_at_certain_predictions(gamma, grad):
    # d/dx x**gamma is infinite at 0 for gamma < 1; the modulating factor uses clipped probabilities.
    y = np.array([[0.0, 1.0, 0.0, 1.0]], dtype="float32")
    for y_pred, from_logits in [([[0.0, 1.0, 1.0, 0.0]], False), ([[-1e4, 1e4, 1e4, -1e4]], True)]:
        value, g = grad(
            lambda p, fl=from_logits: focal_crossentropy(y, p, gamma, 0.25, fl),
            np.array(y_pred, dtype="float32"),
        )
        assert np.isfinite(value) and np.all(np.isfinite(g))


def test_focal_down_weights_easy_examples(values):
    y = np.ones((2, 1), dtype="float32")
    y_pred = np.array([[0.9], [0.4]], dtype="float32")
    focal = values(FocalCrossentropy(gamma=2.0, alpha=0.5), y, y_pred)
    plain = -np.log(y_pred[:, 0])
    ratio = focal / plain
    np.testing.assert_allclose(ratio, 0.5 * (1 - y_pred[:, 0]) ** 2, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- Poly-1


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("epsilon", [-1.0, 0.0, 2.5])
def test_poly1_binary_matches_numpy(epsilon, from_logits, rng, tol, ref, values):
    y = rng.integers(0, 2, size=(16, 2)).astype("float32")
    y_pred = rng.normal(scale=2, size=(16, 2)) if from_logits else rng.uniform(0.01, 0.99, size=(16, 2))
    y_pred = y_pred.astype("float32")
    p = ref.sigmoid(y_pred.astype(np.float64)) if from_logits else y_pred.astype(np.float64)
    one_minus_pt = y * (1 - p) + (1 - y) * p
    expected = (ref.bce(y, y_pred, from_logits) + epsilon * one_minus_pt).mean(axis=-1)
    ours = values(Poly1Crossentropy(epsilon=epsilon, from_logits=from_logits), y, y_pred)
    np.testing.assert_allclose(ours, expected, **tol)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("epsilon", [-1.0, 1.0])
def test_poly1_categorical_matches_numpy(epsilon, from_logits, rng, tol, ref, values):
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, size=12)]
    logits = rng.normal(scale=2, size=(12, 4))
    log_probs = ref.log_softmax(logits)
    y_pred = (logits if from_logits else np.exp(log_probs)).astype("float32")
    expected = -(y * log_probs).sum(-1) + epsilon * (1 - (y * np.exp(log_probs)).sum(-1))
    ours = values(Poly1Crossentropy(epsilon=epsilon, from_logits=from_logits, mode="categorical"), y, y_pred)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_poly1_with_zero_epsilon_is_keras_cross_entropy(rng, values):
    y = rng.integers(0, 2, size=(16, 1)).astype("float32")
    z = rng.normal(size=(16, 1)).astype("float32")
    np.testing.assert_allclose(
        values(Poly1Crossentropy(epsilon=0.0, from_logits=True), y, z),
        np.asarray(keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)(y, z)),
        rtol=1e-5,
    )
    y3 = np.eye(3, dtype="float32")[rng.integers(0, 3, size=16)]
    z3 = rng.normal(size=(16, 3)).astype("float32")
    np.testing.assert_allclose(
        values(Poly1Crossentropy(epsilon=0.0, from_logits=True, mode="categorical"), y3, z3),
        np.asarray(keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None)(y3, z3)),
        rtol=1e-5,
    )


def test_poly1_categorical_refuses_integer_labels():
    with pytest.raises(ValueError, match="one-hot"):
        poly1_crossentropy(np.array([0, 2, 1, 1]), np.eye(4, dtype="float32"), mode="categorical")


def test_classic_configs_round_trip():
    for loss in (
        FocalCrossentropy(gamma=0.5, alpha=0.75, from_logits=True),
        Poly1Crossentropy(epsilon=-0.5, from_logits=True, mode="categorical"),
    ):
        config = loss.get_config()
        rebuilt = type(loss).from_config(config)
        assert rebuilt.get_config() == config
    assert FocalCrossentropy(gamma=0.5, alpha=0.75, from_logits=True).get_config() == {
        "name": "focal_crossentropy",
        "reduction": "sum_over_batch_size",
        "gamma": 0.5,
        "alpha": 0.75,
        "from_logits": True,
    }


@pytest.mark.parametrize(
    ("make", "param"),
    [
        (lambda: Huber(delta=0.0), "delta"),
        (lambda: Huber(delta=float("inf")), "delta"),
        (lambda: FocalCrossentropy(gamma=-1.0), "gamma"),
        (lambda: FocalCrossentropy(alpha=1.5), "alpha"),
        (lambda: FocalCrossentropy(from_logits=1), "from_logits"),
        (lambda: Poly1Crossentropy(epsilon=-1.5), "epsilon"),
        (lambda: Poly1Crossentropy(mode="softmax"), "mode"),
    ],
)
def test_classic_invalid_parameters(make, param):
    with pytest.raises(ConfigError, match=f"`{param}`"):
        make()
