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

A formula's parameters are flat keys ``loss.<param>`` of the ``dynamic_alpha`` factory.

Whether alpha passes gradient is the option ``alpha_gradient``. It is off by default: alpha is then a
per-batch step-size factor, and the gradient of every sample is ``alpha`` times the base loss's. With the
gradient on, the model can lower the loss by moving alpha instead of fitting the data (with
``sigmoid_snr``, by biasing every prediction upwards so that the mean error turns negative), which is
rarely what anyone wants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import ops

from aloss_tune.errors import ConfigError, describe
from aloss_tune.losses._base import (
    FINITE_NON_NEGATIVE,
    FINITE_POSITIVE,
    PACKAGE,
    Interval,
    Loss,
    align,
    check_bool,
    check_choice,
)
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

BASES = ("mse", "mae", "bce", "cce")
# Keywords of DynamicAlpha, of keras.losses.Loss and of the weight penalty: a formula parameter may not
# take one of these names, because formula parameters share the flat ``loss.<name>`` namespace.
RESERVED_NAMES = frozenset(
    {
        "base",
        "alpha_formula",
        "formula_params",
        "alpha_gradient",
        "from_logits",
        "name",
        "reduction",
        "dtype",
        "l1",
        "l2",
    }
)


@dataclass(frozen=True)
class FormulaParam:
    """A parameter of an alpha formula.

    Args:
        default: the value used when none is given.
        domain: the valid values (an `Interval`); checked when a loss is built.
        doc: one line on its meaning.
        search: optional default search range (an `aloss_tune.distributions` value) for the
            ``dynamic_alpha`` factory; ``None`` leaves the parameter fixed unless a space searches it.
    """

    default: float
    domain: Interval = field(default_factory=Interval)
    doc: str = ""
    search: Any = None


@dataclass(frozen=True)
class AlphaFormula:
    """A named formula ``alpha = fn(errors, **params)``.

    ``errors`` is the batch's ``y_true - prediction`` (predicted probabilities for the cross-entropy bases),
    already aligned to ``y_pred``; ``fn`` returns a scalar tensor (or one broadcastable to the per-sample
    loss, shape ``(batch,)``).
    """

    name: str
    fn: Callable[..., Any]
    params: Mapping[str, FormulaParam] = field(default_factory=dict)
    doc: str = ""

    def resolve(self, owner: str, given: Mapping[str, Any] | None) -> dict[str, float]:
        """Validate ``given`` against the declared parameters and fill in defaults."""
        given = {} if given is None else given
        if not isinstance(given, Mapping):
            raise ConfigError(
                f"{owner}: `formula_params` must be a mapping of parameter names to numbers, "
                f"but got formula_params={describe(given)}."
            )
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            allowed = ", ".join(self.params) or "none"
            raise ConfigError(
                f"{owner}: alpha formula {self.name!r} has no parameter `{unknown[0]}`; "
                f"its parameters are: {allowed}."
            )
        return {
            key: spec.domain.check(owner, key, given.get(key, spec.default))
            for key, spec in self.params.items()
        }


_FORMULAS: dict[str, AlphaFormula] = {}
_LISTENERS: list[Callable[[AlphaFormula], None]] = []


