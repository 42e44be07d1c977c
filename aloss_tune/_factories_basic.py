"""Factories of the basic loss family.

Baselines, Huber, weighted, class-weighted, focal, Poly-1 and dynamic alpha.

Every factory declares each parameter's valid domain and default search range. Ranges that must not
produce invalid combinations are kept apart (``confidence_bce``'s ``clip_min`` range lies below its
``clip_max`` range). Parameters that depend on the model rather than on the search (``from_logits``, the
``mode`` of Poly-1, the base of ``dynamic_alpha``, class weights) have no default search range.

``dynamic_alpha`` exposes the parameters of every registered alpha formula as flat keys of its own
(``loss.alpha_value``, ``loss.temperature``, ``loss.power``, ``loss.strength``, and those of formulas that
users register with `aloss_tune.losses.register_alpha_formula`). Each is conditional on the formula: a
search samples (and logs) only the parameters of the formula it chose, and a formula's parameters given to
another formula are ignored. The formulas are read from their registry (`aloss_tune._alpha_formulas`), which,
like these declarations, imports no Keras: the loss classes load when a loss is built.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aloss_tune._alpha_formulas import AlphaFormula, add_registration_listener, get_alpha_formula, list_alpha_formulas
from aloss_tune.distributions import Categorical, Float
from aloss_tune.domains import (
    BASES,
    FINITE_NON_NEGATIVE,
    FINITE_POSITIVE,
    POLY1_EPSILON,
    POLY1_MODES,
    UNIT,
    check_bool,
)
from aloss_tune.factories import LossFactory, ParamSpec, register_loss_factory

if TYPE_CHECKING:
    import keras

REGRESSION = ("regression",)
BINARY = ("binary",)
MULTICLASS = ("multiclass",)


def _from_logits(doc: str = "y_pred holds logits (no final sigmoid/softmax)") -> ParamSpec:
    return ParamSpec("from_logits", bool, False, None, None, doc=doc)


def _mse() -> keras.losses.Loss:
    import keras

    return keras.losses.MeanSquaredError()


def _mae() -> keras.losses.Loss:
    import keras

    return keras.losses.MeanAbsoluteError()


def _bce(from_logits: bool) -> keras.losses.Loss:
    import keras

    return keras.losses.BinaryCrossentropy(from_logits=check_bool("bce", "from_logits", from_logits))


def _cce(from_logits: bool) -> keras.losses.Loss:
    import keras

    return keras.losses.CategoricalCrossentropy(from_logits=check_bool("cce", "from_logits", from_logits))


BASELINES = (
    LossFactory(
        "mse",
        _mse,
        tasks=REGRESSION,
        description="mean squared error (Keras's own; the no-special-loss baseline)",
    ),
    LossFactory(
        "mae",
        _mae,
        tasks=REGRESSION,
        description="mean absolute error (Keras's own; the no-special-loss baseline)",
    ),
    LossFactory(
        "bce",
        _bce,
        (_from_logits(),),
        tasks=BINARY,
        description="binary cross-entropy (Keras's own; the no-special-loss baseline)",
    ),
    LossFactory(
        "cce",
        _cce,
        (_from_logits(),),
        tasks=MULTICLASS,
        description="categorical cross-entropy, one-hot labels (Keras's own; the baseline)",
    ),
)

FAMILY = (
    LossFactory(
        "huber",
        "aloss_tune.losses.classic:Huber",
        (
            ParamSpec(
                "delta",
                float,
                1.0,
                FINITE_POSITIVE,
                Float(0.02, 2.0, log=True),
                relative=True,
                doc="residual where the loss turns from quadratic to linear",
                start=0.3,
            ),
        ),
        tasks=REGRESSION,
        description="Huber loss: quadratic for small residuals, linear for large ones",
    ),
    LossFactory(
        "confidence_bce",
        "aloss_tune.losses.weighted:ConfidenceBCE",
        (
            ParamSpec(
                "clip_min",
                float,
                1.0,
                FINITE_POSITIVE,
                Float(1.0, 3.0, log=True),
                doc="smallest weight 1/p_t (below 1 acts like 1)",
            ),
            ParamSpec(
                "clip_max",
                float,
                10.0,
                FINITE_POSITIVE,
                Float(3.0, 100.0, log=True),
                doc="largest weight 1/p_t, >= clip_min",
            ),
            _from_logits(),
        ),
        tasks=BINARY,
        description="binary cross-entropy weighted by clip(1/p_t): unsure elements weigh more",
    ),
    LossFactory(
        "error_mse",
        "aloss_tune.losses.weighted:ErrorWeightedMSE",
        (
            ParamSpec(
                "clip_min",
                float,
                0.0,
                FINITE_NON_NEGATIVE,
                None,
                relative=True,
                doc="lower clip of |error| in the weight 1 + clip(|error|)",
            ),
            ParamSpec(
                "clip_max",
                float,
                5.0,
                FINITE_NON_NEGATIVE,
                Float(0.1, 10.0, log=True),
                relative=True,
                doc="upper clip of |error| in the weight, >= clip_min",
            ),
        ),
        tasks=REGRESSION,
        description="squared error weighted per element by 1 + clip(|error|)",
    ),
    LossFactory(
        "class_bce",
        "aloss_tune.losses.weighted:ClassBCE",
        (
            ParamSpec(
                "pos_weight",
                float,
                1.0,
                FINITE_POSITIVE,
                Float(0.5, 50.0, log=True),
                doc="weight of the positive class",
            ),
            ParamSpec(
                "neg_weight",
                float,
                1.0,
                FINITE_POSITIVE,
                None,
                doc="weight of the negative class (only the ratio to pos_weight matters)",
            ),
            _from_logits(),
        ),
        tasks=BINARY,
        description="binary cross-entropy with a weight per class",
    ),
    LossFactory(
        "class_cce",
        "aloss_tune.losses.weighted:ClassCCE",
        (
            ParamSpec(
                "class_weights", list, None, None, None, doc="one weight > 0 per class; null for all ones"
            ),
            _from_logits(),
        ),
        tasks=MULTICLASS,
        description="categorical cross-entropy with a weight per class, one-hot labels",
    ),
    LossFactory(
        "focal",
        "aloss_tune.losses.classic:FocalCrossentropy",
        (
            ParamSpec(
                "gamma",
                float,
                2.0,
                FINITE_NON_NEGATIVE,
                Float(0.0, 5.0),
                doc="focusing parameter: how much easy examples are down-weighted",
            ),
            ParamSpec(
                "alpha", float, 0.25, UNIT, Float(0.05, 0.95), doc="weight of class 1 (class 0: 1 - alpha)"
            ),
            _from_logits(),
        ),
        tasks=BINARY,
        description="binary focal cross-entropy with class balancing (Lin et al. 2017)",
    ),
    LossFactory(
        "poly1",
        "aloss_tune.losses.classic:Poly1Crossentropy",
        (
            ParamSpec(
                "epsilon",
                float,
                1.0,
                POLY1_EPSILON,
                Float(-1.0, 5.0),
                doc="coefficient of the added (1 - p_t) term",
            ),
            _from_logits(),
            ParamSpec(
                "mode",
                str,
                "binary",
                POLY1_MODES,
                None,
                doc="binary: sigmoid per output; categorical: softmax, one-hot labels",
            ),
        ),
        tasks=("binary", "multiclass"),
        description="Poly-1: cross-entropy + epsilon * (1 - p_t) (Leng et al. 2022)",
    ),
)

# Default search ranges of the built-in alpha formulas' parameters (a user formula brings its own).
FORMULA_SEARCH = {
    "alpha_value": Float(0.1, 10.0, log=True),
    "temperature": Float(0.1, 10.0, log=True),
    "power": Float(0.0, 2.0),
    "strength": Float(0.0, 4.0),
}
DYNAMIC_OWN = ("base", "alpha_formula", "alpha_gradient", "from_logits")


def _formula_specs() -> list[ParamSpec]:
    specs: dict[str, ParamSpec] = {}
    users: dict[str, list[str]] = {}  # parameter -> the formulas that read it
    for name in list_alpha_formulas():
        for key, param in get_alpha_formula(name).params.items():
            users.setdefault(key, []).append(name)
            search = param.search if param.search is not None else FORMULA_SEARCH.get(key)
            if isinstance(search, Float) and not (
                param.domain.contains(search.low) and param.domain.contains(search.high)
            ):
                search = None  # a re-declared formula narrowed the domain: no default range fits it
            doc = f"({name}) {param.doc}".strip()
            specs.setdefault(key, ParamSpec(key, float, param.default, param.domain, search, doc=doc))
    return [dataclasses.replace(spec, when=("alpha_formula", tuple(users[key]))) for key, spec in specs.items()]


def _build_dynamic_alpha(**params: Any) -> keras.losses.Loss:
    from aloss_tune.losses.dynamic import DynamicAlpha

    own = {key: params.pop(key) for key in DYNAMIC_OWN}
    formula = get_alpha_formula(own["alpha_formula"])
    formula_params = {key: params[key] for key in formula.params}
    return DynamicAlpha(formula_params=formula_params, **own)


def dynamic_alpha_factory() -> LossFactory:
    """The ``dynamic_alpha`` factory for the alpha formulas registered now."""
    names = tuple(list_alpha_formulas())
    return LossFactory(
        "dynamic_alpha",
        _build_dynamic_alpha,
        (
            ParamSpec(
                "base", str, "mse", BASES, None, doc="the scaled loss: mse, mae (regression), bce, cce"
            ),
            ParamSpec(
                "alpha_formula",
                str,
                "sigmoid_snr",
                names,
                Categorical(names),
                doc="name of the formula computing alpha from the batch's errors",
            ),
            ParamSpec("alpha_gradient", bool, False, None, None, doc="let the gradient flow through alpha"),
            _from_logits("y_pred holds logits (bce and cce bases only)"),
            *_formula_specs(),
        ),
        description="a base loss scaled by alpha, a named formula of the batch's error statistics",
    )


def _refresh_dynamic_alpha(formula: AlphaFormula) -> None:
    register_loss_factory(dynamic_alpha_factory(), overwrite=True)


for _factory in (*BASELINES, *FAMILY, dynamic_alpha_factory()):
    register_loss_factory(_factory)
add_registration_listener(_refresh_dynamic_alpha)
