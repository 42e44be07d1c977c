"""The label-noise losses (GCE, SCE, active-passive, bootstrapping) against Keras and float64 NumPy.

References are independent of the implementation: probabilities and ``(1 - p^q) / q`` are computed directly
in float64 (the implementation uses log-probabilities, ``exprel`` and ``expm1``), gradients are compared with
central differences of those references, and GCE is compared with Keras's own
``CategoricalGeneralizedCrossEntropy`` (integer labels, probabilities, ``q`` in (0, 1)).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from aloss_tune.errors import ConfigError
from aloss_tune.losses import (
    ActivePassiveLoss,
    BootstrappedCrossentropy,
    GeneralizedCrossentropy,
    SymmetricCrossentropy,
    active_passive_loss,
    bootstrapped_crossentropy,
    generalized_crossentropy,
)

B, C = 6, 4
# Label layouts with logits and probabilities: every layout once, both input kinds for each task.
COMBINATIONS = [("one_hot", False), ("one_hot", True), ("sparse", True), ("sparse_column", False),
                ("binary", False), ("binary", True), ("binary_column", True), ("multi_label", False)]


# ------------------------------------------------------------------------------------ NumPy references
def np_distribution(ref: SimpleNamespace, y: np.ndarray, y_pred: np.ndarray, from_logits: bool, binary: bool):
    """float64 ``(Y, P, log P)`` over a trailing class axis, as the module's conventions define them."""
    y_pred = np.asarray(y_pred, np.float64)
    y = np.asarray(y, np.float64)
    if binary:
        y = y.reshape(y_pred.shape)
        log_p1, log_p0 = ref.binary_log_probs(y_pred, from_logits)
        log_p, y = np.stack([log_p0, log_p1], -1), np.stack([1 - y, y], -1)
    else:
        if y.shape != y_pred.shape:
            y = np.eye(y_pred.shape[-1])[y.reshape(-1).astype(int)]
        if from_logits:
            log_p = ref.log_softmax(y_pred)
        else:
            log_p = np.log(np.clip(y_pred / y_pred.sum(-1, keepdims=True), ref.EPS, 1 - ref.EPS))
    return y, np.exp(log_p), log_p


def np_active(name: str, y, p, log_p, q: float = 0.7, gamma: float = 0.5):
    if name in ("ce", "nce") or (name in ("gce", "ngce") and q == 0):
        per_class = -log_p
    elif name in ("gce", "ngce"):
        per_class = (1 - p**q) / q
    else:
        per_class = -np.clip(1 - p, 1e-7, 1 - 1e-7) ** gamma * log_p  # keras.config.epsilon()
    of_label = (y * per_class).sum(-1)
    return of_label / per_class.sum(-1) if name.startswith("n") else of_label


def np_passive(name: str, y, p, log_p, log_clip: float = -4.0, min_prob: float = 1e-7):
    if name == "mae":
        return 1 - (y * p).sum(-1)
    if name == "rce":
        return -(p * np.log(np.clip(y, math.exp(log_clip), 1.0))).sum(-1)
    z = -math.log(min_prob) + np.log(np.clip(p, min_prob, 1.0))
    return 1 - (y * z).sum(-1) / z.sum(-1)


def np_bootstrap(y, p, log_p, beta: float, target: str):
    guess = p if target == "soft" else np.eye(p.shape[-1])[p.argmax(-1)]
    return -((beta * y + (1 - beta) * guess) * log_p).sum(-1)


