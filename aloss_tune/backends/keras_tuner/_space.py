"""A `SearchSpace` as KerasTuner hyperparameters: the suggester, the `HyperModel` and the oracles."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import keras
import keras_tuner as kt

from aloss_tune.backends.keras_tuner._common import HYPERBAND_FACTOR
from aloss_tune.distributions import Categorical, Distribution, Float, Int
from aloss_tune.errors import UsageError
from aloss_tune.runner import TrialContext, build_trial_model
from aloss_tune.space import SearchSpace


# --------------------------------------------------------------------------------------------- suggester
class KerasTunerSuggester:
    """`aloss_tune.space.Suggester` over KerasTuner `HyperParameters`.

    ``suggest`` registers (or reads) ``hp.Float`` / ``hp.Int`` / ``hp.Choice`` under the given qualified
    name; ``conditional`` opens ``hp.conditional_scope`` when the parent is a searched value (a loss fixed
    by the space needs no scope). A parameter of a scope that is not active reads as ``None``. A parameter
    that several values of its parent use gets one scope listing all of them: KerasTuner keeps one value per
    name, and a second declaration under another scope would drop it whenever that scope is inactive
    (``HyperParameters.ensure_active_values``).
    """

    def __init__(self, hp: kt.HyperParameters):
        self.hp = hp
        self._labels: dict[str, list[tuple[Any, Any]]] = {}  # name -> [(value, KerasTuner label)]

    def suggest(self, name: str, dist: Distribution) -> Any:
        hp = self.hp
        if isinstance(dist, Float):
            grid = float_grid(dist)
            if grid is not None:
                value = hp.Choice(name, grid, ordered=True)
            elif dist.log:
                value = hp.Float(name, dist.low, dist.high, sampling="log")
            else:
                value = hp.Float(name, dist.low, dist.high, step=dist.step, sampling="linear")
            if value is None:
                return None
            if dist.step is not None and grid is None:  # a very long grid: snap KerasTuner's value onto it
                value = dist.low + round((value - dist.low) / dist.step) * dist.step
            # An optimizer may propose the closed end of KerasTuner's [0, 1) range: stay inside [low, high].
            return min(max(float(value), dist.low), dist.high)
        if isinstance(dist, Int):
            if dist.log:
                value = hp.Int(name, dist.low, dist.high, sampling="log")
            else:
                value = hp.Int(name, dist.low, dist.high, step=dist.step, sampling="linear")
            return None if value is None else min(max(int(value), dist.low), dist.high)
        labels = choice_labels(dist)
        self._labels[name] = list(zip(dist.choices, labels, strict=True))
        label = hp.Choice(name, labels, ordered=False)
        if label is None:
            return None
        return dict(zip(labels, dist.choices, strict=True))[label]

    @contextlib.contextmanager
    def conditional(self, parent: str, values: tuple[Any, ...]) -> Iterator[None]:
        pairs = self._labels.get(parent)
        if pairs is None:  # the parent is fixed by the space: nothing is conditional
            yield
            return
        # Matched by type too: True and 1 are different choices. Values the space does not offer are left out.
        labels = [label for choice, label in pairs
                  if any(choice == value and type(choice) is type(value) for value in values)]
        with self.hp.conditional_scope(parent, labels):
            yield


MAX_GRID = 1000


def float_grid(dist: Float) -> list[float] | None:
    """The values of a stepped float range, Optuna's way (``low + k * step`` up to ``high``), or ``None``.

    KerasTuner's own stepped ``Float`` computes its grid in binary floating point and can lose the top value
    (``[0, 0.3]`` step 0.1 gives 0, 0.1, 0.2), so a grid of at most `MAX_GRID` values is declared as an
    ordered ``Choice`` of exact decimal values instead; a longer one stays a stepped ``Float``.
    """
    if dist.step is None:
        return None
    low, step = Decimal(repr(dist.low)), Decimal(repr(dist.step))
    n = int((Decimal(repr(dist.high)) - low) // step) + 1
    if n > MAX_GRID:
        return None
    return [float(low + k * step) for k in range(n)]


def choice_labels(dist: Categorical) -> list[Any]:
    """The values KerasTuner holds for ``dist``'s choices.

    A ``Choice`` holds one type among str, int and float (a bool is stored as an int), so choices of one
    such type are kept as they are; any other mix (booleans, ``null``, strings with numbers) becomes JSON
    labels (``"true"``, ``"null"``, ``"\\"a\\""``).
    """
    types = {type(c) for c in dist.choices}
    if len(types) == 1 and types.pop() in (str, int, float):
        return list(dist.choices)
    return [json.dumps(c) for c in dist.choices]


# ------------------------------------------------------------------------------------------- hypermodel
class SpaceHyperModel(kt.HyperModel):
    """A `SearchSpace` as a KerasTuner `HyperModel`.

    Args:
        space: the validated space.
        target_scale: the regression target's robust spread (relative default ranges are scaled by it).
        ctx: the study context; needed only by `build` (KerasTuner's ``get_best_models``, or a user rebuilding
            the best model from ``tuner.get_best_hyperparameters()``).
    """

    def __init__(self, space: SearchSpace, target_scale: float = 1.0, ctx: TrialContext | None = None):
        super().__init__(name=space.study)
        self.space = space
        self.target_scale = target_scale
        self.ctx = ctx

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        """Register every hyperparameter, each loss's under its conditional scope."""
        suggester = KerasTunerSuggester(hp)
        for loss in self.space.losses:
            if len(self.space.losses) > 1 and "loss" in hp.values:
                hp.values["loss"] = loss  # walk each loss's scope while it is active
            self.space.sample(suggester, self.target_scale)
            for parent, choices in self.space.conditional_choices(loss, self.target_scale).items():
                key = f"loss.{loss}.{parent}"  # and each scope nested in it (an alpha formula's constants)
                for choice in choices:
                    label = next(lab for c, lab in suggester._labels.get(key, ()) if c == choice)
                    hp.values[key] = label
                    self.space.sample(suggester, self.target_scale)

    def params(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """A trial's flat params dict: the vocabulary of `aloss_tune.build_loss` and of the Optuna backend."""
        return self.space.sample(KerasTunerSuggester(hp), self.target_scale)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The compiled model (with its loss attached) of ``hp``'s params, built with its optimizer so that a
        checkpoint loads into it whole."""
        if self.ctx is None:
            raise UsageError("SpaceHyperModel.build needs the study context (ctx).")
        model, _ = build_trial_model(self.ctx, self.params(hp))
        if not model.built:  # a wrapped model (learned loss parameters) builds on its first call
            model.build((None, *self.ctx.data.x_train.shape[1:]))
        model.optimizer.build(model.trainable_variables)
        return model


# ---------------------------------------------------------------------------------------------- oracles
class _FirstRound:
    """Oracle mixin: the first trials of a new project are the space's first round (`SearchSpace.first_round`,
    each loss at its defaults), then the oracle's own proposals. A resumed project has its trials already."""

    def __init__(self, *args: Any, first_round: list[dict[str, Any]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._first_round = list(first_round or ())

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        index = len(self.trials)  # type: ignore[attr-defined]
        if index < len(self._first_round):
            return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": dict(self._first_round[index])}
        return super().populate_space(trial_id)  # type: ignore[misc]


class RandomSearchOracle(_FirstRound, kt.oracles.RandomSearchOracle):
    """KerasTuner's random search, starting with the space's first round."""


class BayesianOptimizationOracle(_FirstRound, kt.oracles.BayesianOptimizationOracle):
    """KerasTuner's Bayesian optimisation, starting with the space's first round (trials the Gaussian process
    then learns from)."""


def first_round_values(space: SearchSpace, target_scale: float = 1.0) -> list[dict[str, Any]]:
    """`SearchSpace.first_round` in KerasTuner's values: a categorical as the label KerasTuner holds."""
    labels: dict[str, dict[Any, Any]] = {}
    for name, dist in space.search_params(target_scale).items():
        if isinstance(dist, Categorical):
            labels[name] = dict(zip(dist.choices, choice_labels(dist), strict=True))
    return [{name: labels[name][value] if name in labels else value for name, value in trial.items()}
            for trial in space.first_round(target_scale)]


def make_oracle(space: SearchSpace, metric: str, direction: str, *, target_scale: float = 1.0,
                **options: Any) -> kt.Oracle:
    """The KerasTuner oracle of ``space.search.tuner`` for ``metric`` (``minimize``/``maximize``).

    ``options`` go to the oracle's constructor (``num_initial_points`` of ``bayesian``, ``factor`` of
    ``hyperband``, ...). Failures never stop KerasTuner itself (it would raise before saving its state);
    `SpaceTuner` applies the limit instead. Random search and Bayesian optimisation start with the space's
    first round (``search.first_round``); Hyperband keeps its own brackets.
    """
    search = space.search
    objective = kt.Objective(metric, "min" if direction == "minimize" else "max")
    common: dict[str, Any] = {
        "objective": objective,
        "seed": search.seed + 1,
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": sys.maxsize,
    }
    common.update(options)
    oracle: kt.Oracle
    rounds = first_round_values(space, target_scale) if search.first_round else []
    if search.tuner == "random":
        oracle = RandomSearchOracle(max_trials=search.n_trials, first_round=rounds, **common)
    elif search.tuner == "bayesian":
        oracle = BayesianOptimizationOracle(max_trials=search.n_trials, first_round=rounds, **common)
    else:
        common.setdefault("max_epochs", space.training.epochs)
        common.setdefault("factor", HYPERBAND_FACTOR)
        oracle = kt.oracles.HyperbandOracle(**common)
        oracle.max_trials = search.n_trials  # Hyperband has its own schedule; n_trials caps it
    oracle.verbose = 0  # KerasTuner's trial table on stdout only when `tune(progress=True)` asks for it
    return oracle
