"""Search spaces: one declarative description of a study, for every backend.

A space is a YAML file (or a dict) in Optuna's short form. Three lines are enough; every other field has a
default and every loss factory supplies default search ranges::

    study: quick_robust
    data: contaminated_regression
    loss: [mse, huber, barron]

The full form::

    study: robust_regression
    data: contaminated_regression          # built-in name, "module:function", or {name: ..., args: {...}}
    model:
      builder: mlp                         # built-in name or "module:function"
      params:                              # flat keys model.<name>; a bare value fixes it
        units: {type: int, low: 16, high: 128, log: true}
        dropout: {type: float, low: 0.0, high: 0.3}
    optimizer:
      name: adam
      learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    objective: {metric: val_mae, direction: minimize}
    training: {epochs: 30, batch_size: 32, early_stopping: {patience: 5}}
    loss:
      choices: [mse, huber, barron]
      params:                              # overrides of the factories' default ranges
        huber: {delta: {type: float, low: 0.1, high: 3, log: true}}
        barron: {alpha: 1.0}               # a bare value fixes a parameter
      penalty: {l2: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}}
    search: {sampler: tpe, pruner: median, n_trials: 20, seed: 0}

Loading validates everything before any work starts; an error names the file and the key path
(``loss.params.huber.delta.low``) and says what is allowed.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

from aloss_tune.distributions import Categorical, Distribution, Float, Int, from_dict
from aloss_tune.errors import ConfigError, describe
from aloss_tune.factories import PENALTY_SPECS, get_factory

TASK_METRICS: dict[str, dict[str, str]] = {
    # metric name (as Keras logs it, without the val_ prefix) -> direction
    "regression": {"mae": "minimize", "rmse": "minimize", "mse": "minimize", "median_ae": "minimize"},
    "binary": {"pr_auc": "maximize", "auc": "maximize", "accuracy": "maximize"},
    "multiclass": {"accuracy": "maximize"},
}
DEFAULT_OBJECTIVE = {"regression": "val_mae", "binary": "val_pr_auc", "multiclass": "val_accuracy"}
# Metrics computed from the validation predictions at the end of each epoch (not streaming Keras metrics):
# the median absolute error ignores up to half the validation targets, so it still ranks models by how well
# they fit the clean majority when the validation targets are contaminated too.
VALIDATION_ONLY = ("median_ae",)
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "hyperband", "none")
TUNERS = ("random", "bayesian", "hyperband")
BACKENDS = ("optuna", "keras-tuner")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")
# The optimizer arguments a space may set, per optimizer, and the values each argument takes.
OPTIMIZER_ARGS: dict[str, tuple[str, ...]] = {
    "adam": ("learning_rate", "weight_decay"),
    "adamw": ("learning_rate", "weight_decay"),
    "nadam": ("learning_rate", "weight_decay"),
    "sgd": ("learning_rate", "momentum", "weight_decay"),
    "rmsprop": ("learning_rate", "momentum", "weight_decay"),
}
OPTIMIZER_BOUNDS: dict[str, tuple[Callable[[float], bool], Callable[[float], bool], str]] = {
    "learning_rate": (lambda v: v > 0, lambda v: True, "> 0"),
    "weight_decay": (lambda v: v >= 0, lambda v: True, ">= 0"),
    "momentum": (lambda v: v >= 0, lambda v: v < 1, "in [0, 1)"),
}

ParamValue = Any  # Distribution | fixed value


class Suggester(Protocol):
    """What a search backend provides to sample one trial's params from a space."""

    def suggest(self, name: str, dist: Distribution) -> Any: ...

    def conditional(self, parent: str, value: Any) -> Any:
        """A context manager: parameters suggested inside exist only when ``parent == value``."""
        ...


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of a YAML document names one key twice (YAML forbids it; PyYAML keeps the last)."""

    def __init__(self, path: str, line: int, first: int):
        super().__init__(f"{path}: duplicate key at line {line} (first at line {first})")
        self.path, self.line, self.first = path, line, first


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (same constructors, same safety) that refuses a key repeated in one mapping."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_unique_keys(node, "", set())
        return super().construct_document(node)


def _check_unique_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias of a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if key is not None and key != "<<":
                if key in first:
                    raise DuplicateKeyError(sub, key_node.start_mark.line + 1, first[key])
                first[key] = key_node.start_mark.line + 1
            _check_unique_keys(value_node, sub, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, f"{path}[{i}]", seen)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing duplicate keys (`DuplicateKeyError`)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


@dataclass(frozen=True)
class Training:
    epochs: int = 20
    batch_size: int = 32
    early_stopping: int | None = None  # patience in epochs, on the objective metric
    jit_compile: Any = "auto"
    verbose: int = 0


@dataclass(frozen=True)
class Search:
    backend: str = "optuna"
    sampler: str = "tpe"
    sampler_args: Mapping[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    pruner_args: Mapping[str, Any] = field(default_factory=dict)
    tuner: str = "bayesian"
    n_trials: int = 20
    timeout: float | None = None
    seed: int = 0
    executions_per_trial: int = 1


@dataclass(frozen=True)
class SearchSpace:
    """A validated study description (value object). Build it with `from_yaml` or `from_dict`.

    Attributes:
        study: the study name (Optuna study, MLflow experiment).
        data: a built-in dataset name, an import path ``module:function``, or a callable / arrays given to
            the Python API (then resolved by `aloss_tune.tune`).
        data_args: keyword arguments for the data function.
        model: the model builder: ``mlp`` or ``module:function`` (or a callable from the Python API).
        model_params: ``{name: Distribution | fixed value}`` -> flat keys ``model.<name>``.
        optimizer: optimizer name; optimizer_params -> flat keys ``optimizer.<name>``.
        losses: the loss choices, in order.
        loss_params: per loss, ``{param: Distribution | fixed value}`` overriding the factory defaults.
        penalty: ``{"l1"|"l2": Distribution | fixed value}``, applied to every loss.
        source: the file it came from (for messages), or ``None``.
    """

    study: str
    data: Any = "contaminated_regression"
    data_args: Mapping[str, Any] = field(default_factory=dict)
    model: Any = "mlp"
    model_params: Mapping[str, ParamValue] = field(default_factory=dict)
    optimizer: str = "adam"
    optimizer_params: Mapping[str, ParamValue] = field(default_factory=dict)
    objective: Objective | None = None
    training: Training = field(default_factory=Training)
    losses: tuple[str, ...] = ("mse",)
    loss_params: Mapping[str, Mapping[str, ParamValue]] = field(default_factory=dict)
    penalty: Mapping[str, ParamValue] = field(default_factory=dict)
    search: Search = field(default_factory=Search)
    source: str | None = field(default=None, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Load and validate a space file (``yaml.safe_load`` only)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the space file ({exc.strerror or exc}).") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a text (UTF-8) YAML file: byte {exc.object[exc.start]:#04x} at "
                              f"offset {exc.start} is not UTF-8.") from None
        try:
            raw = load_yaml(text)
        except DuplicateKeyError as exc:
            raise ConfigError(f"{path}: {exc.path}: duplicate key at line {exc.line} (first at line "
                              f"{exc.first}); a key may appear only once.") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: invalid YAML{where}: {problem}.") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, *, source: str | None = None) -> SearchSpace:
        """Validate a space given as a dict (the YAML's content)."""
        return _Loader(source).load(raw)

    # -------------------------------------------------------------------------------------- properties
    def with_overrides(self, **changes: Any) -> SearchSpace:
        """A copy with fields of `search` (n_trials, seed, sampler, ...) or top-level fields replaced."""
        search_fields = {k: v for k, v in changes.items() if k in Search.__dataclass_fields__}
        top = {k: v for k, v in changes.items() if k not in search_fields}
        space = replace(self, **top) if top else self
        if search_fields:
            space = replace(space, search=replace(space.search, **search_fields))
        return space

    @property
    def loss_varies(self) -> bool:
        """Whether trials may use different losses (so their ``val_loss`` are not comparable)."""
        if len(self.losses) > 1:
            return True
        return bool(self.search_params(target_scale=1.0, only_loss=True))

    def loss_space(self, loss: str, target_scale: float = 1.0) -> dict[str, ParamValue]:
        """The resolved parameters of one loss: factory default ranges, then the space's overrides.

        Default ranges marked ``relative`` are multiplied by ``target_scale`` (the regression target's
        robust spread), so that a `scale` or `delta` is never flat for the data at hand.
        """
        factory = get_factory(loss)
        out: dict[str, ParamValue] = {}
        for spec in factory.params:
            if spec.search is not None:
                dist = spec.search
                if spec.relative and isinstance(dist, Float) and target_scale != 1.0:
                    dist = dist.scaled(target_scale)
                out[spec.name] = dist
        out.update(self.loss_params.get(loss, {}))
        order = {spec.name: i for i, spec in enumerate(factory.params)}  # a parameter after those it depends on
        return dict(sorted(out.items(), key=lambda item: order.get(item[0], len(order))))

    def conditional_choices(self, loss: str, target_scale: float = 1.0) -> dict[str, tuple[Any, ...]]:
        """The searched parameters of ``loss`` that other parameters depend on, with their choices."""
        factory = get_factory(loss)
        space = self.loss_space(loss, target_scale)
        parents = {spec.when[0] for spec in factory.params if spec.when is not None}
        return {name: space[name].choices for name in parents if isinstance(space.get(name), Categorical)}

    def search_params(self, target_scale: float = 1.0, only_loss: bool = False) -> dict[str, Distribution]:
        """Every searched parameter by its backend name (``loss.huber.delta``, ``model.units``)."""
        out: dict[str, Distribution] = {}
        if len(self.losses) > 1:
            out["loss"] = Categorical(self.losses)
        for loss in self.losses:
            for name, value in self.loss_space(loss, target_scale).items():
                if isinstance(value, (Float, Int, Categorical)):
                    out[f"loss.{loss}.{name}"] = value
                elif isinstance(value, tuple):
                    out.update((f"loss.{loss}.{name}.{i}", v) for i, v in enumerate(value)
                               if isinstance(v, (Float, Int, Categorical)))
        for name, value in self.penalty.items():
            if isinstance(value, (Float, Int, Categorical)):
                out[f"loss.{name}"] = value
        if not only_loss:
            for prefix, params in (("model", self.model_params), ("optimizer", self.optimizer_params)):
                for name, value in params.items():
                    if isinstance(value, (Float, Int, Categorical)):
                        out[f"{prefix}.{name}"] = value
        return out

    def sample(self, suggester: Suggester, target_scale: float = 1.0) -> dict[str, Any]:
        """One trial's flat params dict, asking ``suggester`` for every searched value.

        A loss's parameters are suggested inside ``suggester.conditional("loss", name)`` so that they exist
        only when that loss is chosen. The result uses the flat vocabulary of `aloss_tune.build_loss`:
        ``{"loss": "huber", "loss.delta": 1.2, "loss.l2": 1e-4, "model.units": 64, ...}``.
        """
        params: dict[str, Any] = {}
        loss = self.losses[0] if len(self.losses) == 1 else suggester.suggest("loss", Categorical(self.losses))
        params["loss"] = loss
        with suggester.conditional("loss", loss):
            factory = get_factory(loss)
            drawn: dict[str, Any] = {}
            for name, value in self.loss_space(loss, target_scale).items():
                spec = factory._by_name.get(name)
                if isinstance(value, tuple):  # one value per class, each fixed or searched
                    drawn[name] = [_draw(suggester, f"loss.{loss}.{name}.{i}", v) for i, v in enumerate(value)]
                    continue
                if spec is None or spec.when is None:
                    drawn[name] = _draw(suggester, f"loss.{loss}.{name}", value)
                    continue
                parent, active = spec.when  # used only for some values of an earlier parameter
                parent_value = drawn.get(parent, factory.param(parent).default)
                if parent_value in active:
                    with suggester.conditional(f"loss.{loss}.{parent}", parent_value):
                        drawn[name] = _draw(suggester, f"loss.{loss}.{name}", value)
            params.update({f"loss.{name}": value for name, value in drawn.items()})
        for name, value in self.penalty.items():
            params[f"loss.{name}"] = _draw(suggester, f"loss.{name}", value)
        for prefix, group in (("model", self.model_params), ("optimizer", self.optimizer_params)):
            for name, value in group.items():
                params[f"{prefix}.{name}"] = _draw(suggester, f"{prefix}.{name}", value)
        return params

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (YAML-able) of the validated space, for logging and the MLflow parent run."""
        def one(value: ParamValue) -> Any:
            if isinstance(value, tuple):
                return [one(v) for v in value]
            return value.to_dict() if isinstance(value, (Float, Int, Categorical)) else value

        def dump(group: Mapping[str, ParamValue]) -> dict[str, Any]:
            return {k: one(v) for k, v in group.items()}

        data = self.data if isinstance(self.data, str) else _python_name(self.data, "data")
        model = self.model if isinstance(self.model, str) else _python_name(self.model, "model")
        out: dict[str, Any] = {
            "study": self.study,
            "data": {"name": data, "args": dict(self.data_args)} if self.data_args else data,
            "model": {"builder": model, "params": dump(self.model_params)},
            "optimizer": {"name": self.optimizer, **dump(self.optimizer_params)},
            "objective": None if self.objective is None else {
                "metric": self.objective.metric, "direction": self.objective.direction},
            "training": {
                "epochs": self.training.epochs,
                "batch_size": self.training.batch_size,
                "early_stopping": (
                    {"patience": self.training.early_stopping} if self.training.early_stopping else False
                ),
                "jit_compile": self.training.jit_compile,
                "verbose": self.training.verbose,
            },
            "loss": {
                "choices": list(self.losses),
                "params": {k: dump(v) for k, v in self.loss_params.items()},
                "penalty": dump(self.penalty),
            },
            "search": {
                "backend": self.search.backend,
                "sampler": {"name": self.search.sampler, **self.search.sampler_args}
                if self.search.sampler_args else self.search.sampler,
                "pruner": {"name": self.search.pruner, **self.search.pruner_args}
                if self.search.pruner_args else self.search.pruner,
                "tuner": self.search.tuner,
                "n_trials": self.search.n_trials,
                "timeout": self.search.timeout,
                "seed": self.search.seed,
                "executions_per_trial": self.search.executions_per_trial,
            },
        }
        return out

    def resolve_objective(self, task: str, extra_metrics: tuple[str, ...] = ()) -> Objective:
        """The objective for data of ``task``: the space's, checked, or the task's default."""
        where = f"{self.source}: " if self.source else ""
        known = TASK_METRICS[task]
        if self.objective is None:
            metric = DEFAULT_OBJECTIVE[task]
            return Objective(metric, known[metric.removeprefix("val_")])
        metric = self.objective.metric
        base = metric.removeprefix("val_")
        if base == "loss":
            return self.objective
        if base not in known and base not in extra_metrics:
            allowed = ", ".join(f"val_{m}" for m in known)
            raise ConfigError(
                f"{where}objective.metric: {metric!r} is not computed for {task} data; allowed: {allowed}."
            )
        if base in VALIDATION_ONLY and metric != f"val_{base}":
            raise ConfigError(
                f"{where}objective.metric: {metric!r} is computed on the validation data only; use val_{base}."
            )
        if base in known and self.objective.direction != known[base]:
            raise ConfigError(
                f"{where}objective.direction: {metric} must be {known[base]}d, "
                f"but got direction={self.objective.direction!r}."
            )
        return self.objective


def _python_name(obj: Any, what: str) -> str:
    """How a Python object given to the API shows in logs: ``module:qualname`` or a description."""
    name = getattr(obj, "__qualname__", None)
    if name is not None:
        return f"{getattr(obj, '__module__', '?')}:{name}"
    return f"<{what} given from Python: {type(obj).__name__}>"


def _searched(value: ParamValue) -> bool:
    """A search range, or a per-class list holding one."""
    if isinstance(value, tuple):
        return any(_searched(v) for v in value)
    return isinstance(value, (Float, Int, Categorical))


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _draw(suggester: Suggester, name: str, value: ParamValue) -> Any:
    if isinstance(value, (Float, Int, Categorical)):
        return suggester.suggest(name, value)
    return value


class FixedSuggester:
    """Replays a flat params dict (no backend): `SearchSpace.sample` with it validates the params."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = dict(values)

    def suggest(self, name: str, dist: Distribution) -> Any:
        if name not in self.values:
            raise ConfigError(f"params: missing a value for `{name}`.")
        value = self.values[name]
        if not dist.contains(value):
            raise ConfigError(f"params: `{name}` must be {dist}, but got {describe(value)}.")
        return value

    def conditional(self, parent: str, value: Any) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------ loader
_TOP_KEYS = ("study", "description", "data", "model", "optimizer", "objective", "training", "loss", "search")


class _Loader:
    """Validates a raw space; every error names the source file and the key path."""

    def __init__(self, source: str | None):
        self.source = source

    def fail(self, path: str, message: str) -> ConfigError:
        prefix = f"{self.source}: " if self.source else ""
        return ConfigError(f"{prefix}{path}: {message}" if path else f"{prefix}{message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, but got {describe(value)}.")
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                raise self.fail(
                    f"{path}.{key}" if path else str(key),
                    f"unknown key; allowed keys: {', '.join(allowed)}.",
                )
        return value

    def param(self, value: Any, path: str) -> ParamValue:
        if isinstance(value, dict):
            try:
                return from_dict(value)
            except ConfigError as exc:
                sub = _key_in_message(str(exc))
                raise self.fail(f"{path}.{sub}" if sub else path, str(exc)) from None
        if isinstance(value, float) and math.isnan(value):
            raise self.fail(path, "must not be NaN.")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise self.fail(path, f"must be a value or a search range {{type: ..., ...}}, but got {describe(value)}.")

    def per_class(self, value: Any, path: str) -> tuple[ParamValue, ...] | None:
        """A list parameter (class weights): ``null``, or one weight > 0 or range per class."""
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise self.fail(path, "must be a list with one weight > 0 or one search range per class, e.g. [1.0, "
                                  f"{{type: float, low: 1, high: 10, log: true}}, 1.0], but got {describe(value)}.")
        items: list[ParamValue] = []
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            item = self.param(item, where)
            if isinstance(item, Categorical):
                bad = [c for c in item.choices if not _positive_number(c)]
            elif isinstance(item, (Float, Int)):
                bad = [b for b in (item.low,) if not b > 0]
            else:
                bad = [] if _positive_number(item) else [item]
            if bad:
                raise self.fail(where, f"a class weight must be a number > 0, but got {describe(bad[0])}.")
            items.append(item)
        return tuple(items)

    def integer(self, value: Any, path: str, low: int, default: int | None = None) -> int:
        if value is None and default is not None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise self.fail(path, f"must be an integer >= {low}, but got {describe(value)}.")
        return value

    def name(self, value: Any, path: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.fail(path, f"must be one of {', '.join(allowed)}, but got {describe(value)}.")
        return value

    def load(self, raw: Any) -> SearchSpace:
        if not isinstance(raw, dict):
            raise self.fail("", f"a search space must be a mapping of keys ({', '.join(_TOP_KEYS)}), "
                                f"but got {describe(raw)}.")
        raw = self.mapping(raw, "", _TOP_KEYS)
        study = raw.get("study")
        if not isinstance(study, str) or not study.strip():
            raise self.fail("study", f"must be a non-empty name, but got {describe(study)}.")

        data, data_args = self.data(raw.get("data", "contaminated_regression"))
        model, model_params = self.model(raw.get("model", "mlp"))
        optimizer, optimizer_params = self.optimizer(raw.get("optimizer", "adam"))
        losses, loss_params, penalty = self.loss(raw.get("loss", ["mse"]))
        training = self.training(raw.get("training"))
        search = self.search(raw.get("search"))
        objective = self.objective(raw.get("objective"))

        space = SearchSpace(
            study=study.strip(), data=data, data_args=data_args, model=model, model_params=model_params,
            optimizer=optimizer, optimizer_params=optimizer_params, objective=objective, training=training,
            losses=losses, loss_params=loss_params, penalty=penalty, search=search, source=self.source,
            raw=copy.deepcopy(raw),
        )
        if objective is not None and objective.metric.removeprefix("val_") == "loss" and space.loss_varies:
            raise self.fail(
                "objective.metric",
                f"{objective.metric!r} cannot rank trials whose loss varies: the value of one loss says "
                "nothing about another (a robust loss is small where MSE is large). Optimise a metric that "
                "does not depend on the loss, e.g. val_mae or val_rmse (regression), val_pr_auc or val_auc "
                "(classification).",
            )
        if search.sampler == "grid":
            for name, dist in space.search_params().items():
                if isinstance(dist, Float) and dist.step is None:
                    raise self.fail("search.sampler", f"grid needs a finite grid, but `{name}` is a continuous "
                                    "range; give it a `step`, make it categorical, or fix it.")
        return space

    def data(self, value: Any) -> tuple[Any, dict[str, Any]]:
        if isinstance(value, str):
            return value, {}
        mapping = self.mapping(value, "data", ("name", "args"))
        name = mapping.get("name")
        if not isinstance(name, str):
            raise self.fail("data.name", f"must be a dataset name or 'module:function', but got {describe(name)}.")
        args = mapping.get("args") or {}
        if not isinstance(args, dict):
            raise self.fail("data.args", f"must be a mapping, but got {describe(args)}.")
        return name, args

    def model(self, value: Any) -> tuple[Any, dict[str, ParamValue]]:
        if isinstance(value, str):
            return value, {}
        mapping = self.mapping(value, "model", ("builder", "params"))
        builder = mapping.get("builder", "mlp")
        if not isinstance(builder, str):
            raise self.fail("model.builder", f"must be 'mlp' or 'module:function', but got {describe(builder)}.")
        params = self.mapping(mapping.get("params"), "model.params", tuple(mapping.get("params") or ()))
        resolved = {k: self.param(v, f"model.params.{k}") for k, v in params.items()}
        if builder == "mlp":
            self.check_mlp(resolved)
        return builder, resolved

    def check_mlp(self, params: Mapping[str, ParamValue]) -> None:
        """The built-in mlp's parameter names, and every value a trial may give them (ranges, choices)."""
        from aloss_tune.models import check_mlp_param

        for name, value in params.items():
            path = f"model.params.{name}"
            if isinstance(value, Categorical):
                candidates = [(f"{path}.choices", v) for v in value.choices]
            elif isinstance(value, (Float, Int)):
                candidates = [(f"{path}.low", value.low), (f"{path}.high", value.high)]
            else:
                candidates = [(path, value)]
            for where, candidate in candidates:
                problem = check_mlp_param(name, candidate)
                if problem:
                    raise self.fail(path if problem.startswith("unknown") else where, problem)

    def optimizer(self, value: Any) -> tuple[str, dict[str, ParamValue]]:
        if isinstance(value, str):
            return self.name(value, "optimizer", OPTIMIZERS), {}
        mapping = self.mapping(value, "optimizer", ("name", *OPTIMIZER_BOUNDS))
        name = self.name(mapping.get("name", "adam"), "optimizer.name", OPTIMIZERS)
        params = {k: self.param(v, f"optimizer.{k}") for k, v in mapping.items() if k != "name"}
        for key, value in params.items():
            if key not in OPTIMIZER_ARGS[name]:
                raise self.fail(f"optimizer.{key}", f"{name} does not take {key} (allowed: "
                                f"{', '.join(OPTIMIZER_ARGS[name])}).")
            low, high, rule = OPTIMIZER_BOUNDS[key]
            if isinstance(value, Categorical):
                candidates = [(f"optimizer.{key}.choices", v) for v in value.choices]
            elif isinstance(value, (Float, Int)):
                candidates = [(f"optimizer.{key}.low", value.low), (f"optimizer.{key}.high", value.high)]
            else:
                candidates = [(f"optimizer.{key}", value)]
            for path, candidate in candidates:
                number = isinstance(candidate, (int, float)) and not isinstance(candidate, bool)
                x = float(candidate) if number else math.nan  # type: ignore[arg-type]
                if not math.isfinite(x) or not low(x) or not high(x):
                    raise self.fail(path, f"must be {rule}, but got {describe(candidate)}.")
        return name, params

    def loss(self, value: Any) -> tuple[tuple[str, ...], dict[str, dict[str, ParamValue]], dict[str, ParamValue]]:
        if isinstance(value, (str, list)):
            value = {"choices": value}
        mapping = self.mapping(value, "loss", ("choices", "params", "penalty"))
        choices = mapping.get("choices")
        if isinstance(choices, str):
            choices = [choices]
        if not isinstance(choices, list) or not choices:
            raise self.fail("loss.choices", f"must be a non-empty list of loss names, but got {describe(choices)}.")
        for i, name in enumerate(choices):
            try:
                get_factory(name)
            except ConfigError as exc:
                raise self.fail(f"loss.choices[{i}]", str(exc)) from None
        if len(set(choices)) != len(choices):
            raise self.fail("loss.choices", f"must not repeat a loss, but got {choices}.")
        params_raw = mapping.get("params") or {}
        if not isinstance(params_raw, dict):
            raise self.fail("loss.params", f"must be a mapping of loss name to parameters, but got "
                            f"{describe(params_raw)}.")
        loss_params: dict[str, dict[str, ParamValue]] = {}
        for loss_name, overrides in params_raw.items():
            path = f"loss.params.{loss_name}"
            if loss_name not in choices:
                raise self.fail(path, f"{loss_name!r} is not among loss.choices ({', '.join(choices)}).")
            factory = get_factory(loss_name)
            overrides = self.mapping(overrides, path, tuple(p.name for p in factory.params))
            resolved: dict[str, ParamValue] = {}
            for pname, raw_value in overrides.items():
                ppath = f"{path}.{pname}"
                spec = factory.param(pname)
                if spec.kind is list:
                    resolved[pname] = self.per_class(raw_value, ppath)
                    continue
                value = self.param(raw_value, ppath)
                try:
                    if isinstance(value, (Float, Int, Categorical)):
                        spec.check_range(value, ppath)
                    else:
                        spec.check_value(value, ppath)
                except ConfigError as exc:
                    raise self.fail("", str(exc)) from None
                resolved[pname] = value
            loss_params[loss_name] = resolved
        penalty_raw = self.mapping(mapping.get("penalty"), "loss.penalty", ("l1", "l2"))
        penalty: dict[str, ParamValue] = {}
        specs = {s.name: s for s in PENALTY_SPECS}
        for pname, raw_value in penalty_raw.items():
            ppath = f"loss.penalty.{pname}"
            value = self.param(raw_value, ppath)
            try:
                if isinstance(value, (Float, Int, Categorical)):
                    specs[pname].check_range(value, ppath)
                else:
                    specs[pname].check_value(value, ppath)
            except ConfigError as exc:
                raise self.fail("", str(exc)) from None
            penalty[pname] = value
        # Validate fixed combinations now (clip_min > clip_max, ...), not at the first trial.
        for loss_name in choices:
            fixed = {k: (list(v) if isinstance(v, tuple) else v) for k, v in loss_params.get(loss_name, {}).items()
                     if not _searched(v)}
            if fixed and len(fixed) == len(loss_params.get(loss_name, {})):
                try:
                    get_factory(loss_name).build(**fixed)
                except ConfigError as exc:
                    raise self.fail(f"loss.params.{loss_name}", str(exc)) from None
        return tuple(choices), loss_params, penalty

    def training(self, value: Any) -> Training:
        mapping = self.mapping(value, "training", ("epochs", "batch_size", "early_stopping", "jit_compile",
                                                   "verbose"))
        epochs = self.integer(mapping.get("epochs"), "training.epochs", 1, default=Training.epochs)
        batch = self.integer(mapping.get("batch_size"), "training.batch_size", 1, default=Training.batch_size)
        es = mapping.get("early_stopping")
        patience: int | None
        if es is None or es is False:
            patience = None
        elif es is True:
            patience = 5
        elif isinstance(es, int) and not isinstance(es, bool):
            patience = self.integer(es, "training.early_stopping", 1)
        else:
            es = self.mapping(es, "training.early_stopping", ("patience",))
            patience = self.integer(es.get("patience"), "training.early_stopping.patience", 1, default=5)
        jit = mapping.get("jit_compile", "auto")
        if jit not in (True, False, "auto"):
            raise self.fail("training.jit_compile", f"must be true, false or auto, but got {describe(jit)}.")
        verbose = self.integer(mapping.get("verbose"), "training.verbose", 0, default=0)
        return Training(epochs=epochs, batch_size=batch, early_stopping=patience, jit_compile=jit, verbose=verbose)

    def search(self, value: Any) -> Search:
        mapping = self.mapping(value, "search", ("backend", "sampler", "pruner", "tuner", "n_trials", "timeout",
                                                 "seed", "executions_per_trial"))
        sampler, sampler_args = self.named(mapping.get("sampler", "tpe"), "search.sampler", SAMPLERS)
        pruner, pruner_args = self.named(mapping.get("pruner", "median"), "search.pruner", PRUNERS)
        timeout = mapping.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                    or not timeout > 0):
            raise self.fail("search.timeout", f"must be a number of seconds > 0, but got {describe(timeout)}.")
        seed = mapping.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise self.fail("search.seed", f"must be an integer >= 0, but got {describe(seed)}.")
        return Search(
            backend=self.name(mapping.get("backend", "optuna"), "search.backend", BACKENDS),
            sampler=sampler, sampler_args=sampler_args, pruner=pruner, pruner_args=pruner_args,
            tuner=self.name(mapping.get("tuner", "bayesian"), "search.tuner", TUNERS),
            n_trials=self.integer(mapping.get("n_trials"), "search.n_trials", 1, default=Search.n_trials),
            timeout=None if timeout is None else float(timeout),
            seed=seed,
            executions_per_trial=self.integer(mapping.get("executions_per_trial"), "search.executions_per_trial",
                                              1, default=1),
        )

    def named(self, value: Any, path: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        """``name`` or ``{name: ..., <constructor args>}``."""
        if isinstance(value, dict):
            args = dict(value)
            name = args.pop("name", None)
            for key, arg in args.items():
                if not isinstance(arg, (bool, int, float, str)) and arg is not None:
                    raise self.fail(f"{path}.{key}", f"must be a plain value, but got {describe(arg)}.")
            return self.name(name, f"{path}.name", allowed), args
        if value is None:
            value = "none"
        return self.name(value, path, allowed), {}

    def objective(self, value: Any) -> Objective | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = {"metric": value}
        mapping = self.mapping(value, "objective", ("metric", "direction"))
        metric = mapping.get("metric")
        if not isinstance(metric, str) or not metric:
            raise self.fail("objective.metric", f"must be a metric name such as val_mae, but got {describe(metric)}.")
        direction = mapping.get("direction")
        if direction is None:
            base = metric.removeprefix("val_")
            known = {m: d for task in TASK_METRICS.values() for m, d in task.items()}
            direction = known.get(base, "minimize")
        direction = self.name(direction, "objective.direction", ("minimize", "maximize"))
        return Objective(metric, direction)


def _key_in_message(message: str) -> str:
    """The first backquoted key of a distribution error (``low``, ``step``), for the key path."""
    if message.startswith("`"):
        key = message[1:message.find("`", 1)].split(" ")[0]
        if key.isidentifier():
            return key
    if message.startswith("unknown key `"):
        return message.split("`")[1]
    return ""


def load_space(source: str | Path | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """A `SearchSpace` from a path, a dict or a space (returned as is)."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, Mapping):
        return SearchSpace.from_dict(dict(source))
    return SearchSpace.from_yaml(source)


