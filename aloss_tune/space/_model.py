"""The value objects of a search space: `SearchSpace`, its `Objective`, `Training` and `Search` settings,
and the `Suggester` protocol through which a backend samples one trial's params from it.

Build a space with `SearchSpace.from_yaml` / `from_dict` (validated by `aloss_tune.space._loader`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

from aloss_tune.distributions import Categorical, Distribution, Float, Int
from aloss_tune.errors import ConfigError, describe
from aloss_tune.factories import get_factory

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

    def conditional(self, parent: str, values: tuple[Any, ...]) -> Any:
        """A context manager: parameters suggested inside exist only when ``parent``'s value is in ``values``.

        A parameter used by several values of its parent (``q`` by the ``gce`` and ``ngce`` active losses)
        is suggested in one scope holding all of them, so that every backend declares it once.
        """
        ...


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
    stop_dead: int | bool = True  # stop a trial that is not learning: after this many epochs (True: the default)

    @property
    def dead_warmup(self) -> int | None:
        """Epochs after which a trial no better than the baseline is stopped as dead (``None``: never)."""
        from aloss_tune.states import dead_warmup

        if self.stop_dead is False:
            return None
        return dead_warmup(self.epochs) if self.stop_dead is True else int(self.stop_dead)


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
    first_round: bool = True  # start with one trial per loss at its defaults (`SearchSpace.first_round`)


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
        from aloss_tune.space._loader import DuplicateKeyError, load_yaml

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
        from aloss_tune.space._loader import _Loader

        return _Loader(source).load(raw)

    def check_model_params(self) -> None:
        """`ConfigError` naming the key for a parameter the built-in ``mlp`` does not take, or a value it
        refuses (every value a trial may draw), when the space's model is the built-in ``mlp``. A model given
        from Python (``tune(space, build_model=f)``) owns its params: ``f``'s first model checks them."""
        if self.model == "mlp":
            from aloss_tune.space._loader import _Loader

            _Loader(self.source).check_mlp(self.model_params)

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

        A loss's parameters are suggested inside ``suggester.conditional("loss", (name,))`` so that they exist
        only when that loss is chosen; a parameter that only some values of an earlier one use (``when``)
        inside a nested ``conditional`` on those values. The result uses the flat vocabulary of `aloss_tune.build_loss`:
        ``{"loss": "huber", "loss.delta": 1.2, "loss.l2": 1e-4, "model.units": 64, ...}``.
        """
        params: dict[str, Any] = {}
        loss = self.losses[0] if len(self.losses) == 1 else suggester.suggest("loss", Categorical(self.losses))
        params["loss"] = loss
        with suggester.conditional("loss", (loss,)):
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
                    with suggester.conditional(f"loss.{loss}.{parent}", tuple(active)):
                        drawn[name] = _draw(suggester, f"loss.{loss}.{name}", value)
            params.update({f"loss.{name}": value for name, value in drawn.items()})
        for name, value in self.penalty.items():
            params[f"loss.{name}"] = _draw(suggester, f"loss.{name}", value)
        for prefix, group in (("model", self.model_params), ("optimizer", self.optimizer_params)):
            for name, value in group.items():
                params[f"{prefix}.{name}"] = _draw(suggester, f"{prefix}.{name}", value)
        return params

    def first_round(self, target_scale: float = 1.0) -> list[dict[str, Any]]:
        """The study's first trials, one per loss choice, by backend name (``loss.barron.alpha``).

        Each tries its loss at the factory's defaults (relative ones in units of ``target_scale``, the
        regression target's robust spread) and the model and optimizer at the middle of their ranges (see
        `StartSuggester`), so that every loss family is measured once at sound settings before a sampler
        takes over.
        """
        out = []
        for loss in self.losses:
            suggester = StartSuggester(loss, target_scale)
            self.sample(suggester, target_scale)
            out.append(suggester.values)
        return out

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
                "stop_dead": self.training.stop_dead,
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
                "first_round": self.search.first_round,
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


def middle(dist: Distribution) -> Any:
    """The middle of a range (geometric for a log range; on its grid for a stepped one); a categorical's first
    choice."""
    if isinstance(dist, Categorical):
        return dist.choices[0]
    value = math.sqrt(dist.low * dist.high) if dist.log else (dist.low + dist.high) / 2
    return _on_grid(dist, value)


def _on_grid(dist: Float | Int, value: float) -> Any:
    """``value`` clipped to ``dist`` and snapped to its step (an integer for `Int`)."""
    value = min(max(value, dist.low), dist.high)
    step = dist.step if isinstance(dist, Float) else (None if dist.log else dist.step)
    if step:
        value = min(dist.low + round((value - dist.low) / step) * step, dist.high)
    return int(round(value)) if isinstance(dist, Int) else float(value)


class StartSuggester:
    """The first-round sample of one loss (`SearchSpace.first_round`): records what it suggests by name.

    The loss's own parameters take the factory's ``start`` (or default) when the range holds it (a relative one
    times the target spread), else the range's middle; the weight penalty takes its range's low end (the least
    penalty); the model and optimizer take the middle of each range (`middle`).
    """

    def __init__(self, loss: str, target_scale: float = 1.0):
        self.loss = loss
        self.factory = get_factory(loss)
        self.target_scale = target_scale
        self.values: dict[str, Any] = {}

    def suggest(self, name: str, dist: Distribution) -> Any:
        value = self.loss if name == "loss" else self._start(name, dist)
        self.values[name] = value
        return value

    def _start(self, name: str, dist: Distribution) -> Any:
        parts = name.split(".")
        if parts[0] == "loss" and len(parts) == 2:  # the penalty: start with the least
            return dist.choices[0] if isinstance(dist, Categorical) else dist.low
        spec = self.factory._by_name.get(parts[2]) if parts[0] == "loss" and len(parts) == 3 else None
        if spec is not None and (spec.start is not None or spec.default is not None):
            default = spec.start if spec.start is not None else spec.default
            if isinstance(dist, Categorical):
                return default if default in dist.choices else dist.choices[0]
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                default = default * self.target_scale if spec.relative else default
                if dist.low <= default <= dist.high:
                    return _on_grid(dist, default)
        return middle(dist)

    def conditional(self, parent: str, values: tuple[Any, ...]) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


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

    def conditional(self, parent: str, values: tuple[Any, ...]) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def load_space(source: str | Path | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """A `SearchSpace` from a path, a dict or a space (returned as is)."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, Mapping):
        return SearchSpace.from_dict(dict(source))
    return SearchSpace.from_yaml(source)
