"""The registry of dynamic-alpha formulas: names and declared parameters, readable without Keras.

A formula is ``alpha = fn(errors, **params)`` (`aloss_tune.losses.dynamic`). Its *declaration* (name,
parameters with their domains, defaults and search ranges) lives here, so that the ``dynamic_alpha`` factory
lists every formula's parameters without importing a tensor library; its *function*, written in `keras.ops`,
is bound when it is defined:

* a built-in formula is declared in `BUILTIN_PARAMS`; `aloss_tune.losses.dynamic` defines its function under
  the same name and binds it with `builtin_formula` (its docstring's first line becomes the formula's doc);
* a user's formula is declared and bound at once by `register_alpha_formula` (re-exported by
  `aloss_tune.losses`), and every registration is announced to the listeners (the factory registry).

This module imports nothing of ours but `aloss_tune.domains` and `aloss_tune.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aloss_tune.domains import FINITE_NON_NEGATIVE, FINITE_POSITIVE, Interval
from aloss_tune.errors import ConfigError, describe

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


#: The parameters of the built-in formulas, whose functions are in `aloss_tune.losses.dynamic`.
BUILTIN_PARAMS: dict[str, dict[str, FormulaParam]] = {
    "constant": {"alpha_value": FormulaParam(1.0, FINITE_POSITIVE, "the constant alpha")},
    "sigmoid_snr": {
        "temperature": FormulaParam(1.0, FINITE_POSITIVE, "divides the signal-to-noise ratio before the sigmoid")
    },
    "inverse_rms": {"power": FormulaParam(1.0, Interval(0.0, 2.0), "exponent of 1 / RMS(e), in [0, 2]")},
    "outlier_damping": {
        "strength": FormulaParam(1.0, FINITE_NON_NEGATIVE, "how strongly dispersed errors shrink alpha")
    },
}


class _Unbound:
    """The function of a built-in formula before `aloss_tune.losses.dynamic` has bound it (never called: the
    losses that call formulas live in that module)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"alpha formula {self.name!r}: its function is bound when aloss_tune.losses loads.")

    def __repr__(self) -> str:
        return f"<alpha formula {self.name!r}, not loaded yet>"


_FORMULAS: dict[str, AlphaFormula] = {
    name: AlphaFormula(name, _Unbound(name), params) for name, params in BUILTIN_PARAMS.items()
}
_LISTENERS: list[Callable[[AlphaFormula], None]] = []
_BUILTIN_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def builtin_formula(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator binding ``fn`` as the function of the built-in formula of its name (`BUILTIN_PARAMS`); its
    docstring's first line is the formula's doc. A formula a user registered under that name meanwhile is
    kept. Returns ``fn`` unchanged."""
    name = fn.__name__
    _BUILTIN_FUNCTIONS[name] = fn
    current = _FORMULAS.get(name)
    if current is not None and isinstance(current.fn, _Unbound):
        _FORMULAS[name] = AlphaFormula(name, fn, current.params, _first_line(fn.__doc__))
    return fn


def is_builtin(name: str) -> bool:
    """Whether the formula registered as ``name`` is the built-in one (not a user's under that name)."""
    formula = _FORMULAS.get(name)
    return (formula is not None and formula.params == BUILTIN_PARAMS.get(name)
            and (isinstance(formula.fn, _Unbound) or formula.fn is _BUILTIN_FUNCTIONS.get(name)))


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]


def register_alpha_formula(
    name: str,
    *,
    params: Mapping[str, FormulaParam] | None = None,
    doc: str | None = None,
    overwrite: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn(errors, **params) -> alpha`` as the alpha formula ``name``.

    The formula is then available to `aloss_tune.losses.DynamicAlpha` and, with each parameter as a flat key
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
        text = doc if doc is not None else _first_line(fn.__doc__)
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
