"""Confidence-weighted BCE, error-weighted MSE and class-weighted cross-entropy against NumPy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from aloss_tune.errors import ConfigError
from aloss_tune.losses import (
    ClassBCE,
    ClassCCE,
    ConfidenceBCE,
    ErrorWeightedMSE,
    class_cce,
    confidence_bce,
    error_weighted_mse,
)

# --------------------------------------------------------------------------------------- confidence BCE


def np_confidence_bce(y, y_pred, clip_min, clip_max, from_logits, ref):
    z = np.asarray(y_pred, np.float64)
    p = ref.sigmoid(z) if from_logits else z
    p = np.clip(p, ref.EPS, 1 - ref.EPS)
    p_true = y * p + (1 - y) * (1 - p)
    weight = np.clip(1 / p_true, clip_min, clip_max)
    return weight, (weight * ref.bce(y, y_pred, from_logits)).mean(axis=-1)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize(("clip_min", "clip_max"), [(1.0, 10.0), (2.0, 3.0), (0.5, 1.0)])
def test_confidence_bce_matches_numpy(clip_min, clip_max, from_logits, rng, tol, ref, values):
    y = rng.integers(0, 2, size=(32, 3)).astype("float32")
    y_pred = rng.normal(scale=3, size=(32, 3)) if from_logits else rng.uniform(1e-3, 1 - 1e-3, size=(32, 3))
    y_pred = y_pred.astype("float32")
    _, expected = np_confidence_bce(y, y_pred, clip_min, clip_max, from_logits, ref)
    ours = values(ConfidenceBCE(clip_min=clip_min, clip_max=clip_max, from_logits=from_logits), y, y_pred)
    np.testing.assert_allclose(ours, expected, **tol)


def test_confidence_bce_treats_logits_and_probabilities_alike(rng):
    # The seed applied sigmoid to probabilities; here the same prediction in either form gives one loss.
    y = rng.integers(0, 2, size=(64, 1)).astype("float32")
    z = rng.normal(scale=2, size=(64, 1)).astype("float32")
    p = (1 / (1 + np.exp(-z.astype(np.float64)))).astype("float32")
    from_logits = np.asarray(confidence_bce(y, z, 1.0, 10.0, from_logits=True))
    from_probs = np.asarray(confidence_bce(y, p, 1.0, 10.0, from_logits=False))
    np.testing.assert_allclose(from_logits, from_probs, rtol=1e-4, atol=1e-6)


def test_confidence_bce_weight_is_clipped_inverse_confidence(values):
    y = np.ones((3, 1), dtype="float32")
    p = np.array([[0.8], [0.25], [0.01]], dtype="float32")
    loss = values(ConfidenceBCE(clip_min=1.0, clip_max=10.0), y, p)
    weights = loss / -np.log(p[:, 0].astype(np.float64))
    np.testing.assert_allclose(weights, [1.25, 4.0, 10.0], rtol=1e-5)


@pytest.mark.parametrize("from_logits", [False, True])
def test_confidence_bce_gradient_treats_weight_as_constant(from_logits, grad, rng, ref):
    y = rng.integers(0, 2, size=(8, 2)).astype("float32")
    y_pred = rng.normal(size=(8, 2)) if from_logits else rng.uniform(0.05, 0.95, size=(8, 2))
    y_pred = y_pred.astype("float32")
    _, g = grad(lambda t: confidence_bce(y, t, 1.0, 10.0, from_logits), y_pred)
    weight, _ = np_confidence_bce(y, y_pred, 1.0, 10.0, from_logits, ref)
    z = y_pred.astype(np.float64)
    d_bce = ref.sigmoid(z) - y if from_logits else (z - y) / (z * (1 - z))
    np.testing.assert_allclose(g, weight * d_bce / 2, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------------------------- error MSE


@pytest.mark.parametrize(("clip_min", "clip_max"), [(0.0, 5.0), (0.5, 1.0), (2.0, 2.0)])
def test_error_mse_matches_numpy(clip_min, clip_max, rng, tol, values):
    y = rng.normal(size=(16, 4)).astype("float32")
    y_pred = (y + 2 * rng.normal(size=(16, 4))).astype("float32")
    e = y.astype(np.float64) - y_pred
    expected = ((1 + np.clip(np.abs(e), clip_min, clip_max)) * e**2).mean(axis=-1)
    np.testing.assert_allclose(
        values(ErrorWeightedMSE(clip_min=clip_min, clip_max=clip_max), y, y_pred), expected, **tol
    )


def test_error_mse_weights_each_element_not_the_averaged_mse():
    # One sample, errors 0 and 3: per element (1 + 0) * 0 + (1 + 3) * 9 = 36, mean 18. Weighting an
    # already averaged MSE (the seed's mistake) would give (1 + 1.5) * 4.5 = 11.25.
    out = np.asarray(
        error_weighted_mse(np.zeros((1, 2), "float32"), np.array([[0.0, 3.0]], "float32"), 0.0, 5.0)
    )
    np.testing.assert_allclose(out, [18.0], rtol=1e-6)


def test_error_mse_gradient_treats_weight_as_constant(grad, rng):
    y = rng.normal(size=(6, 3)).astype("float32")
    y_pred = (y + 3 * rng.normal(size=(6, 3))).astype("float32")
    _, g = grad(lambda t: error_weighted_mse(y, t, 0.0, 2.0), y_pred)
    e = y.astype(np.float64) - y_pred
    np.testing.assert_allclose(g, -2 * (1 + np.clip(np.abs(e), 0.0, 2.0)) * e / 3, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------- class-weighted BCE


@pytest.mark.parametrize("from_logits", [False, True])
def test_class_bce_matches_numpy(from_logits, rng, tol, ref, values):
    y = rng.integers(0, 2, size=(32, 2)).astype("float32")
    y_pred = rng.normal(size=(32, 2)) if from_logits else rng.uniform(1e-3, 1 - 1e-3, size=(32, 2))
    y_pred = y_pred.astype("float32")
    log_p, log_q = ref.binary_log_probs(y_pred, from_logits)
    expected = -(4.0 * y * log_p + 0.5 * (1 - y) * log_q).mean(axis=-1)
    ours = values(ClassBCE(pos_weight=4.0, neg_weight=0.5, from_logits=from_logits), y, y_pred)
    np.testing.assert_allclose(ours, expected, **tol)


def test_class_bce_with_unit_weights_is_keras_bce(rng, values):
    y = rng.integers(0, 2, size=(32, 1)).astype("float32")
    z = rng.normal(scale=4, size=(32, 1)).astype("float32")
    np.testing.assert_allclose(
        values(ClassBCE(from_logits=True), y, z),
        np.asarray(keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)(y, z)),
        rtol=1e-5,
        atol=1e-6,
    )


# --------------------------------------------------------------------------------- class-weighted CCE


@pytest.mark.parametrize("from_logits", [False, True])
def test_class_cce_matches_numpy(from_logits, rng, tol, ref, values):
    weights = [0.5, 2.0, 3.0]
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=24)]
    logits = rng.normal(scale=2, size=(24, 3))
    log_probs = ref.log_softmax(logits)
    y_pred = (logits if from_logits else np.exp(log_probs)).astype("float32")
    expected = -(np.array(weights) * y * log_probs).sum(axis=-1)
    ours = values(ClassCCE(class_weights=weights, from_logits=from_logits), y, y_pred)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_class_cce_without_weights_is_keras_cce(rng, values):
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, size=16)]
    p = rng.dirichlet(np.ones(4), size=16).astype("float32")
    np.testing.assert_allclose(
        values(ClassCCE(), y, p),
        np.asarray(keras.losses.CategoricalCrossentropy(reduction=None)(y, p)),
        rtol=1e-5,
    )


def test_class_cce_wrong_number_of_weights_fails_at_first_call():
    loss = ClassCCE(class_weights=[1.0, 2.0])  # valid on its own: the data decide the number of classes
    y = np.eye(3, dtype="float32")
    with pytest.raises(ConfigError, match=r"`class_weights`.*\(3\).*2 weights"):
        loss(y, y)


def test_class_cce_wrong_number_of_weights_fails_in_fit():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss=ClassCCE(class_weights=[1.0, 2.0, 3.0, 4.0]))
    x = np.zeros((4, 2), dtype="float32")
    with pytest.raises(ConfigError, match="class_weights"):
        model.fit(x, np.eye(3, dtype="float32")[[0, 1, 2, 0]], epochs=1, verbose=0)


def test_class_cce_refuses_integer_labels():
    with pytest.raises(ValueError, match="one-hot"):
        class_cce(np.array([0, 1, 2]), np.eye(3, dtype="float32"))


def test_class_cce_accepts_numpy_weights_and_stores_a_list():
    loss = ClassCCE(class_weights=np.array([1.0, 2.0]))
    assert loss.get_config()["class_weights"] == [1.0, 2.0]


# ---------------------------------------------------------------------------------------------- config


def test_weighted_configs_are_exact_and_round_trip():
    cases = {
        ConfidenceBCE(clip_min=2.0, clip_max=4.0, from_logits=True): {
            "clip_min": 2.0,
            "clip_max": 4.0,
            "from_logits": True,
        },
        ErrorWeightedMSE(clip_min=0.5, clip_max=1.5): {"clip_min": 0.5, "clip_max": 1.5},
        ClassBCE(pos_weight=3.0, neg_weight=0.5, from_logits=True): {
            "pos_weight": 3.0,
            "neg_weight": 0.5,
            "from_logits": True,
        },
        ClassCCE(class_weights=[1.0, 2.5], from_logits=True): {
            "class_weights": [1.0, 2.5],
            "from_logits": True,
        },
    }
    for loss, params in cases.items():
        config = loss.get_config()
        assert config == {"name": loss.name, "reduction": "sum_over_batch_size", **params}
        assert type(loss).from_config(config).get_config() == config


@pytest.mark.parametrize(
    ("make", "params"),
    [
        (lambda: ConfidenceBCE(clip_min=0.0), ["clip_min"]),
        (lambda: ConfidenceBCE(clip_min=5.0, clip_max=2.0), ["clip_min", "clip_max", "5", "2"]),
        (lambda: ConfidenceBCE(clip_max=float("nan")), ["clip_max", "nan"]),
        (lambda: ErrorWeightedMSE(clip_min=-1.0), ["clip_min", "-1.0"]),
        (lambda: ErrorWeightedMSE(clip_min=3.0, clip_max=1.0), ["clip_min", "clip_max"]),
        (lambda: ClassBCE(pos_weight=0.0), ["pos_weight"]),
        (lambda: ClassBCE(neg_weight="1"), ["neg_weight", "'1'"]),
        (lambda: ClassCCE(class_weights=[]), ["class_weights"]),
        (lambda: ClassCCE(class_weights=[1.0, -2.0]), ["class_weights[1]", "-2.0"]),
        (lambda: ClassCCE(class_weights=[1.0, float("inf")]), ["class_weights[1]", "inf"]),
        (lambda: ClassCCE(class_weights="balanced"), ["class_weights", "'balanced'"]),
        (lambda: ClassCCE(from_logits="no"), ["from_logits"]),
    ],
)
def test_weighted_invalid_parameters(make, params):
    with pytest.raises(ConfigError) as info:
        make()
    for text in params:
        assert text in str(info.value)