def register_alpha_formula(
    name: str,
    *,
    params: Mapping[str, FormulaParam] | None = None,
    doc: str | None = None,
    overwrite: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn(errors, **params) -> alpha`` as the alpha formula ``name``.

    The formula is then available to `DynamicAlpha` and, with each parameter as a flat key
    ``loss.<param>``, to the ``dynamic_alpha`` factory. A parameter name shared by two formulas must be
    declared identically by both (it is one flat key).

    Args:
        name: letters, digits and underscores.
        params: the formula's parameters and their domains; the function takes them as keywords.
        doc: one line on what alpha means; defaults to the first line of the function's docstring.
        overwrite: replace a formula of the same name instead of raising `ConfigError`.

    Returns:
        The decorator; it returns the function unchanged.
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise ConfigError(
            "register_alpha_formula: `name` must be letters, digits and underscores, "
            f"but got name={describe(name)}."
        )
    declared = dict(params or {})
    for key, spec in declared.items():
        if key in RESERVED_NAMES or not key.isidentifier():
            raise ConfigError(
                f"register_alpha_formula({name!r}): parameter name {key!r} is reserved or not an identifier."
            )
        if not isinstance(spec, FormulaParam):
            raise ConfigError(
                f"register_alpha_formula({name!r}): parameter {key!r} must be a FormulaParam, "
                f"but got {type(spec).__name__}."
            )
        spec.domain.check(f"register_alpha_formula({name!r})", f"{key} default", spec.default)
        for other in _FORMULAS.values():
            if other.name != name and key in other.params and other.params[key] != spec:
                raise ConfigError(
                    f"register_alpha_formula({name!r}): parameter {key!r} is declared differently by "
                    f"formula {other.name!r} ({other.params[key]}); use another name or the same declaration."
                )

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _FORMULAS and not overwrite:
            raise ConfigError(
                f"register_alpha_formula: a formula named {name!r} exists; pass overwrite=True to replace it."
            )
        text = doc if doc is not None else (fn.__doc__ or "").strip().split("\n")[0]
        formula = AlphaFormula(name, fn, declared, text)
        _FORMULAS[name] = formula
        for listener in list(_LISTENERS):
            listener(formula)
        return fn

    return decorator


def add_registration_listener(listener: Callable[[AlphaFormula], None]) -> None:
    """Call ``listener(formula)`` after each future registration (used by the factory registry)."""
    _LISTENERS.append(listener)


def list_alpha_formulas() -> list[str]:
    """The names of the registered alpha formulas."""
    return list(_FORMULAS)


def get_alpha_formula(name: str, owner: str = "dynamic_alpha") -> AlphaFormula:
    """The formula registered as ``name``; `ConfigError` listing the known ones otherwise."""
    if not isinstance(name, str) or name not in _FORMULAS:
        raise ConfigError(
            f"{owner}: `alpha_formula` must be one of {', '.join(_FORMULAS)}, "
            f"but got alpha_formula={describe(name)}."
        )
    return _FORMULAS[name]


def _safe_std(x: Any) -> Any:
    """Population standard deviation of all elements, with a zero (not NaN) gradient when it is 0."""
    variance = ops.var(x)
    positive = variance > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, variance, ops.ones_like(variance))), 0.0)


def _eps() -> float:
    """The guard added to denominators: Keras's epsilon (1e-7 unless configured)."""
    return float(keras.config.epsilon())


@register_alpha_formula(
    "constant", params={"alpha_value": FormulaParam(1.0, FINITE_POSITIVE, "the constant alpha")}
)
def constant(errors: Any, alpha_value: float) -> Any:
    """alpha = alpha_value: a fixed multiple of the base loss (the control of a search over formulas)."""
    return ops.convert_to_tensor(alpha_value, dtype=errors.dtype)


@register_alpha_formula(
    "sigmoid_snr",
    params={
        "temperature": FormulaParam(
            1.0, FINITE_POSITIVE, "divides the signal-to-noise ratio before the sigmoid"
        )
    },
)
def sigmoid_snr(errors: Any, temperature: float) -> Any:
    """alpha = sigmoid(mean(e) / (temperature * (std(e) + eps))), in (0, 1): the batch's error bias.

    The signal-to-noise ratio of the errors is 0 for an unbiased batch (alpha = 0.5); alpha tends to 1
    when the model under-predicts the whole batch (``e = y_true - y_pred > 0``) and to 0 when it
    over-predicts. It is asymmetric on purpose. For the ``cce`` base the mean error is identically 0 (both
    rows sum to one), so alpha is always 0.5 there.
    """
    return ops.sigmoid(ops.mean(errors) / (temperature * (_safe_std(errors) + _eps())))


@register_alpha_formula(
    "inverse_rms",
    params={"power": FormulaParam(1.0, Interval(0.0, 2.0), "exponent of 1 / RMS(e), in [0, 2]")},
)
def inverse_rms(errors: Any, power: float) -> Any:
    """alpha = (mean(e^2) + eps)^(-power / 2): normalises the loss by the batch's error scale.

    With alpha's gradient stopped and the ``mse`` base (``M`` = the batch MSE), the step is that of the
    objective ``M^(1 - power/2)``: ``power = 0`` is MSE, ``1`` is RMSE, ``2`` is ``log M``, the Gaussian
    negative log-likelihood with its variance estimated from the batch (scale-free: the step no longer
    depends on the units of the target). Near a perfect fit alpha grows up to ``eps^(-power/2)``.
    """
    return ops.power(ops.mean(ops.square(errors)) + _eps(), -0.5 * power)


@register_alpha_formula(
    "outlier_damping",
    params={"strength": FormulaParam(1.0, FINITE_NON_NEGATIVE, "how strongly dispersed errors shrink alpha")},
)
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
