"""Loss factories: every loss addressed by a name and a flat dict of parameters.

A `LossFactory` declares its parameters (`ParamSpec`: type, valid domain, default value and default
*search range*) and builds a `keras.losses.Loss` from them. The flat params dict is the one vocabulary of
the whole tool: a search backend samples it, MLflow shows it, `build_loss` rebuilds from it::

    {"loss": "huber", "loss.delta": 1.5}
    {"loss": "barron", "loss.alpha": 0.7, "loss.scale": 0.3, "loss.l2": 1e-4}

``loss.l1`` and ``loss.l2`` add the weight penalty (`aloss_tune.losses.Penalized`) to any loss.

The declarations (names, `ParamSpec` domains and default ranges, tasks) need no Keras: a factory names its
loss class as ``"module:attribute"`` (or gives a callable that imports it), and the class is imported when
the first loss is built. Listing the factories (``aloss-tune losses``), checking a space or a trial's params
(`check_params`) therefore never loads a tensor library.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aloss_tune.distributions import Categorical, Distribution, Float, Int
from aloss_tune.domains import NON_NEGATIVE, Interval, check_bool, check_choice
from aloss_tune.errors import ConfigError, describe

if TYPE_CHECKING:
    import keras

TASKS = ("regression", "binary", "multiclass")
PENALTY_PARAMS = ("l1", "l2")
PREFIX = "loss."


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a loss factory.

    Args:
        name: the keyword the loss takes (``delta``); the flat key is ``loss.<name>``.
        kind: ``float``, ``int``, ``bool``, ``str`` or ``list`` (a list of floats).
        default: the value used when a search or a user gives none.
        domain: the valid values: an `Interval` for numbers, a tuple of choices for strings.
        search: the default search range, or ``None`` when the parameter is fixed unless a space searches
            it (``from_logits``, say).
        relative: the default search range is in units of the regression target's robust spread
            (a scale or a Huber delta); a study multiplies it by that spread so no trial is wasted on a
            loss that is flat for the data at hand.
        doc: one line for ``aloss-tune losses`` and the docs.
        when: ``(parent, values)``: the parameter is used only when the factory's parameter ``parent`` is one
            of ``values`` (a formula's own constants); a search samples and logs it only then.
        start: the value a study's first round tries (`aloss_tune.space.SearchSpace.first_round`), in target
            spreads when ``relative``; ``None``: ``default``. A strong starting point measured on the quality
            suite, where ``default`` is what `build_loss` takes when a parameter is not given.
    """

    name: str
    kind: type
    default: Any
    domain: Interval | tuple[str, ...] | None = None
    search: Distribution | None = None
    relative: bool = False
    doc: str = ""
    when: tuple[str, tuple[Any, ...]] | None = None
    start: Any = None

    def __post_init__(self) -> None:
        if self.search is not None and isinstance(self.domain, Interval):
            bounds = (self.search.low, self.search.high) if not isinstance(self.search, Categorical) else ()
            for bound in bounds:
                if not self.domain.contains(float(bound)):
                    raise ConfigError(
                        f"`{self.name}`: default search range {self.search} leaves the domain {self.domain}."
                    )

    def check_range(self, dist: Distribution, where: str) -> None:
        """Raise `ConfigError` if a search range allows values outside this parameter's domain."""
        if isinstance(dist, Categorical):
            for choice in dist.choices:
                self.check_value(choice, where)
            return
        if self.kind not in (float, int):
            raise ConfigError(f"{where}: `{self.name}` is a {self.kind.__name__}; give a value or categorical choices.")
        if self.kind is int and isinstance(dist, Float):
            raise ConfigError(f"{where}: `{self.name}` is an integer; use type int.")
        if isinstance(self.domain, Interval):
            for key, bound in (("low", dist.low), ("high", dist.high)):
                if not self.domain.contains(float(bound)):
                    raise ConfigError(
                        f"{where}.{key}: `{self.name}` must be {self.domain}, but got {key}={bound:g}."
                    )

    def check_value(self, value: Any, where: str) -> None:
        """Raise `ConfigError` if ``value`` is not a valid value of this parameter."""
        if isinstance(self.domain, Interval):
            self.domain.check(where, self.name, value)
        elif isinstance(self.domain, tuple) and value not in self.domain:
            raise ConfigError(
                f"{where}: `{self.name}` must be one of {', '.join(self.domain)}, but got {describe(value)}."
            )
        elif self.kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{where}: `{self.name}` must be true or false, but got {describe(value)}.")

    def describe_domain(self) -> str:
        if isinstance(self.domain, tuple):
            return "one of " + ", ".join(self.domain)
        if self.domain is None:
            return {bool: "true or false", list: "a list of numbers > 0"}.get(self.kind, "any")
        return str(self.domain)


