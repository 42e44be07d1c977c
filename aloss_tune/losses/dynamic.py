"""Dynamic-alpha losses: a base loss scaled by a factor computed from the batch's errors.

``alpha`` is chosen by *name* from a registry of formulas; each formula is a plain function of the
batch's errors and a few declared, validated parameters. Formula strings are never evaluated. Users add
their own with `register_alpha_formula`::

    from aloss_tune.losses import FormulaParam, Interval, register_alpha_formula

    cap = FormulaParam(10.0, Interval(1.0, 1e3), "largest alpha")

    @register_alpha_formula("capped_rms", params={"cap": cap}, doc="alpha = min(1 / RMS(e), cap)")
    def capped_rms(errors, cap):
        return ops.minimum(1.0 / ops.sqrt(ops.mean(ops.square(errors)) + 1e-7), cap)

    loss = DynamicAlpha(base="mse", alpha_formula="capped_rms", formula_params={"cap": 5.0})
    loss = build_loss({"loss": "dynamic_alpha", "loss.alpha_formula": "capped_rms", "loss.cap": 5.0})

A formula's parameters are flat keys ``loss.<param>`` of the ``dynamic_alpha`` factory. The registry lives in
`aloss_tune._alpha_formulas`, which needs no Keras, so that the factory lists every formula's parameters in a
process that builds no loss; the built-in formulas' parameters are declared there (``BUILTIN_PARAMS``), and
each function below is bound to its declaration by `builtin_formula`.

Whether alpha passes gradient is the option ``alpha_gradient``. It is off by default: alpha is then a
per-batch step-size factor, and the gradient of every sample is ``alpha`` times the base loss's. With the
gradient on, the model can lower the loss by moving alpha instead of fitting the data (with
``sigmoid_snr``, by biasing every prediction upwards so that the mean error turns negative), which is
rarely what anyone wants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from aloss_tune._alpha_formulas import (  # noqa: F401 - the registry, re-exported (its home is Keras-free)
    _FORMULAS,
    _LISTENERS,
    RESERVED_NAMES,
    AlphaFormula,
    FormulaParam,
    add_registration_listener,
    builtin_formula,
    get_alpha_formula,
    list_alpha_formulas,
    register_alpha_formula,
)
from aloss_tune.domains import BASES
from aloss_tune.errors import ConfigError
from aloss_tune.losses._base import PACKAGE, Loss, align, check_bool, check_choice
from aloss_tune.losses._prob import (
    binary_crossentropy,
    binary_log_probs,
    binary_probs,
    categorical_log_probs,
    check_one_hot_rank,
)

__all__ = [
    "AlphaFormula",
    "DynamicAlpha",
    "FormulaParam",
    "dynamic_alpha",
    "get_alpha_formula",
    "list_alpha_formulas",
    "register_alpha_formula",
]


def _safe_std(x: Any) -> Any:
    """Population standard deviation of all elements, with a zero (not NaN) gradient when it is 0."""
    variance = ops.var(x)
    positive = variance > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, variance, ops.ones_like(variance))), 0.0)


def _eps() -> float:
    """The guard added to denominators: Keras's epsilon (1e-7 unless configured)."""
    return float(keras.config.epsilon())


@builtin_formula
def constant(errors: Any, alpha_value: float) -> Any:
    """alpha = alpha_value: a fixed multiple of the base loss (the control of a search over formulas)."""
    return ops.convert_to_tensor(alpha_value, dtype=errors.dtype)


@builtin_formula
def sigmoid_snr(errors: Any, temperature: float) -> Any:
    """alpha = sigmoid(mean(e) / (temperature * (std(e) + eps))), in (0, 1): the batch's error bias.

    The signal-to-noise ratio of the errors is 0 for an unbiased batch (alpha = 0.5); alpha tends to 1
    when the model under-predicts the whole batch (``e = y_true - y_pred > 0``) and to 0 when it
    over-predicts. It is asymmetric on purpose. For the ``cce`` base the mean error is identically 0 (both
    rows sum to one), so alpha is always 0.5 there.
    """
    return ops.sigmoid(ops.mean(errors) / (temperature * (_safe_std(errors) + _eps())))


@builtin_formula
def inverse_rms(errors: Any, power: float) -> Any:
    """alpha = (mean(e^2) + eps)^(-power / 2): normalises the loss by the batch's error scale.

    With alpha's gradient stopped and the ``mse`` base (``M`` = the batch MSE), the step is that of the
    objective ``M^(1 - power/2)``: ``power = 0`` is MSE, ``1`` is RMSE, ``2`` is ``log M``, the Gaussian
    negative log-likelihood with its variance estimated from the batch (scale-free: the step no longer
    depends on the units of the target). Near a perfect fit alpha grows up to ``eps^(-power/2)``.
    """
    return ops.power(ops.mean(ops.square(errors)) + _eps(), -0.5 * power)


@builtin_formula
def outlier_damping(errors: Any, strength: float) -> Any:
    """alpha = 1 / (1 + strength * CV(|e|)), in (0, 1]: smaller steps on batches dominated by outliers.

    ``CV(|e|) = std(|e|) / (mean(|e|) + eps)`` is the coefficient of variation of the absolute errors:
    0 when all errors are equally large, about 0.76 for Gaussian errors, and large when a few errors
    dominate. It is scale-free, so ``strength`` needs no units.
    """
    magnitude = ops.abs(errors)
    cv = _safe_std(magnitude) / (ops.mean(magnitude) + _eps())
    return 1.0 / (1.0 + strength * cv)


