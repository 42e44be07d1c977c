"""The factory registry, `build_loss`, and the Keras loss contract of every factory of the basic family.

Contract, per factory: ``get_config`` round-trips every hyperparameter; Keras applies ``sample_weight``
(zero, uniform, per sample) to one value per sample; 1-D labels against ``(B, 1)`` predictions are aligned,
not broadcast to ``(B, B)``; the loss trains under ``jit_compile=True`` with a ``mixed_float16`` policy; and
value and gradient are finite at certain predictions, logits of +-1e4 and residuals of +-1e6.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

import aloss_tune
from aloss_tune.distributions import Categorical, Float
from aloss_tune.errors import ConfigError
from aloss_tune.factories import LossFactory, ParamSpec, build_loss, get_factory, register_loss_factory

FAMILY = (
    "mse",
    "mae",
    "bce",
    "cce",
    "huber",
    "confidence_bce",
    "error_mse",
    "class_bce",
    "class_cce",
    "focal",
    "poly1",
    "dynamic_alpha",
)
NOISE_FAMILY = ("gce", "sce", "active_passive", "bootstrap")

# One non-default configuration per factory (two for the ones whose behaviour forks).
CASES: dict[str, dict[str, Any]] = {
    "mse": {"loss": "mse"},
    "mae": {"loss": "mae"},
    "bce": {"loss": "bce", "loss.from_logits": True},
    "bce_probs": {"loss": "bce"},
    "cce": {"loss": "cce", "loss.from_logits": True},
    "huber": {"loss": "huber", "loss.delta": 0.5},
    "confidence_bce": {"loss": "confidence_bce", "loss.clip_min": 1.5, "loss.clip_max": 5.0},
    "confidence_bce_logits": {"loss": "confidence_bce", "loss.from_logits": True},
    "error_mse": {"loss": "error_mse", "loss.clip_min": 0.2, "loss.clip_max": 3.0},
    "class_bce": {
        "loss": "class_bce",
        "loss.pos_weight": 4.0,
        "loss.neg_weight": 0.5,
        "loss.from_logits": True,
    },
    "class_cce": {"loss": "class_cce", "loss.class_weights": [1.0, 3.0, 0.5]},
    "class_cce_logits": {
        "loss": "class_cce",
        "loss.class_weights": [2.0, 1.0, 1.0],
        "loss.from_logits": True,
    },
    "focal": {"loss": "focal", "loss.gamma": 0.5, "loss.alpha": 0.7},
    "focal_logits": {"loss": "focal", "loss.gamma": 3.0, "loss.from_logits": True},
    "poly1": {"loss": "poly1", "loss.epsilon": 2.0, "loss.from_logits": True},
    "poly1_categorical": {"loss": "poly1", "loss.epsilon": -1.0, "loss.mode": "categorical"},
    "dynamic_alpha": {"loss": "dynamic_alpha", "loss.alpha_formula": "sigmoid_snr", "loss.temperature": 0.5},
    "dynamic_alpha_rms": {
        "loss": "dynamic_alpha",
        "loss.alpha_formula": "inverse_rms",
        "loss.power": 2.0,
        "loss.alpha_gradient": True,
    },
    "dynamic_alpha_cce": {
        "loss": "dynamic_alpha",
        "loss.base": "cce",
        "loss.from_logits": True,
        "loss.alpha_formula": "outlier_damping",
        "loss.strength": 3.0,
    },
    "gce": {"loss": "gce", "loss.q": 0.3},
    "gce_categorical": {"loss": "gce", "loss.q": 0.0, "loss.from_logits": True, "loss.mode": "categorical"},
    "sce": {"loss": "sce", "loss.alpha": 6.0, "loss.beta": 0.1, "loss.from_logits": True},
    "sce_categorical": {"loss": "sce", "loss.log_clip": -9.0, "loss.mode": "categorical"},
    "active_passive": {"loss": "active_passive", "loss.active": "ngce", "loss.passive": "mae", "loss.q": 0.1},
    "active_passive_categorical": {
        "loss": "active_passive",
        "loss.active": "nfocal",
        "loss.passive": "nnce",
        "loss.gamma": 2.0,
        "loss.min_prob": 1e-5,
        "loss.alpha": 10.0,
        "loss.beta": 0.1,
        "loss.from_logits": True,
        "loss.mode": "categorical",
    },
    "bootstrap": {"loss": "bootstrap", "loss.beta": 0.9, "loss.from_logits": True},
    "bootstrap_categorical": {"loss": "bootstrap", "loss.target": "hard", "loss.mode": "categorical"},
}


def task_of(params: dict[str, Any]) -> str:
    name = params["loss"]
    if name == "dynamic_alpha":
        return {"mse": "regression", "mae": "regression", "bce": "binary", "cce": "multiclass"}[
            params.get("loss.base", "mse")
        ]
    if params.get("loss.mode") == "categorical":  # poly1 and the label-noise losses
        return "multiclass"
    return get_factory(name).tasks[0]


def batch(task: str, from_logits: bool, n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels as Keras hands them to a loss (1-D for regression and binary) and matching predictions."""
    rng = np.random.default_rng(seed)
    if task == "regression":
        return rng.normal(size=n).astype("float32"), rng.normal(size=(n, 1)).astype("float32")
    if task == "binary":
        y = rng.integers(0, 2, size=n).astype("float32")
        z = rng.normal(scale=2, size=(n, 1))
        return y, (z if from_logits else 1 / (1 + np.exp(-z))).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=n)]
    z = rng.normal(scale=2, size=(n, 3))
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return y, (z if from_logits else probs).astype("float32")