PENALTY_SPECS = (
    ParamSpec("l1", float, 0.0, NON_NEGATIVE, Float(1e-7, 1e-2, log=True), doc="L1 weight penalty on kernels"),
    ParamSpec("l2", float, 0.0, NON_NEGATIVE, Float(1e-7, 1e-2, log=True), doc="L2 weight penalty on kernels"),
)


@dataclass(frozen=True)
class LossFactory:
    """Builds one kind of loss from its parameters.

    Args:
        name: the factory's name, as used in search spaces (``huber``).
        build_fn: called with every parameter as a keyword; returns a `keras.losses.Loss`. Either a callable
            or the path of one, ``"package.module:attribute"``, imported when the first loss is built (so
            that declaring the factory imports no Keras).
        params: the parameters, in display order.
        tasks: the problems it applies to (``regression``, ``binary``, ``multiclass``).
        description: one line.
        adaptive: the loss learns parameters during ``fit`` (needs `aloss_tune.attach`).
    """

    name: str
    build_fn: Callable[..., keras.losses.Loss] | str
    params: tuple[ParamSpec, ...] = ()
    tasks: tuple[str, ...] = TASKS
    description: str = ""
    adaptive: bool = False
    _by_name: dict[str, ParamSpec] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        names = [p.name for p in self.params]
        for n in names:
            if n in PENALTY_PARAMS:
                raise ConfigError(f"factory {self.name!r}: parameter name {n!r} is reserved for the penalty.")
        if len(set(names)) != len(names):
            raise ConfigError(f"factory {self.name!r}: duplicate parameter names {names}.")
        for p in self.params:
            if p.when is not None and p.when[0] not in names[: names.index(p.name)]:
                raise ConfigError(f"factory {self.name!r}: `{p.name}` depends on `{p.when[0]}`, which must be "
                                  "a parameter declared before it.")
        if isinstance(self.build_fn, str):
            module, _, attribute = self.build_fn.partition(":")
            if not module or not attribute:
                raise ConfigError(f"factory {self.name!r}: `build_fn` must be a callable or 'module:attribute', "
                                  f"but got {self.build_fn!r}.")
        elif not callable(self.build_fn):
            raise ConfigError(f"factory {self.name!r}: `build_fn` must be a callable or 'module:attribute', "
                              f"but got {describe(self.build_fn)}.")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"factory {self.name!r}: tasks must be among {', '.join(TASKS)}, but got {bad}.")
        self._by_name.update({p.name: p for p in self.params})

    def param(self, name: str) -> ParamSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        known = ", ".join([p.name for p in self.params] + list(PENALTY_PARAMS))
        return f"{self.name}: unknown parameter `{name}`; its parameters are: {known}."

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def search_space(self) -> dict[str, Distribution]:
        """The default search range of every searchable parameter."""
        return {p.name: p.search for p in self.params if p.search is not None}

    def build(self, **params: Any) -> keras.losses.Loss:
        """Build the loss; missing parameters take their defaults; unknown ones raise `ConfigError`."""
        for name, value in params.items():
            if name not in self._by_name:
                raise ConfigError(self._unknown(name))
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(f"{self.name}: `{name}` must not be NaN, but got {name}=nan.")
        _load_keras()
        return self.target()(**{**self.defaults(), **params})

    def target(self) -> Callable[..., keras.losses.Loss]:
        """The build function (a ``"module:attribute"`` `build_fn` imported now)."""
        if not isinstance(self.build_fn, str):
            return self.build_fn
        module, _, attribute = self.build_fn.partition(":")
        value: Callable[..., keras.losses.Loss] = getattr(importlib.import_module(module), attribute)
        return value

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise `ConfigError`, as `build` would, for a parameter this factory does not declare or a value
        outside its domain, without building the loss (no Keras). A parameter used only for some values of
        another (``when``) is checked only where it is used, as `build` ignores it elsewhere; rules between
        parameters (``clip_min <= clip_max``, say) are the loss's own: only `build` checks them. ``None`` is
        accepted where it is the default."""
        for name in params:
            if name not in self._by_name:
                raise ConfigError(self._unknown(name).replace("`", "`loss.", 1))
        for name, value in params.items():
            spec = self._by_name[name]
            if spec.when is not None:
                parent, values = spec.when
                if params.get(parent, self._by_name[parent].default) not in values:
                    continue
            if value is None and spec.default is None:
                continue
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(f"{self.name}: `{name}` must not be NaN, but got {name}=nan.")
            if isinstance(spec.domain, Interval):
                spec.domain.check(self.name, name, value)
            elif isinstance(spec.domain, tuple):
                check_choice(self.name, name, value, spec.domain)
            elif spec.kind is bool:
                check_bool(self.name, name, value)


_REGISTRY: dict[str, LossFactory] = {}
_BUILTINS_LOADED = False


def register_loss_factory(factory: LossFactory, *, overwrite: bool = False) -> LossFactory:
    """Register ``factory`` under its name so spaces and `build_loss` can use it.

    Example::

        @keras.saving.register_keras_serializable(package="my_project")
        class LogCosh(keras.losses.Loss): ...

        aloss_tune.register_loss_factory(aloss_tune.LossFactory(
            "log_cosh", build_fn=lambda: LogCosh(), tasks=("regression",)))
    """
    if not isinstance(factory, LossFactory):
        raise ConfigError(f"register_loss_factory: expected a LossFactory, but got {type(factory).__name__}.")
    if not factory.name or not factory.name.replace("_", "").isalnum():
        raise ConfigError(
            f"register_loss_factory: `name` must be letters, digits and underscores, but got {factory.name!r}."
        )
    _ensure_builtins()
    if factory.name in _REGISTRY and not overwrite:
        raise ConfigError(
            f"register_loss_factory: a factory named {factory.name!r} exists; pass overwrite=True to replace it."
        )
    _REGISTRY[factory.name] = factory
    return factory


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from aloss_tune import _factories_basic, _factories_noise, _factories_robust  # noqa: F401  (register on import)


def list_losses() -> list[str]:
    """The names of every registered loss factory."""
    _ensure_builtins()
    return list(_REGISTRY)


def get_factory(name: str) -> LossFactory:
    """The factory registered as ``name``; `ConfigError` listing the known names otherwise."""
    _ensure_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(
            f"`loss` must be one of {', '.join(sorted(_REGISTRY))}, but got loss={describe(name)}."
        )
    return _REGISTRY[name]


def split_params(params: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, float]]:
    """Split a flat params dict into (loss name, loss parameters, penalty parameters).

    Keys that do not start with ``loss.`` (model and optimizer parameters) are ignored.
    """
    if not isinstance(params, Mapping):
        raise ConfigError(f"params must be a mapping such as {{'loss': 'huber'}}, but got {describe(params)}.")
    if "loss" not in params:
        raise ConfigError("params must name the loss under the key `loss`, e.g. {'loss': 'huber'}.")
    name = params["loss"]
    loss_params: dict[str, Any] = {}
    penalty: dict[str, float] = {}
    for key, value in params.items():
        if not key.startswith(PREFIX):
            continue
        short = key[len(PREFIX):]
        if short in PENALTY_PARAMS:
            penalty[short] = value
        else:
            loss_params[short] = value
    return name, loss_params, penalty


def build_loss(params: Mapping[str, Any]) -> keras.losses.Loss:
    """Build a loss from a flat params dict such as ``{"loss": "huber", "loss.delta": 1.5}``.

    ``loss.l1`` / ``loss.l2`` > 0 wrap the loss in a weight penalty; such a loss (and an adaptive one)
    is applied to a model with `aloss_tune.attach`.
    """
    name, loss_params, penalty = split_params(params)
    factory = get_factory(name)
    for key in list(loss_params):
        if key not in factory._by_name:
            raise ConfigError(factory._unknown(key).replace("`", "`loss.", 1))
    loss = factory.build(**loss_params)
    l1, l2 = _penalty(penalty)
    if l1 or l2:
        from aloss_tune.losses.penalty import Penalized

        loss = Penalized(loss, l1=l1, l2=l2)
    return loss


def _penalty(penalty: Mapping[str, Any]) -> tuple[float, float]:
    l1 = NON_NEGATIVE.check("penalty", "loss.l1", penalty.get("l1", 0.0))
    l2 = NON_NEGATIVE.check("penalty", "loss.l2", penalty.get("l2", 0.0))
    return l1, l2


def check_params(params: Mapping[str, Any], *, where: str = "") -> LossFactory:
    """Check a flat params dict against the factories' declarations, without building the loss (no Keras):
    the loss must be registered, each ``loss.<name>`` one of its parameters, each value in its domain and the
    penalty >= 0. Returns the loss's factory; `ConfigError` otherwise (prefixed with ``where`` when given).

    Rules between parameters (``alpha_lo <= alpha_hi``, say) are the loss's own: `build_loss` checks them.
    """
    name, loss_params, penalty = split_params(params)
    try:
        factory = get_factory(name)
        factory.check_params(loss_params)
        _penalty(penalty)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    return factory


def needs_model(params: Mapping[str, Any]) -> bool:
    """Whether the loss of a flat params dict must be applied with `aloss_tune.attach` (it learns parameters
    or penalises weights), read from the declarations (no Keras). The params must pass `check_params`."""
    name, _, penalty = split_params(params)
    l1, l2 = _penalty(penalty)
    return get_factory(name).adaptive or bool(l1 or l2)


def loss_from_config(config: Mapping[str, Any], *, source: str = "") -> keras.losses.Loss:
    """A loss from a loss-config artifact (``{"params", "keras"}``), a Keras serialization or flat params.

    Always a `keras.losses.Loss`: anything else (a layer's or an optimizer's serialization, a list) is a
    `ConfigError` naming ``source`` (a file or a run) when given.
    """
    _load_keras()  # registers our classes for deserialization
    where = f"{source}: " if source else ""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}a loss config must be a mapping, but got a {type(config).__name__}.")
    if "keras" in config and isinstance(config["keras"], Mapping):
        return _deserialize(dict(config["keras"]), where)
    if "class_name" in config:
        return _deserialize(dict(config), where)
    try:
        if isinstance(config.get("loss"), str):
            return build_loss(config)
        if isinstance(config.get("params"), Mapping):
            return build_loss(config["params"])
    except ConfigError as exc:  # params no loss takes: say where they come from
        if where and not str(exc).startswith(where):
            raise ConfigError(f"{where}{exc}") from None
        raise
    raise ConfigError(
        f"{where}a loss config must hold flat params ({{'loss': 'huber', ...}}), a Keras serialization "
        f"({{'class_name': ...}}) or both ({{'params', 'keras'}}), but got keys {sorted(map(str, config))}."
    )


def check_loss_config(config: Mapping[str, Any], *, source: str = "") -> None:
    """`ConfigError` (naming ``source``) unless `loss_from_config` would rebuild a loss from ``config``.

    A loss-config artifact holds the flat params beside the Keras serialization: they are checked against the
    declarations (`check_params`, no Keras). A config that holds only a Keras serialization is rebuilt.
    """
    params: Any = None
    if isinstance(config, Mapping):
        params = config if isinstance(config.get("loss"), str) else config.get("params")
    if isinstance(params, Mapping) and isinstance(params.get("loss"), str):
        check_params(params, where=source)
    else:
        loss_from_config(config, source=source)


def _load_keras() -> None:
    """Import Keras the package's way (quietly; every loss class registered) before the first loss is built."""
    from aloss_tune import load_keras

    load_keras()


def _deserialize(config: dict[str, Any], where: str) -> keras.losses.Loss:
    import keras

    name = config.get("class_name")
    try:
        obj = keras.saving.deserialize_keras_object(config)
    except Exception as exc:  # noqa: BLE001 - Keras raises TypeError, ValueError, ... for unknown objects
        raise ConfigError(f"{where}cannot rebuild {name!r} from its Keras serialization "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}).") from None
    if not isinstance(obj, keras.losses.Loss):
        raise ConfigError(f"{where}holds a {type(obj).__name__} ({name!r}), not a keras.losses.Loss.")
    return obj


def iter_factories() -> Iterable[LossFactory]:
    _ensure_builtins()
    return list(_REGISTRY.values())


__all__ = [
    "Float",
    "Int",
    "Categorical",
    "LossFactory",
    "ParamSpec",
    "PENALTY_SPECS",
    "build_loss",
    "check_loss_config",
    "check_params",
    "get_factory",
    "iter_factories",
    "list_losses",
    "loss_from_config",
    "needs_model",
    "register_loss_factory",
    "split_params",
]