def _base_loss(base: str, y_true: Any, y_pred: Any, from_logits: bool) -> tuple[Any, Any]:
    """(per-sample base loss, errors ``y_true - prediction``) for one of `BASES`."""
    if base == "mse":
        errors = y_true - y_pred
        return ops.mean(ops.square(errors), axis=-1), errors
    if base == "mae":
        errors = y_true - y_pred
        return ops.mean(ops.abs(errors), axis=-1), errors
    if base == "bce":
        log_p, log_q = binary_log_probs(y_pred, from_logits)
        p, _ = binary_probs(y_pred, from_logits, clip=False)
        return ops.mean(binary_crossentropy(y_true, log_p, log_q), axis=-1), y_true - p
    check_one_hot_rank("dynamic_alpha", y_true, y_pred)
    log_probs = categorical_log_probs(y_pred, from_logits)
    return -ops.sum(y_true * log_probs, axis=-1), y_true - ops.exp(log_probs)


def dynamic_alpha(
    y_true: Any,
    y_pred: Any,
    base: str = "mse",
    alpha_formula: str = "sigmoid_snr",
    formula_params: Mapping[str, float] | None = None,
    alpha_gradient: bool = False,
    from_logits: bool = False,
) -> Any:
    """The base loss times an alpha computed from the batch's errors, one value per sample.

    Formula:
        ``e = y_true - prediction`` (prediction: ``y_pred``, or its probabilities for bce and cce)
        ``alpha = formula(e, **formula_params)``, stopped from gradient unless ``alpha_gradient``
        ``loss = alpha * base(y_true, y_pred)``

    Alpha is a statistic of the whole batch as the loss sees it (unweighted by ``sample_weight``).

    Args:
        y_true: targets or labels.
        y_pred: predictions, probabilities or logits.
        base: ``mse``, ``mae``, ``bce`` or ``cce``.
        alpha_formula: a name from `list_alpha_formulas`.
        formula_params: the formula's parameters; missing ones take their defaults.
        alpha_gradient: let the gradient flow through alpha.
        from_logits: ``y_pred`` holds logits (bce and cce only).
    """
    formula = get_alpha_formula(alpha_formula)
    params = formula.resolve("dynamic_alpha", formula_params)
    y_true, y_pred = align(y_true, y_pred)
    values, errors = _base_loss(base, y_true, y_pred, from_logits)
    alpha = ops.cast(formula.fn(errors, **params), values.dtype)
    if not alpha_gradient:
        alpha = ops.stop_gradient(alpha)
    return alpha * values


@keras.saving.register_keras_serializable(package=PACKAGE)
class DynamicAlpha(Loss):
    """A base loss scaled by ``alpha``, computed from the batch's error statistics by a named formula.

    Formula:
        ``loss = alpha(e) * base(y_true, y_pred)``, ``e = y_true - prediction``

    Built-in formulas (see `list_alpha_formulas`; add your own with `register_alpha_formula`):

    * ``constant`` (``alpha_value`` > 0): a fixed factor, the control in a search.
    * ``sigmoid_snr`` (``temperature`` > 0): ``sigmoid(mean(e) / (temperature * (std(e) + eps)))``.
    * ``inverse_rms`` (``power`` in [0, 2]): ``RMS(e)^(-power)``; MSE becomes RMSE (1) or log-MSE (2).
    * ``outlier_damping`` (``strength`` >= 0): ``1 / (1 + strength * CV(|e|))``.

    Args:
        base: the scaled loss: ``mse``, ``mae``, ``bce`` or ``cce``.
        alpha_formula: the registered name of the formula.
        formula_params: the formula's parameters by name; missing ones take their defaults, unknown ones
            raise `ConfigError`. ``get_config`` stores the full set.
        alpha_gradient: let the gradient flow through alpha (off by default; see the module docstring).
        from_logits: ``y_pred`` holds logits; only for the ``bce`` and ``cce`` bases.

    Example:
        >>> loss = DynamicAlpha(base="bce", alpha_formula="sigmoid_snr", from_logits=True)
        >>> model.compile(optimizer="adam", loss=loss)

    A model saved with a user-registered formula reloads once that formula is registered again in the
    loading process (as for any custom object).
    """

    def __init__(
        self,
        base: str = "mse",
        alpha_formula: str = "sigmoid_snr",
        formula_params: Mapping[str, float] | None = None,
        alpha_gradient: bool = False,
        from_logits: bool = False,
        **kwargs: Any,
    ):
        kwargs.setdefault("name", "dynamic_alpha")
        super().__init__(**kwargs)
        self.base = check_choice("dynamic_alpha", "base", base, BASES)
        self.alpha_formula = get_alpha_formula(alpha_formula).name
        self.formula_params = get_alpha_formula(alpha_formula).resolve("dynamic_alpha", formula_params)
        self.alpha_gradient = check_bool("dynamic_alpha", "alpha_gradient", alpha_gradient)
        self.from_logits = check_bool("dynamic_alpha", "from_logits", from_logits)
        if self.from_logits and self.base not in ("bce", "cce"):
            raise ConfigError(
                f"dynamic_alpha: `from_logits` applies to the bce and cce bases only, but got "
                f"from_logits=True with base={self.base!r}."
            )

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return dynamic_alpha(
            y_true,
            y_pred,
            self.base,
            self.alpha_formula,
            self.formula_params,
            self.alpha_gradient,
            self.from_logits,
        )

    def _params(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "alpha_formula": self.alpha_formula,
            "formula_params": dict(self.formula_params),
            "alpha_gradient": self.alpha_gradient,
            "from_logits": self.from_logits,
        }
