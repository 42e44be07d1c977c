"""Dynamic alpha: the formula registry, each built-in formula against NumPy, the gradient option."""

from __future__ import annotations

import math

import numpy as np
import pytest
from keras import ops

import aloss_tune
from aloss_tune.errors import ConfigError
from aloss_tune.factories import get_factory
from aloss_tune.losses import (
    DynamicAlpha,
    FormulaParam,
    Interval,
    dynamic,
    dynamic_alpha,
    get_alpha_formula,
    list_alpha_formulas,
    register_alpha_formula,
)

EPS = 1e-7


def np_alpha(formula, e, **p):
    e = np.asarray(e, np.float64)
    if formula == "constant":
        return p["alpha_value"]
    if formula == "sigmoid_snr":
        return 1 / (1 + np.exp(-e.mean() / (p["temperature"] * (e.std() + EPS))))
    if formula == "inverse_rms":
        return (np.mean(e**2) + EPS) ** (-p["power"] / 2)
    if formula == "outlier_damping":
        a = np.abs(e)
        return 1 / (1 + p["strength"] * a.std() / (a.mean() + EPS))
    raise AssertionError(formula)


FORMULA_CASES = [
    ("constant", {"alpha_value": 2.5}),
    ("sigmoid_snr", {"temperature": 1.0}),
    ("sigmoid_snr", {"temperature": 0.3}),
    ("inverse_rms", {"power": 0.0}),
    ("inverse_rms", {"power": 1.5}),
    ("outlier_damping", {"strength": 2.0}),
]


def test_builtin_formulas_are_registered():
    assert {"constant", "sigmoid_snr", "inverse_rms", "outlier_damping"} <= set(list_alpha_formulas())
    for name in list_alpha_formulas():
        assert get_alpha_formula(name).doc  # every formula documents its meaning


@pytest.mark.parametrize(("formula", "params"), FORMULA_CASES)
def test_regression_bases_match_numpy(formula, params, rng, values):
    y = rng.normal(size=(32, 2)).astype("float32")
    y_pred = (y - 0.3 + rng.normal(size=(32, 2))).astype("float32")
    e = y.astype(np.float64) - y_pred
    alpha = np_alpha(formula, e, **params)
    for base, per in (("mse", (e**2).mean(-1)), ("mae", np.abs(e).mean(-1))):
        loss = DynamicAlpha(base=base, alpha_formula=formula, formula_params=params)
        np.testing.assert_allclose(values(loss, y, y_pred), alpha * per, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("from_logits", [False, True])
def test_bce_base_uses_probability_errors(from_logits, rng, ref, values):
    y = rng.integers(0, 2, size=(32, 1)).astype("float32")
    z = rng.normal(size=(32, 1))
    p = ref.sigmoid(z)
    y_pred = (z if from_logits else p).astype("float32")
    alpha = np_alpha("sigmoid_snr", y - p, temperature=1.0)
    expected = alpha * ref.bce(y, y_pred, from_logits).mean(-1)
    loss = DynamicAlpha(base="bce", alpha_formula="sigmoid_snr", from_logits=from_logits)
    np.testing.assert_allclose(values(loss, y, y_pred), expected, rtol=1e-4, atol=1e-6)


def test_cce_base_matches_numpy(rng, ref, values):
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=16)]
    logits = rng.normal(size=(16, 3))
    log_probs = ref.log_softmax(logits)
    alpha = np_alpha("outlier_damping", y - np.exp(log_probs), strength=1.0)
    loss = DynamicAlpha(base="cce", alpha_formula="outlier_damping", from_logits=True)
    np.testing.assert_allclose(
        values(loss, y, logits.astype("float32")), -alpha * (y * log_probs).sum(-1), rtol=1e-5, atol=1e-6
    )


