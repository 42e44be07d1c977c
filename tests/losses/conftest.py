"""Fixtures of the loss tests: a backend-neutral gradient, the dtypes under test, float32 tolerances and NumPy
references."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import pytest
from keras import ops

BACKEND = keras.backend.backend()
if BACKEND == "torch":
    import torch

    # One intra-op thread per test process: the suite runs in two processes on two cores, and the losses' small
    # tensors ran 3-4x slower with two threads each competing for them.
    torch.set_num_threads(1)
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
    if BACKEND == "torch":
        import torch

        tensor = ops.convert_to_tensor(x).requires_grad_(True)  # on Keras's device, in x's dtype
        value = torch.sum(fn(tensor))
        (gradient,) = torch.autograd.grad(value, tensor)
        return ops.convert_to_numpy(value), ops.convert_to_numpy(gradient)
    pytest.skip(f"no gradient helper for the {BACKEND} backend")


@functools.cache
def float64_defect() -> str | None:
    """Why the active backend cannot compute float64 through `keras.ops`, or None where it can.

    Keras's torch backend computes ``ops.minimum`` and ``ops.maximum`` of float64 tensors in float32 (its
    ``result_type`` maps float64 to float32 on every backend but TensorFlow) and turns a Python float given to
    ``ops.where`` into a float32 tensor, so float64 results of `general_loss` and `log_partition` (values and
    gradients) have float32's rounding and range there; some come back as float32 tensors. Probed, so that the
    float64 tests run again on a Keras that keeps float64.
    """
    if BACKEND != "torch":
        return None
    x = ops.convert_to_tensor(np.full(1, 0.1), "float64")
    kept = keras.backend.standardize_dtype(ops.minimum(x, x).dtype) == "float64"
    exact = float(ops.convert_to_numpy(ops.where(x > 0.0, 0.1, x))[0]) == 0.1
    defects = [
        *([] if kept else ["ops.minimum/ops.maximum of float64 tensors compute in float32 "
                           "(keras.backend.result_type maps float64 to float32 except on TensorFlow)"]),
        *([] if exact else ["ops.where makes a Python float a float32 tensor"]),
    ]
    if not defects:
        return None
    return (
        f"float64 on Keras {keras.__version__}'s torch backend: {' and '.join(defects)}, so float64 losses get "
        "float32's rounding and range"
    )


@pytest.fixture(params=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> Any:
    """The dtype under test; on JAX float64 needs x64, switched on for the test and restored after."""
    if request.param == "float64":
        with _float64():
            yield request.param
    else:
        yield request.param


@pytest.fixture
def x64() -> Any:
    """float64 on every backend for one test (JAX needs x64 switched on; restored after)."""
    with _float64():
        yield


@contextlib.contextmanager
def _float64() -> Iterator[None]:
    reason = float64_defect()
    if reason:
        pytest.skip(reason)
    if BACKEND != "jax":
        yield
        return
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


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
