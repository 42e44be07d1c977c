"""The validating loader of a search space: YAML (``yaml.safe_load`` semantics, duplicate keys refused) or a
dict in, a `SearchSpace` out; every error names the file and the key path and says what is allowed."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import yaml

from aloss_tune.distributions import Categorical, Float, Int, from_dict
from aloss_tune.errors import ConfigError, ConfigErrors, describe
from aloss_tune.factories import PENALTY_SPECS, get_factory
from aloss_tune.space._model import (
    BACKENDS,
    OPTIMIZER_ARGS,
    OPTIMIZER_BOUNDS,
    OPTIMIZERS,
    PRUNERS,
    SAMPLERS,
    TASK_METRICS,
    TUNERS,
    VALIDATION_ONLY,
    Objective,
    ParamValue,
    Search,
    SearchSpace,
    Training,
    _positive_number,
    _searched,
)


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


_TOP_KEYS = ("study", "description", "data", "model", "optimizer", "objective", "training", "loss", "search")


class _Loader:
    """Validates a raw space; every error names the source file and the key path.

    Errors in different sections (``data``, ``model``, ``optimizer``, ``loss``, ``training``, ``search``,
    ``objective``) and unknown keys are independent: all of them are collected and raised together
    (`ConfigErrors`, or the one `ConfigError` when there is one); a section stops at its first other error.
    """

    def __init__(self, source: str | None):
        self.source = source
        self.errors: list[ConfigError] = []

    def section(self, check: Any, *args: Any, default: Any = None) -> Any:
        """``check(*args)``, or ``default`` with its `ConfigError` kept for the end of `load`."""
        try:
            return check(*args)
        except ConfigError as exc:
            self.errors.append(exc)
            return default

    def fail(self, path: str, message: str) -> ConfigError:
        prefix = f"{self.source}: " if self.source else ""
        return ConfigError(f"{prefix}{path}: {message}" if path else f"{prefix}{message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, but got {describe(value)}.")
        known = {}
        for key, item in value.items():
            if not isinstance(key, str) or key not in allowed:  # kept for the end; the known keys go on
                self.errors.append(self.fail(f"{path}.{key}" if path else str(key),
                                             f"unknown key; allowed keys: {', '.join(allowed)}."))
            else:
                known[key] = item
        return known

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
            self.errors.append(self.fail("study", f"must be a non-empty name, but got {describe(study)}."))

        data, data_args = self.section(self.data, raw.get("data", "contaminated_regression"), default=(None, {}))
        model, model_params = self.section(self.model, raw.get("model", "mlp"), default=(None, {}))
        optimizer, optimizer_params = self.section(self.optimizer, raw.get("optimizer", "adam"), default=(None, {}))
        losses, loss_params, penalty = self.section(self.loss, raw.get("loss", ["mse"]), default=((), {}, {}))
        training = self.section(self.training, raw.get("training"))
        search = self.section(self.search, raw.get("search"))
        objective = self.section(self.objective, raw.get("objective"))
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors([" ".join(str(e).split()) for e in self.errors])

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
        if args.get("label_noise") is not None:
            from aloss_tune.datasets import LabelNoise

            try:
                LabelNoise.from_dict(args["label_noise"])
            except ConfigError as exc:
                raise self.fail("", str(exc)) from None
        return name, args

    def model(self, value: Any) -> tuple[Any, dict[str, ParamValue]]:
        if isinstance(value, str):
            return value, {}
        if value is None:
            value = {}
        mapping = self.mapping(value, "model", ("builder", "params"))
        builder = mapping.get("builder", "mlp")
        if not isinstance(builder, str):
            raise self.fail("model.builder", f"must be 'mlp' or 'module:function', but got {describe(builder)}.")
        params = self.mapping(mapping.get("params"), "model.params", tuple(mapping.get("params") or ()))
        resolved = {k: self.param(v, f"model.params.{k}") for k, v in params.items()}
        if "builder" in mapping and builder == "mlp":
            self.check_mlp(resolved)
        # Without a `builder:` the params may be those of a builder given from Python (tune(build_model=f)):
        # the built-in mlp's are checked once the model is known (SearchSpace.check_model_params).
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
            self.check_conditions(loss_name, factory, resolved)
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

    def check_conditions(self, loss: str, factory: Any, resolved: Mapping[str, ParamValue]) -> None:
        """A parameter used only for some values of another (an alpha formula's constant) must be given only
        where that other parameter can take one of them: otherwise it would silently never be used."""
        for name in resolved:
            when = factory.param(name).when
            if when is None:
                continue
            parent, active = when
            spec = factory.param(parent)
            value = resolved.get(parent, spec.search if spec.search is not None else spec.default)
            values = value.choices if isinstance(value, Categorical) else None if _searched(value) else (value,)
            if values is not None and not any(v in active for v in values):
                shown = ("one of " + ", ".join(map(str, values))) if len(values) > 1 else repr(values[0])
                raise self.fail(f"loss.params.{loss}.{name}",
                                f"is used only when `{parent}` is {' or '.join(map(repr, active))}, but `{parent}` "
                                f"is {shown} here, so it would never be used; remove it or let `{parent}` take "
                                "one of those values.")

    def training(self, value: Any) -> Training:
        mapping = self.mapping(value, "training", ("epochs", "batch_size", "early_stopping", "jit_compile",
                                                   "verbose", "stop_dead"))
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
        stop_dead = mapping.get("stop_dead", True)
        if not isinstance(stop_dead, bool) and (not isinstance(stop_dead, int) or stop_dead < 1):
            raise self.fail("training.stop_dead", "must be a warm-up in epochs (an integer >= 1), true (the "
                            f"default warm-up, max(3, ceil(epochs / 4))) or false, but got {describe(stop_dead)}.")
        return Training(epochs=epochs, batch_size=batch, early_stopping=patience, jit_compile=jit, verbose=verbose,
                        stop_dead=stop_dead)

    def search(self, value: Any) -> Search:
        mapping = self.mapping(value, "search", ("backend", "sampler", "pruner", "tuner", "n_trials", "timeout",
                                                 "seed", "executions_per_trial", "first_round"))
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
            first_round=self.flag(mapping.get("first_round", True), "search.first_round"),
        )

    def flag(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, but got {describe(value)}.")
        return value

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
        if not metric.startswith("val_"):
            if metric in VALIDATION_ONLY:
                raise self.fail("objective.metric", f"{metric!r} is computed on the validation data only; use "
                                f"val_{metric}.")
            raise self.fail("objective.metric", f"{metric!r} is measured on the training data, which each model is "
                            "fitted to (and a robust loss down-weights in its own way): it cannot rank the trials; "
                            f"use val_{metric}.")
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