def np_loss(ref: SimpleNamespace, loss: keras.losses.Loss, y: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The float64 per-sample reference of ``loss`` (one of this module's classes, any parameters)."""
    c = loss.get_config()
    binary = c["mode"] == "binary" or (c["mode"] == "auto" and np.shape(y_pred)[-1] == 1)
    y, p, log_p = np_distribution(ref, y, y_pred, c["from_logits"], binary)
    if isinstance(loss, GeneralizedCrossentropy):
        out = np_active("gce", y, p, log_p, q=c["q"])
    elif isinstance(loss, SymmetricCrossentropy):
        out = c["alpha"] * np_active("ce", y, p, log_p) + c["beta"] * np_passive("rce", y, p, log_p, c["log_clip"])
    elif isinstance(loss, ActivePassiveLoss):
        out = (c["alpha"] * np_active(c["active"], y, p, log_p, c["q"], c["gamma"])
               + c["beta"] * np_passive(c["passive"], y, p, log_p, c["log_clip"], c["min_prob"]))
    else:
        out = np_bootstrap(y, p, log_p, c["beta"], c["target"])
    return out.mean(-1) if binary else out


def make_batch(layout: str, from_logits: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels as Keras hands them to a loss (floats, also for integer labels) and predictions."""
    rng = np.random.default_rng(seed)
    outputs = {"binary": 1, "binary_column": 1, "multi_label": 3}.get(layout, C)
    z = rng.normal(scale=2.0, size=(B, outputs))
    if layout in ("one_hot", "sparse", "sparse_column"):
        labels = rng.permutation(np.arange(B) % C)
        y = {"one_hot": np.eye(C)[labels], "sparse": labels, "sparse_column": labels[:, None]}[layout]
        probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    else:
        y = rng.integers(0, 2, size=(B, outputs))
        y = y[:, 0] if layout == "binary" else y
        probs = 1 / (1 + np.exp(-z))
    return y.astype("float32"), (z if from_logits else probs).astype("float32")


def with_mode(loss: keras.losses.Loss, layout: str) -> keras.losses.Loss:
    """``loss`` with ``mode="binary"`` for several sigmoid outputs (``auto`` would take them as categorical)."""
    if layout != "multi_label":
        return loss
    return type(loss).from_config({**loss.get_config(), "mode": "binary"})


# One non-default configuration per loss and per sub-loss (and the defaults).
LOSSES = {
    "gce": GeneralizedCrossentropy(),
    "gce_q0.3": GeneralizedCrossentropy(q=0.3),
    "gce_q0": GeneralizedCrossentropy(q=0.0),
    "gce_q1": GeneralizedCrossentropy(q=1.0),
    "sce": SymmetricCrossentropy(),
    "sce_custom": SymmetricCrossentropy(alpha=0.5, beta=2.0, log_clip=-6.0),
    "nce_rce": ActivePassiveLoss(),
    "ce_mae": ActivePassiveLoss(active="ce", passive="mae", alpha=0.5, beta=3.0),
    "gce_nnce": ActivePassiveLoss(active="gce", passive="nnce", q=0.4, min_prob=1e-4),
    "ngce_mae": ActivePassiveLoss(active="ngce", passive="mae", q=0.1, alpha=2.0, beta=0.5),
    "focal_rce": ActivePassiveLoss(active="focal", passive="rce", gamma=2.0, log_clip=-2.0),
    "nfocal_rce": ActivePassiveLoss(active="nfocal", passive="rce", gamma=0.5, alpha=10.0, beta=0.1),
    "anl_ce": ActivePassiveLoss(active="nce", passive="nnce", alpha=5.0, beta=5.0),
    "bootstrap_soft": BootstrappedCrossentropy(),
    "bootstrap_hard": BootstrappedCrossentropy(target="hard"),
    "bootstrap_soft_0.6": BootstrappedCrossentropy(beta=0.6),
}
# For what Keras does the same for every loss class (sample weights, reduction) or every loss (alignment).
ONE_PER_CLASS = ("gce_q0.3", "sce_custom", "nfocal_rce", "bootstrap_hard")


# ------------------------------------------------------------------------------------------ the values
@pytest.mark.parametrize(("layout", "from_logits"), COMBINATIONS, ids=[f"{a}-{'logits' if b else 'probs'}"
                                                                      for a, b in COMBINATIONS])
def test_every_loss_matches_its_numpy_closed_form(layout, from_logits, values, tol, ref):
    y, y_pred = make_batch(layout, from_logits)
    for case, base in LOSSES.items():
        loss = with_mode(type(base).from_config({**base.get_config(), "from_logits": from_logits}), layout)
        ours = values(loss, y, y_pred)
        assert ours.shape == (B,), (case, ours.shape)
        np.testing.assert_allclose(ours, np_loss(ref, loss, y, y_pred), **tol, err_msg=case)


@pytest.mark.parametrize("q", [0.2, 0.5, 0.8])
def test_gce_matches_keras(q, values):
    # Keras's convention: integer labels of shape (B,) and probabilities, used as they are (no clipping).
    y, probs = make_batch("sparse", from_logits=False)
    theirs = keras.losses.CategoricalGeneralizedCrossEntropy(q=q, reduction=None)(y.astype("int32"), probs)
    ours = values(GeneralizedCrossentropy(q=q), y, probs)
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-5, atol=1e-6)
    # And the same loss of one-hot labels and of the logits.
    logits = np.log(probs)
    np.testing.assert_allclose(values(GeneralizedCrossentropy(q=q, from_logits=True), np.eye(C)[y.astype(int)],
                                      logits), np.asarray(theirs), rtol=1e-5, atol=1e-6)


def test_sample_weights_and_reduction(tol, ref):
    y, y_pred = make_batch("one_hot", from_logits=True)
    weights = np.linspace(0.0, 2.0, B).astype("float32")
    for case in ONE_PER_CLASS:
        base = LOSSES[case]
        loss = type(base).from_config({**base.get_config(), "from_logits": True})
        expected = np_loss(ref, loss, y, y_pred)
        np.testing.assert_allclose(float(loss(y, y_pred, sample_weight=weights)), (weights * expected).sum() / B,
                                   **tol, err_msg=case)
        assert float(loss(y, y_pred, sample_weight=np.zeros(B, "float32"))) == 0.0
        summed = type(base).from_config({**loss.get_config(), "reduction": "sum"})
        np.testing.assert_allclose(float(summed(y, y_pred)), expected.sum(), **tol, err_msg=case)


def test_binary_labels_of_shape_b_are_aligned_not_broadcast(values):
    # (B,) labels against (B, 1) outputs would broadcast to (B, B) and give every sample the same mean.
    y, y_pred = make_batch("binary", from_logits=True)
    for case in ONE_PER_CLASS:
        loss = LOSSES[case]
        flat = values(type(loss).from_config({**loss.get_config(), "from_logits": True}), y, y_pred)
        column = values(type(loss).from_config({**loss.get_config(), "from_logits": True}), y[:, None], y_pred)
        np.testing.assert_allclose(flat, column, rtol=1e-6, err_msg=case)
        assert np.ptp(flat) > 0, case


# ------------------------------------------------------------------------------------------ exact limits
def test_gce_limits_are_exact(values, grad, tol, ref):
    y, logits = make_batch("one_hot", from_logits=True)
    _, p, log_p = np_distribution(ref, y, logits, True, False)
    ce = -(y * log_p).sum(-1)
    for q in (0.0, 1e-40, 1e-12, 1e-6):  # q = 0 is the cross-entropy itself, q -> 0 its limit, never 0/0
        np.testing.assert_allclose(values(GeneralizedCrossentropy(q=q, from_logits=True), y, logits), ce, **tol)
    mae = 1 - (y * p).sum(-1)
    np.testing.assert_allclose(values(GeneralizedCrossentropy(q=1.0, from_logits=True), y, logits), mae, **tol)
    # The gradients meet too: d CE / dz = p - y.
    _, g0 = grad(lambda z: generalized_crossentropy(y, z, 0.0, True), logits)
    _, g_small = grad(lambda z: generalized_crossentropy(y, z, 1e-9, True), logits)
    np.testing.assert_allclose(g0, p - y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_small, p - y, rtol=1e-5, atol=1e-6)
    # NGCE at q -> 0 is NCE.
    nce = values(ActivePassiveLoss(active="nce", passive="mae", beta=0.0, from_logits=True), y, logits)
    for q in (0.0, 1e-9):
        ngce = values(ActivePassiveLoss(active="ngce", passive="mae", q=q, beta=0.0, from_logits=True), y, logits)
        np.testing.assert_allclose(ngce, nce, **tol)


def test_rce_of_one_hot_labels_is_minus_a_times_one_minus_p(values, tol, ref):
    y, logits = make_batch("one_hot", from_logits=True)
    _, p, _ = np_distribution(ref, y, logits, True, False)
    for log_clip in (-4.0, math.log(1e-4), -1e3):
        rce = values(SymmetricCrossentropy(alpha=0.0, beta=1.0, log_clip=log_clip, from_logits=True), y, logits)
        np.testing.assert_allclose(rce, -log_clip * (1 - (y * p).sum(-1)), **tol)


def test_bootstrap_at_beta_one_is_cross_entropy_and_soft_keeps_the_entropy_gradient(values, grad, tol, ref):
    y, logits = make_batch("one_hot", from_logits=True)
    _, p, log_p = np_distribution(ref, y, logits, True, False)
    ce = -(y * log_p).sum(-1)
    for target in ("soft", "hard"):
        np.testing.assert_allclose(values(BootstrappedCrossentropy(beta=1.0, target=target, from_logits=True),
                                          y, logits), ce, **tol)
    # beta = 0, soft: the entropy of the prediction, differentiated through the target (minimum entropy).
    entropy = -(p * log_p).sum(-1)
    np.testing.assert_allclose(values(BootstrappedCrossentropy(beta=0.0, from_logits=True), y, logits), entropy,
                               **tol)
    _, g = grad(lambda z: bootstrapped_crossentropy(y, z, 0.0, "soft", True), logits)
    expected = -p * (log_p - (p * log_p).sum(-1, keepdims=True))  # d H(softmax(z)) / dz
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)
    # beta = 0, hard: cross-entropy against the argmax, which carries no gradient.
    _, g = grad(lambda z: bootstrapped_crossentropy(y, z, 0.0, "hard", True), logits)
    np.testing.assert_allclose(g, p - np.eye(C)[p.argmax(-1)], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- gradients
def numeric_gradient(fn, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    x = x.astype(np.float64)
    out = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = h
        out[index] = (fn(x + step) - fn(x - step)) / (2 * h)
    return out


@pytest.mark.parametrize("layout", ["one_hot", "binary"])
def test_gradients_match_central_differences_of_the_references(layout, grad, ref):
    y, logits = make_batch(layout, from_logits=True, seed=3)
    for case, base in LOSSES.items():
        loss = type(base).from_config({**base.get_config(), "from_logits": True, "reduction": None})
        _, ours = grad(lambda z, loss=loss: loss(y, z), logits)
        expected = numeric_gradient(lambda z, loss=loss: np_loss(ref, loss, y, z).sum(), logits)
        np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=2e-5, err_msg=case)


# Every parameter at the ends of its domain (open ends approached), each with every sub-loss using it.
ENDS = [
    *(GeneralizedCrossentropy(q=q) for q in (0.0, 1.0)),
    SymmetricCrossentropy(alpha=0.0, beta=1.0, log_clip=-1e-6),
    SymmetricCrossentropy(alpha=1.0, beta=0.0, log_clip=-1e4),
    SymmetricCrossentropy(alpha=1e6, beta=1e6),
    *(ActivePassiveLoss(active=a, passive="mae", q=q, beta=0.0) for a in ("gce", "ngce") for q in (0.0, 1.0)),
    *(ActivePassiveLoss(active=a, passive="mae", gamma=g, beta=0.0) for a in ("focal", "nfocal")
      for g in (0.0, 50.0)),
    *(ActivePassiveLoss(active="ce", passive="rce", log_clip=a, alpha=0.0) for a in (-1e-6, -1e4)),
    *(ActivePassiveLoss(active="nce", passive="nnce", min_prob=m, alpha=0.0) for m in (1e-30, 0.999)),
    ActivePassiveLoss(active="nce", passive="mae"),
    *(BootstrappedCrossentropy(beta=b, target=t) for b in (0.0, 1.0) for t in ("soft", "hard")),
]


def certain_predictions(binary: bool, from_logits: bool) -> tuple[np.ndarray, np.ndarray]:
    """Certain predictions, right and wrong: probabilities exactly 0 and 1, or logits of +-1e4 (B samples,
    the shape of `make_batch`'s, so that JAX compiles each operation once for the whole module)."""
    big, small = (1e4, -1e4) if from_logits else (1.0, 0.0)
    if binary:
        return (np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], "float32"),
                np.array([[small], [big], [big], [small], [big], [small]], "float32"))
    y = np.eye(C, dtype="float32")[[0, 1, 2, 3, 0, 1]]
    pred = np.full((B, C), small, dtype="float32")
    pred[np.arange(B), [0, 1, 3, 0, 0, 2]] = big  # right, right, wrong, wrong, right, wrong
    return y, pred


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("binary", [False, True], ids=["categorical", "binary"])
def test_values_and_gradients_are_finite_for_certain_predictions_at_every_domain_end(binary, from_logits, grad):
    y, pred = certain_predictions(binary, from_logits)
    for base in ENDS:
        loss = type(base).from_config({**base.get_config(), "from_logits": from_logits})
        value, gradient = grad(lambda t, loss=loss: loss(y, t), pred)
        assert np.isfinite(value), (repr(loss), value)
        assert np.all(np.isfinite(gradient)), (repr(loss), gradient)


def test_normalized_losses_lie_in_the_unit_interval(values):
    rng = np.random.default_rng(7)
    y = np.eye(C, dtype="float32")[rng.integers(0, C, size=B)]
    logits = (rng.normal(size=(B, C)) * [[0.01], [1.0], [3.0], [30.0], [300.0], [1e4]]).astype("float32")
    y_cert, pred_cert = certain_predictions(False, True)
    normalized = [
        *(dict(active="nce"),),
        *(dict(active="ngce", q=q) for q in (0.0, 0.1, 0.7, 1.0)),
        *(dict(active="nfocal", gamma=g) for g in (0.0, 0.5, 5.0)),
    ]
    for params in normalized:
        loss = ActivePassiveLoss(passive="mae", beta=0.0, from_logits=True, **params)
        for y_, z in ((y, logits), (y_cert, pred_cert)):
            out = values(loss, y_, z)
            assert np.all((out >= 0) & (out <= 1 + 1e-6)), (params, out)
    for min_prob in (1e-7, 1e-3, 0.2):
        loss = ActivePassiveLoss(active="nce", passive="nnce", alpha=0.0, min_prob=min_prob, from_logits=True)
        for y_, z in ((y, logits), (y_cert, pred_cert)):
            out = values(loss, y_, z)
            assert np.all((out >= 0) & (out <= 1 + 1e-6)), (min_prob, out)
    # A certain right prediction scores 0; a certain wrong one 1 for NNCE and 1 / (C - 1) for NCE (the other
    # C - 2 wrong classes share the normalizer with the label).
    nnce = values(ActivePassiveLoss(active="nce", passive="nnce", alpha=0.0, from_logits=True), y_cert, pred_cert)
    np.testing.assert_allclose(nnce, [0.0, 0.0, 1.0, 1.0, 0.0, 1.0], atol=1e-6)
    nce = values(ActivePassiveLoss(active="nce", passive="mae", beta=0.0, from_logits=True), y_cert, pred_cert)
    np.testing.assert_allclose(nce, np.array([0, 0, 1, 1, 0, 1]) / (C - 1), atol=1e-6)


def test_float16_inputs_give_finite_float32_results(tol):
    y, probs = make_batch("one_hot", from_logits=False)
    _, logits = make_batch("one_hot", from_logits=True)
    for pred, from_logits in ((probs, False), (logits, True)):
        half = pred.astype("float16")
        for fn in (generalized_crossentropy, active_passive_loss, bootstrapped_crossentropy):
            out = fn(y.astype("float16"), half, from_logits=from_logits)
            assert keras.backend.standardize_dtype(out.dtype) == "float32"
            reference = fn(y, half.astype("float32"), from_logits=from_logits)
            np.testing.assert_allclose(np.asarray(out), np.asarray(reference), **tol)
    y_bin, certain = certain_predictions(True, False)
    out = active_passive_loss(y_bin.astype("float16"), certain.astype("float16"), active="nfocal", passive="nnce")
    assert np.all(np.isfinite(np.asarray(out)))


# --------------------------------------------------------------------------------------- input errors
def test_shapes_that_cannot_be_meant_are_refused():
    probs = np.full((4, 3), 1 / 3, "float32")
    with pytest.raises(ValueError, match=r"categorical mode needs the classes .* y_pred.shape=\(4, 1\)"):
        generalized_crossentropy(np.zeros(4), probs[:, :1], mode="categorical")
    with pytest.raises(ValueError, match=r"binary mode needs one label per output, but got y_true.shape=\(4, 3\)"):
        generalized_crossentropy(np.eye(3)[[0, 1, 2, 0]], probs[:, :1])
    with pytest.raises(ValueError, match=r"`y_true` must be one-hot labels of y_pred's shape \(4, 3\)"):
        generalized_crossentropy(np.zeros((4, 2)), probs)


INVALID = [
    (lambda: GeneralizedCrossentropy(q=1.5), "gce: `q` must be in [0, 1], but got q=1.5."),
    (lambda: GeneralizedCrossentropy(q=-0.1), "gce: `q` must be in [0, 1], but got q=-0.1."),
    (lambda: GeneralizedCrossentropy(mode="softmax"),
     "gce: `mode` must be one of auto, binary, categorical, but got mode='softmax'."),
    (lambda: GeneralizedCrossentropy(from_logits="yes"), "gce: `from_logits` must be true or false"),
    (lambda: SymmetricCrossentropy(alpha=-1.0), "sce: `alpha` must be >= 0 and finite, but got alpha=-1.0."),
    (lambda: SymmetricCrossentropy(log_clip=0.0), "sce: `log_clip` must be < 0 and finite, but got log_clip=0.0."),
    (lambda: SymmetricCrossentropy(alpha=0.0, beta=0.0), "sce: `alpha` and `beta` must not both be 0"),
    (lambda: ActivePassiveLoss(active="mae"),
     "active_passive: `active` must be one of ce, nce, gce, ngce, focal, nfocal, but got active='mae'."),
    (lambda: ActivePassiveLoss(passive="nce"),
     "active_passive: `passive` must be one of mae, rce, nnce, but got passive='nce'."),
    (lambda: ActivePassiveLoss(gamma=math.inf), "active_passive: `gamma` must be >= 0 and finite, but got"),
    (lambda: ActivePassiveLoss(min_prob=0.0), "active_passive: `min_prob` must be in (0, 1), but got min_prob=0.0."),
    (lambda: ActivePassiveLoss(beta=math.nan), "active_passive: `beta` must be >= 0 and finite, but got beta=nan."),
    (lambda: BootstrappedCrossentropy(beta=1.2), "bootstrap: `beta` must be in [0, 1], but got beta=1.2."),
    (lambda: BootstrappedCrossentropy(target="argmax"),
     "bootstrap: `target` must be one of soft, hard, but got target='argmax'."),
]


@pytest.mark.parametrize(("make", "message"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_parameters_name_the_parameter_value_and_domain(make, message):
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value).startswith(message), str(info.value)


# -------------------------------------------------------------------------------------- configs, saving
def test_configs_are_exact_and_round_trip():
    expected = {
        GeneralizedCrossentropy(q=0.3, from_logits=True): {"name": "generalized_crossentropy", "q": 0.3,
                                                          "from_logits": True, "mode": "auto"},
        SymmetricCrossentropy(alpha=6.0, beta=0.1, log_clip=-9.0, mode="categorical"): {
            "name": "symmetric_crossentropy", "alpha": 6.0, "beta": 0.1, "log_clip": -9.0,
            "from_logits": False, "mode": "categorical"},
        ActivePassiveLoss(active="ngce", passive="nnce", alpha=10.0, beta=0.1, q=0.1, mode="binary"): {
            "name": "active_passive", "active": "ngce", "passive": "nnce", "alpha": 10.0, "beta": 0.1, "q": 0.1,
            "gamma": 0.5, "log_clip": -4.0, "min_prob": 1e-7, "from_logits": False, "mode": "binary"},
        BootstrappedCrossentropy(target="hard"): {"name": "bootstrapped_crossentropy", "beta": 0.8,
                                                  "target": "hard", "from_logits": False, "mode": "auto"},
    }
    for loss, config in expected.items():
        assert loss.get_config() == {**config, "reduction": "sum_over_batch_size"}
        rebuilt = type(loss).from_config(loss.get_config())
        assert type(rebuilt) is type(loss) and rebuilt.get_config() == loss.get_config()
        # (Keras's own serialization, by registered name, is what the `.keras` files below go through.)
    assert BootstrappedCrossentropy().beta == 0.95


# One per class, on the task and labels each is most often used with.
FIT_CASES = {
    "gce_binary": (GeneralizedCrossentropy(q=0.7), "binary", False),
    "sce_sparse": (SymmetricCrossentropy(alpha=0.1, beta=1.0, from_logits=True), "sparse", True),
    "nfocal_nnce_one_hot": (ActivePassiveLoss(active="nfocal", passive="nnce", gamma=0.5), "one_hot", False),
    "bootstrap_hard_one_hot": (BootstrappedCrossentropy(target="hard", from_logits=True), "one_hot", True),
}


def _head(layout: str, from_logits: bool, name: str | None = None) -> keras.layers.Layer:
    units = 1 if layout == "binary" else C
    activation = None if from_logits else ("sigmoid" if units == 1 else "softmax")
    return keras.layers.Dense(units, activation=activation, name=name)


def _model(layout: str, from_logits: bool) -> keras.Model:
    return keras.Sequential([keras.Input((5,)), _head(layout, from_logits)])


def _data(layout: str, from_logits: bool, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 5)).astype("float32")
    labels = np.argmax(x[:, :C], axis=1) if layout != "binary" else (x[:, 0] > 0).astype(int)
    y = np.eye(C)[labels] if layout == "one_hot" else labels
    return x, y.astype("float32")


def test_one_fit_step_under_jit_compile_and_mixed_float16(mixed_float16):
    # One model with one output per case, each trained by its own loss: one compilation for all four (a first
    # torch.compile of a training step costs 10-30 CPU seconds).
    inputs = keras.Input((5,))
    outputs, losses, targets = [], {}, {}
    for case, (loss, layout, from_logits) in sorted(FIT_CASES.items()):
        x, targets[case] = _data(layout, from_logits)  # the same inputs for every layout
        outputs.append(_head(layout, from_logits, name=case)(inputs))
        losses[case] = loss
    model = keras.Model(inputs, outputs)
    heads = {case: model.get_layer(case) for case in FIT_CASES}
    assert all(head.compute_dtype == "float16" for head in heads.values())
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses, jit_compile=True)
    before = {case: [np.array(w) for w in head.get_weights()] for case, head in heads.items()}
    history = model.fit(x, targets, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    for case, head in heads.items():
        assert np.isfinite(history.history[f"{case}_loss"][-1]), case
        after = head.get_weights()
        assert any(not np.array_equal(a, np.array(b)) for a, b in zip(before[case], after, strict=True)), case


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_a_keras_file_reloads_with_the_loss(case, tmp_path: Path):
    loss, layout, from_logits = FIT_CASES[case]
    x, y = _data(layout, from_logits)
    model = _model(layout, from_logits)
    model.compile(optimizer="adam", loss=loss, run_eagerly=True)  # tracing would dominate the test's time
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # an optimizer with state, saved and restored with it
    value = model.evaluate(x, y, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")  # no custom_objects: the class is registered
    assert type(loaded.loss) is type(loss) and loaded.loss.get_config() == loss.get_config()
    loaded.run_eagerly = True
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), value, rtol=1e-6)

