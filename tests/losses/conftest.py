"""Fixtures of the loss tests: a backend-neutral gradient, float32 tolerances and NumPy references."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
EPS = 1e-7  # keras.config.epsilon(), the documented probability clip for float32


def value_and_grad(fn: Callable[[Any], Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sum(fn(x)), d sum(fn(x)) / dx)`` as NumPy arrays, on the active Keras backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            value = tf.reduce_sum(fn(tensor))
        return np.asarray(value), np.asarray(tape.gradient(value, tensor))
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        value, gradient = jax.value_and_grad(lambda t: jnp.sum(fn(t)))(jnp.asarray(x))
        return np.asarray(value), np.asarray(gradient)
    pytest.skip(f"no gradient helper for the {BACKEND} backend")


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(log_sigmoid(z))


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def binary_log_probs(y_pred: np.ndarray, from_logits: bool) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(log p, log(1 - p))``: exact for logits, clipped to [EPS, 1 - EPS] for probabilities."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if from_logits:
        return log_sigmoid(y_pred), log_sigmoid(-y_pred)
    p = np.clip(y_pred, EPS, 1 - EPS)
    return np.log(p), np.log(1 - p)


def bce(y: np.ndarray, y_pred: np.ndarray, from_logits: bool) -> np.ndarray:
    """float64 element-wise binary cross-entropy."""
    log_p, log_q = binary_log_probs(y_pred, from_logits)
    return -(y * log_p + (1 - y) * log_q)


@pytest.fixture
def grad() -> Callable[[Callable[[Any], Any], np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return value_and_grad


@pytest.fixture
def tol() -> dict[str, float]:
    """float32 losses against float64 NumPy references (JAX's CPU transcendentals differ a little)."""
    return {"rtol": 2e-5 if BACKEND == "jax" else 1e-5, "atol": 1e-6}


@pytest.fixture
def ref() -> SimpleNamespace:
    """The NumPy reference helpers above, for the test modules."""
    return SimpleNamespace(
        log_sigmoid=log_sigmoid,
        sigmoid=sigmoid,
        log_softmax=log_softmax,
        binary_log_probs=binary_log_probs,
        bce=bce,
        EPS=EPS,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def per_sample(loss: keras.losses.Loss, y_true: Any, y_pred: Any) -> np.ndarray:
    """The loss's per-sample values (reduction None), as float64."""
    config = {**loss.get_config(), "reduction": None}
    return np.asarray(type(loss).from_config(config)(y_true, y_pred), dtype=np.float64)


@pytest.fixture
def values() -> Callable[[keras.losses.Loss, Any, Any], np.ndarray]:
    return per_sample