def extremes(task: str, from_logits: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Certain predictions, right and wrong: probabilities 0 and 1, logits +-1e4, residuals +-1e6."""
    if task == "regression":
        return [(np.zeros(4, "float32"), np.array([[1e6], [-1e6], [0.0], [1e-3]], "float32"))]
    big = 1e4 if from_logits else 1.0
    small = -1e4 if from_logits else 0.0
    if task == "binary":
        return [
            (np.array([0.0, 1.0, 0.0, 1.0], "float32"), np.array([[small], [big], [big], [small]], "float32"))
        ]
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    pred = np.full((4, 3), small, dtype="float32")
    pred[[0, 1, 2, 3], [0, 1, 1, 2]] = big  # two right, two wrong, all certain
    return [(y, pred)]


def value_and_grad(fn: Callable[[Any], Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            value = fn(tensor)
        return np.asarray(value), np.asarray(tape.gradient(value, tensor))
    if backend == "jax":
        import jax

        value, gradient = jax.value_and_grad(fn)(jax.numpy.asarray(x))
        return np.asarray(value), np.asarray(gradient)
    pytest.skip(f"no gradient helper for the {backend} backend")


def per_sample(loss: keras.losses.Loss, y_true: Any, y_pred: Any) -> np.ndarray:
    return np.asarray(type(loss).from_config({**loss.get_config(), "reduction": None})(y_true, y_pred))


# ------------------------------------------------------------------------------------------- registry


def test_family_is_registered_with_tasks():
    names = aloss_tune.list_losses()
    assert set(FAMILY) <= set(names)
    expected_tasks = {
        "mse": ("regression",),
        "mae": ("regression",),
        "huber": ("regression",),
        "error_mse": ("regression",),
        "bce": ("binary",),
        "confidence_bce": ("binary",),
        "class_bce": ("binary",),
        "focal": ("binary",),
        "cce": ("multiclass",),
        "class_cce": ("multiclass",),
        "poly1": ("binary", "multiclass"),
        "dynamic_alpha": ("regression", "binary", "multiclass"),
    }
    for name, tasks in expected_tasks.items():
        assert get_factory(name).tasks == tasks, name
        assert get_factory(name).description


def test_every_parameter_is_documented_and_its_default_valid():
    for name in FAMILY + NOISE_FAMILY:
        factory = get_factory(name)
        for spec in factory.params:
            assert spec.doc, (name, spec.name)
            if spec.default is not None:
                spec.check_value(spec.default, name)
            if spec.search is not None and not isinstance(spec.search, Categorical):
                spec.check_range(spec.search, name)
        factory.build()  # the defaults build


def test_default_search_ranges():
    assert get_factory("huber").search_space() == {"delta": Float(0.02, 2.0, log=True)}
    assert get_factory("huber").param("delta").relative
    assert get_factory("error_mse").param("clip_max").relative
    # Disjoint ranges: no sampled combination violates clip_min <= clip_max.
    conf = get_factory("confidence_bce").search_space()
    assert conf["clip_min"].high <= conf["clip_max"].low
    for name in ("bce", "cce", "class_bce", "class_cce", "focal", "poly1", "confidence_bce", "dynamic_alpha"):
        assert get_factory(name).param("from_logits").search is None
    assert get_factory("class_cce").param("class_weights").search is None
    space = get_factory("dynamic_alpha").search_space()
    assert set(space) == {"alpha_formula", "alpha_value", "temperature", "power", "strength"}
    assert set(space["alpha_formula"].choices) >= {
        "constant",
        "sigmoid_snr",
        "inverse_rms",
        "outlier_damping",
    }


def test_label_noise_family_default_search_ranges_and_conditions():
    for name in NOISE_FAMILY:
        factory = get_factory(name)
        assert factory.tasks == ("binary", "multiclass") and factory.description
        assert {p.name: p.default for p in factory.params if p.name in ("from_logits", "mode")} == {
            "from_logits": False, "mode": "auto"}
        assert factory.param("from_logits").search is None and factory.param("mode").search is None
    assert get_factory("gce").search_space() == {"q": Float(0.1, 0.9)}
    assert get_factory("sce").search_space() == {"alpha": Float(0.01, 10.0, log=True),
                                                 "beta": Float(0.1, 1.0, log=True)}
    assert get_factory("bootstrap").search_space() == {"beta": Float(0.5, 1.0),
                                                       "target": Categorical(("soft", "hard"))}
    ap = get_factory("active_passive")
    assert ap.search_space() == {
        "active": Categorical(("nce", "ngce", "nfocal")),
        "passive": Categorical(("mae", "rce", "nnce")),
        "alpha": Float(1.0, 50.0, log=True),
        "beta": Float(0.1, 10.0, log=True),
        "q": Float(0.1, 0.9),
        "gamma": Float(0.0, 5.0),
    }
    assert {p.name: p.when for p in ap.params if p.when} == {
        "q": ("active", ("gce", "ngce")),
        "gamma": ("active", ("focal", "nfocal")),
        "log_clip": ("passive", ("rce",)),
        "min_prob": ("passive", ("nnce",)),
    }
    # The literature's points of the one factory, ANL-CE's L1 term included.
    assert build_loss({"loss": "bootstrap", "loss.target": "hard"}).beta == 0.8
    anl = build_loss({"loss": "active_passive", "loss.passive": "nnce", "loss.alpha": 5.0, "loss.beta": 5.0,
                      "loss.l1": 5e-5})
    assert type(anl).__name__ == "Penalized" and anl.l1 == 5e-5
    assert (anl.loss.active, anl.loss.passive, anl.loss.alpha, anl.loss.beta) == ("nce", "nnce", 5.0, 5.0)


def test_get_factory_unknown_lists_known_names():
    with pytest.raises(ConfigError) as info:
        get_factory("hubber")
    assert "'hubber'" in str(info.value) and "huber" in str(info.value) and "focal" in str(info.value)


def test_register_loss_factory_refuses_duplicates_and_bad_names():
    with pytest.raises(ConfigError, match="exists"):
        register_loss_factory(LossFactory("huber", lambda: keras.losses.Huber()))
    with pytest.raises(ConfigError, match="`name`"):
        register_loss_factory(LossFactory("my loss", lambda: keras.losses.Huber()))
    with pytest.raises(ConfigError, match="reserved"):
        LossFactory("x", lambda l2: None, (ParamSpec("l2", float, 0.0),))


@pytest.mark.parametrize("case", sorted(CASES))
def test_build_loss_round_trips_every_hyperparameter(case):
    params = CASES[case]
    loss = build_loss(params)
    config = loss.get_config()
    for key, value in params.items():
        if key == "loss":
            continue
        short = key[len("loss.") :]
        stored = (
            config["formula_params"][short] if short in config.get("formula_params", {}) else config[short]
        )
        assert stored == value, (case, key)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(rebuilt) is type(loss) and rebuilt.get_config() == config


# --------------------------------------------------------------------------------------- invalid table

INVALID = [
    ({"loss": "nope"}, ["`loss`", "'nope'", "huber"]),
    ({"loss": "huber", "loss.delta": -1.0}, ["`delta`", "-1.0", "> 0"]),
    ({"loss": "huber", "loss.delta": 0}, ["`delta`", "0", "> 0"]),
    ({"loss": "huber", "loss.delta": math.nan}, ["`delta`", "nan"]),
    ({"loss": "huber", "loss.delta": math.inf}, ["`delta`", "inf", "finite"]),
    ({"loss": "huber", "loss.delta": "1.0"}, ["`delta`", "'1.0'", "number"]),
    ({"loss": "huber", "loss.delta": True}, ["`delta`", "True"]),
    ({"loss": "huber", "loss.alpha": 1.0}, ["`loss.alpha`", "delta"]),
    ({"loss": "mse", "loss.delta": 1.0}, ["`loss.delta`"]),
    ({"loss": "bce", "loss.from_logits": 1}, ["`from_logits`", "1", "true or false"]),
    ({"loss": "cce", "loss.from_logits": "yes"}, ["`from_logits`", "'yes'"]),
    ({"loss": "confidence_bce", "loss.clip_min": 0.0}, ["`clip_min`", "0.0", "> 0"]),
    (
        {"loss": "confidence_bce", "loss.clip_min": 5.0, "loss.clip_max": 2.0},
        ["`clip_min <= clip_max`", "clip_min=5", "clip_max=2"],
    ),
    ({"loss": "error_mse", "loss.clip_max": -1.0}, ["`clip_max`", "-1.0", ">= 0"]),
    (
        {"loss": "error_mse", "loss.clip_min": 3.0, "loss.clip_max": 1.0},
        ["`clip_min <= clip_max`", "clip_min=3"],
    ),
    ({"loss": "class_bce", "loss.pos_weight": -2.0}, ["`pos_weight`", "-2.0"]),
    ({"loss": "class_bce", "loss.neg_weight": math.nan}, ["`neg_weight`", "nan"]),
    ({"loss": "class_cce", "loss.class_weights": []}, ["`class_weights`", "[]"]),
    ({"loss": "class_cce", "loss.class_weights": [1.0, 0.0]}, ["`class_weights[1]`", "0.0", "> 0"]),
    ({"loss": "class_cce", "loss.class_weights": 2.0}, ["`class_weights`", "2.0"]),
    ({"loss": "focal", "loss.gamma": -0.1}, ["`gamma`", "-0.1", ">= 0"]),
    ({"loss": "focal", "loss.alpha": 1.2}, ["`alpha`", "1.2", "[0, 1]"]),
    ({"loss": "poly1", "loss.epsilon": -1.5}, ["`epsilon`", "-1.5", ">= -1"]),
    ({"loss": "poly1", "loss.mode": "softmax"}, ["`mode`", "'softmax'", "binary, categorical"]),
    ({"loss": "dynamic_alpha", "loss.base": "huber"}, ["`base`", "'huber'", "mse, mae, bce, cce"]),
    (
        {"loss": "dynamic_alpha", "loss.alpha_formula": "sigmoid(mean(e))"},
        ["`alpha_formula`", "sigmoid_snr", "constant"],
    ),
    (
        {"loss": "dynamic_alpha", "loss.alpha_formula": "constant", "loss.alpha_value": -1.0},
        ["`alpha_value`", "-1.0"],
    ),
    (
        {"loss": "dynamic_alpha", "loss.alpha_formula": "inverse_rms", "loss.power": 2.5},
        ["`power`", "2.5", "[0, 2]"],
    ),
    ({"loss": "dynamic_alpha", "loss.from_logits": True}, ["`from_logits`", "bce and cce"]),
    ({"loss": "dynamic_alpha", "loss.alpha_gradient": "no"}, ["`alpha_gradient`", "'no'"]),
    ({"loss": "gce", "loss.q": 2.0}, ["`q`", "2.0", "[0, 1]"]),
    ({"loss": "gce", "loss.mode": "softmax"}, ["`mode`", "'softmax'", "auto, binary, categorical"]),
    ({"loss": "sce", "loss.log_clip": 1.0}, ["`log_clip`", "1.0", "< 0"]),
    ({"loss": "sce", "loss.alpha": 0.0, "loss.beta": 0.0}, ["`alpha` and `beta`", "alpha=0.0"]),
    ({"loss": "active_passive", "loss.active": "mae"}, ["`active`", "'mae'", "ce, nce, gce, ngce, focal, nfocal"]),
    ({"loss": "active_passive", "loss.passive": "ce"}, ["`passive`", "'ce'", "mae, rce, nnce"]),
    ({"loss": "active_passive", "loss.gamma": -1.0}, ["`gamma`", "-1.0", ">= 0"]),
    ({"loss": "active_passive", "loss.min_prob": 1.0}, ["`min_prob`", "1.0", "(0, 1)"]),
    ({"loss": "bootstrap", "loss.beta": -0.5}, ["`beta`", "-0.5", "[0, 1]"]),
    ({"loss": "bootstrap", "loss.target": "argmax"}, ["`target`", "'argmax'", "soft, hard"]),
    ({"loss": "huber", "loss.l1": -1e-3}, ["`loss.l1`", "-0.001"]),
    ({"loss": "huber", "loss.l2": math.nan}, ["`loss.l2`", "nan"]),
]


@pytest.mark.parametrize(("params", "texts"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_params_raise_config_error_naming_the_parameter(params, texts):
    with pytest.raises(ConfigError) as info:
        build_loss(params)
    message = str(info.value)
    for text in texts:
        assert text in message, (text, message)


def test_class_weights_of_the_wrong_length_fail_at_the_first_call():
    loss = build_loss({"loss": "class_cce", "loss.class_weights": [1.0, 2.0, 3.0, 4.0]})
    y, p = batch("multiclass", False)
    with pytest.raises(ConfigError, match=r"`class_weights`.*\(3\)"):
        loss(y, p)


@pytest.mark.parametrize("params", [
    {"loss": "nope"},
    {"loss": "huber", "loss.gamma": 1.0},
    {"loss": "huber", "loss.delta": -1.0},
    {"loss": "huber", "loss.delta": float("nan")},
    {"loss": "poly1", "loss.mode": "softmax"},
    {"loss": "focal", "loss.from_logits": "yes"},
    {"loss": "dynamic_alpha", "loss.alpha_formula": "inverse_rms", "loss.power": 3.0},
    {"loss": "mse", "loss.l2": -0.1},
])
def test_check_params_refuses_what_build_loss_refuses_with_the_same_message(params):
    from aloss_tune.factories import check_params

    with pytest.raises(ConfigError) as built:
        build_loss(params)
    with pytest.raises(ConfigError) as checked:
        check_params(params)
    assert str(checked.value) == str(built.value)
    with pytest.raises(ConfigError, match=r"^runs:/x: "):
        check_params(params, where="runs:/x")


def test_check_params_accepts_what_builds_and_says_whether_the_loss_needs_its_model():
    from aloss_tune.factories import check_params, needs_model

    cases = {("huber", 0.0): False, ("adaptive_barron", 0.0): True, ("barron", 1e-4): True}
    for (name, l2), attached in cases.items():
        params = {"loss": name, "loss.l2": l2, "model.units": 8}
        assert check_params(params).name == name
        assert needs_model(params) is attached is aloss_tune.losses.needs_model(build_loss(params))
    assert check_params({"loss": "adaptive_barron", "loss.alpha_init": None}).adaptive  # None where it is the default
    # A formula's constant given to another formula is ignored, as build_loss ignores it.
    unused = {"loss": "dynamic_alpha", "loss.alpha_formula": "constant", "loss.power": 3.0}
    assert check_params(unused).name == "dynamic_alpha" and build_loss(unused).alpha_formula == "constant"


def test_importing_losses_leaves_search_and_tracking_libraries_alone():
    code = (
        "import sys\n"
        "import aloss_tune.losses\n"
        "heavy = ('optuna', 'keras_tuner', 'mlflow')\n"
        "print('after losses', sorted(m for m in heavy if m in sys.modules))\n"
        "import aloss_tune\n"
        "aloss_tune.list_losses(); aloss_tune.build_loss({'loss': 'dynamic_alpha', 'loss.l2': 0.1})\n"
        "print('after factories', sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "after losses []" in done.stdout
    assert "after factories []" in done.stdout


# -------------------------------------------------------------------------------------- loss contract


@pytest.mark.parametrize("case", sorted(CASES))
def test_sample_weight_zero_uniform_and_per_sample(case):
    params = CASES[case]
    loss = build_loss(params)
    y, p = batch(task_of(params), bool(params.get("loss.from_logits")))
    per = per_sample(loss, y, p).astype(np.float64)
    assert per.shape == (len(y),)
    n = len(y)
    np.testing.assert_allclose(float(loss(y, p)), per.mean(), rtol=1e-5)
    assert float(loss(y, p, sample_weight=np.zeros(n, "float32"))) == 0.0
    np.testing.assert_allclose(
        float(loss(y, p, sample_weight=np.full(n, 2.0, "float32"))), 2 * per.mean(), rtol=1e-5
    )
    weights = np.linspace(0.0, 2.0, n).astype("float32")
    np.testing.assert_allclose(float(loss(y, p, sample_weight=weights)), (per * weights).sum() / n, rtol=1e-5)


@pytest.mark.parametrize("case", [c for c in sorted(CASES) if task_of(CASES[c]) != "multiclass"])
def test_one_dimensional_labels_are_aligned_not_broadcast(case):
    # With (B,) labels and (B, 1) predictions, y_true - y_pred would broadcast to (B, B) and give every
    # sample the mean over all labels: the per-sample values would then differ from the 2-D ones.
    params = CASES[case]
    loss = build_loss(params)
    y, p = batch(task_of(params), bool(params.get("loss.from_logits")))
    one_d = per_sample(loss, y, p)
    two_d = per_sample(loss, y[:, None], p)
    assert one_d.shape == two_d.shape == (len(y),)
    np.testing.assert_allclose(one_d, two_d, rtol=1e-6)
    assert np.ptp(one_d) > 0  # distinct per-sample values, which (B, B) broadcasting would have averaged


@pytest.mark.parametrize("case", sorted(CASES))
def test_value_and_gradient_finite_at_extreme_inputs(case):
    params = CASES[case]
    loss = build_loss(params)
    for y, pred in extremes(task_of(params), bool(params.get("loss.from_logits"))):
        value, gradient = value_and_grad(lambda t, y=y: loss(y, t), pred)
        assert np.isfinite(value), (case, value)
        assert np.all(np.isfinite(gradient)), (case, gradient)


# One configuration per loss of ours (and per Poly-1 mode); the baselines are Keras's own losses. A
# jit-compiled fit costs about a second each.
JIT_CASES = [
    "huber",
    "confidence_bce_logits",
    "error_mse",
    "class_bce",
    "class_cce",
    "focal_logits",
    "poly1",
    "poly1_categorical",
    "dynamic_alpha",
    "dynamic_alpha_cce",
]


@pytest.mark.parametrize("case", JIT_CASES)
def test_trains_with_jit_compile_under_mixed_float16(case, mixed_float16):
    params = CASES[case]
    task = task_of(params)
    from_logits = bool(params.get("loss.from_logits"))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y, _ = batch(task, from_logits, n=32)
    units = 3 if task == "multiclass" else 1
    activation = None if task == "regression" or from_logits else ("softmax" if units == 3 else "sigmoid")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation=activation)])
    assert model.layers[-1].compute_dtype == "float16"
    model.compile(optimizer="adam", loss=build_loss(params), jit_compile=True)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