def test_alpha_ignores_sample_weight_but_keras_applies_it(rng):
    y = rng.normal(size=(8, 1)).astype("float32")
    y_pred = (y + rng.normal(size=(8, 1)) + 0.5).astype("float32")
    weights = rng.uniform(0, 2, size=8).astype("float32")
    loss = DynamicAlpha(base="mse", alpha_formula="sigmoid_snr")
    per = np.asarray(dynamic_alpha(y, y_pred, "mse", "sigmoid_snr"))
    np.testing.assert_allclose(
        float(loss(y, y_pred, sample_weight=weights)), (per * weights).mean(), rtol=1e-5
    )


def test_alpha_gradient_is_stopped_by_default(grad, rng):
    y = rng.normal(size=(16, 1)).astype("float32")
    y_pred = (y + rng.normal(size=(16, 1)) + 0.4).astype("float32")
    e = y.astype(np.float64) - y_pred
    alpha = np_alpha("sigmoid_snr", e, temperature=1.0)
    _, g = grad(lambda t: dynamic_alpha(y, t, "mse", "sigmoid_snr"), y_pred)
    np.testing.assert_allclose(g, alpha * -2 * e, rtol=1e-4, atol=1e-6)


def test_alpha_gradient_option_differentiates_alpha(grad, rng):
    y = rng.normal(size=(16, 1)).astype("float32")
    y_pred = (y + rng.normal(size=(16, 1)) + 0.4).astype("float32")

    def total(t):
        return np.sum(np.asarray(dynamic_alpha(y, t, "mse", "sigmoid_snr", alpha_gradient=True), np.float64))

    _, g = grad(lambda t: dynamic_alpha(y, t, "mse", "sigmoid_snr", alpha_gradient=True), y_pred)
    _, g_stopped = grad(lambda t: dynamic_alpha(y, t, "mse", "sigmoid_snr"), y_pred)
    assert not np.allclose(g, g_stopped, rtol=1e-3)
    step = 1e-2
    for i in (0, 5, 11):
        up, down = y_pred.copy(), y_pred.copy()
        up[i, 0] += step
        down[i, 0] -= step
        numeric = (total(up) - total(down)) / (2 * step)
        np.testing.assert_allclose(g[i, 0], numeric, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize(("formula", "params"), FORMULA_CASES)
@pytest.mark.parametrize("alpha_gradient", [False, True])
def test_gradients_finite_for_degenerate_and_extreme_errors(formula, params, alpha_gradient, grad):
    # Zero errors (std 0, RMS 0) and residuals of 1e6: no NaN from sqrt(0) or a division.
    y = np.zeros((4, 1), dtype="float32")
    for y_pred in (np.zeros((4, 1)), np.full((4, 1), 3.0), np.array([[1e6], [-1e6], [0.0], [1.0]])):
        value, g = grad(
            lambda t: dynamic_alpha(y, t, "mse", formula, params, alpha_gradient), y_pred.astype("float32")
        )
        assert np.isfinite(value) and np.all(np.isfinite(g)), (formula, y_pred.ravel())


def test_config_holds_every_formula_parameter_and_round_trips():
    loss = DynamicAlpha(base="bce", alpha_formula="inverse_rms", alpha_gradient=True, from_logits=True)
    config = loss.get_config()
    assert config == {
        "name": "dynamic_alpha",
        "reduction": "sum_over_batch_size",
        "base": "bce",
        "alpha_formula": "inverse_rms",
        "formula_params": {"power": 1.0},
        "alpha_gradient": True,
        "from_logits": True,
    }
    assert DynamicAlpha.from_config(config).get_config() == config


@pytest.mark.parametrize(
    ("kwargs", "texts"),
    [
        ({"base": "huber"}, ["`base`", "mse, mae, bce, cce", "'huber'"]),
        (
            {"alpha_formula": "mean(e)/std(e)"},
            ["`alpha_formula`", "sigmoid_snr", "constant", "'mean(e)/std(e)'"],
        ),
        ({"alpha_formula": "constant", "formula_params": {"alpha_value": 0.0}}, ["`alpha_value`", "> 0"]),
        ({"alpha_formula": "inverse_rms", "formula_params": {"power": 3.0}}, ["`power`", "[0, 2]", "3.0"]),
        (
            {"alpha_formula": "sigmoid_snr", "formula_params": {"temperature": math.nan}},
            ["`temperature`", "nan"],
        ),
        ({"alpha_formula": "sigmoid_snr", "formula_params": {"power": 1.0}}, ["`power`", "temperature"]),
        ({"formula_params": [1.0]}, ["`formula_params`"]),
        ({"base": "mse", "from_logits": True}, ["`from_logits`", "bce and cce"]),
        ({"alpha_gradient": "yes"}, ["`alpha_gradient`"]),
    ],
)
def test_invalid_parameters(kwargs, texts):
    with pytest.raises(ConfigError) as info:
        DynamicAlpha(**kwargs)
    for text in texts:
        assert text in str(info.value)


# ------------------------------------------------------------------------------------- user formulas


@pytest.fixture
def clean_registry():
    """Restore the formula registry and the dynamic_alpha factory after the test."""
    saved = dict(dynamic._FORMULAS)
    yield
    dynamic._FORMULAS.clear()
    dynamic._FORMULAS.update(saved)
    from aloss_tune import _factories_basic
    from aloss_tune.factories import register_loss_factory

    register_loss_factory(_factories_basic.dynamic_alpha_factory(), overwrite=True)


def test_user_formula_through_class_and_flat_params(clean_registry, rng, values):
    @register_alpha_formula(
        "capped_inverse_mae",
        params={"cap": FormulaParam(4.0, Interval(0.0, math.inf, low_open=True), "largest alpha")},
    )
    def capped_inverse_mae(errors, cap):
        """alpha = min(1 / mean|e|, cap)."""
        return ops.minimum(1.0 / (ops.mean(ops.abs(errors)) + 1e-7), cap)

    assert capped_inverse_mae.__name__ == "capped_inverse_mae"  # the decorator returns the function
    y = rng.normal(size=(16, 1)).astype("float32")
    y_pred = (y + 0.1 * rng.normal(size=(16, 1))).astype("float32")
    e = y.astype(np.float64) - y_pred
    expected = min(1 / np.abs(e).mean(), 2.0) * (e**2).mean(-1)

    loss = DynamicAlpha(alpha_formula="capped_inverse_mae", formula_params={"cap": 2.0})
    np.testing.assert_allclose(values(loss, y, y_pred), expected, rtol=1e-5)

    flat = aloss_tune.build_loss(
        {
            "loss": "dynamic_alpha",
            "loss.alpha_formula": "capped_inverse_mae",
            "loss.cap": 2.0,
            "loss.power": 0.5,
        }
    )
    assert flat.get_config()["formula_params"] == {"cap": 2.0}  # power belongs to another formula: ignored
    np.testing.assert_allclose(values(flat, y, y_pred), expected, rtol=1e-5)
    spec = get_factory("dynamic_alpha").param("cap")
    assert (
        spec.default == 4.0
        and "capped_inverse_mae" in get_factory("dynamic_alpha").param("alpha_formula").domain
    )


def test_registration_errors(clean_registry):
    def fn(errors, **_):
        return 1.0

    with pytest.raises(ConfigError, match="exists"):
        register_alpha_formula("constant")(fn)
    with pytest.raises(ConfigError, match="reserved"):
        register_alpha_formula("bad", params={"base": FormulaParam(1.0)})
    with pytest.raises(ConfigError, match="declared differently"):
        register_alpha_formula("other", params={"power": FormulaParam(5.0, Interval(0.0, 10.0))})
    with pytest.raises(ConfigError, match="`name`"):
        register_alpha_formula("no spaces")
    with pytest.raises(ConfigError, match="`cap default`"):
        register_alpha_formula("neg", params={"cap": FormulaParam(-1.0, Interval(0.0, 1.0))})
    register_alpha_formula("constant", overwrite=True, params={"alpha_value": FormulaParam(1.0)})(fn)
    assert get_alpha_formula("constant").fn is fn
