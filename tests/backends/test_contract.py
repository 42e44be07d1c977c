"""The search-backend contract: whichever backend samples a space, a trial sees the same flat params.

One test class runs against every backend (Optuna's samplers and KerasTuner's oracles), each driven through
its real ask/tell loop with the backend's own factories (`optuna.create_study`, `keras_tuner.make_tuner`)
and a cheap synthetic objective, so no model is trained. The contract:

* a loss's parameters appear only when that loss is chosen, and every loss gets chosen; a parameter of a
  sub-loss (``q`` of ``active_passive``'s ``gce`` and ``ngce``) only when that sub-loss is chosen;
* every value lies in its range, on its step grid, with its type (a categorical keeps ``True``, ``None``,
  ``1`` and ``"a"`` apart);
* a log range is sampled log-uniformly (checked on the backends that sample uniformly at random);
* the flat params keys are those the space defines for the chosen loss, the same on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from aloss_tune.backends import keras_tuner as kt_backend
from aloss_tune.backends import optuna as optuna_backend
from aloss_tune.distributions import Categorical, Float, Int
from aloss_tune.factories import get_factory
from aloss_tune.runner import TrialContext, prepare
from aloss_tune.space import SearchSpace

SPACE = {
    "study": "contract",
    "data": "contaminated_regression",
    "model": {
        "builder": "helpers.user_side:lenient_mlp",  # the built-in mlp refuses `flag` and `mixed`
        "params": {
            "units": {"type": "int", "low": 8, "high": 64, "log": True},
            "layers": {"type": "int", "low": 0, "high": 4, "step": 2},
            "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
            "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
            "flag": {"type": "categorical", "choices": [True, False, None]},
            "mixed": {"type": "categorical", "choices": [1, "a", 2.5]},
        }
    },
    "optimizer": {
        "name": "adam",
        "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
    },
    "objective": {"metric": "val_mae", "direction": "minimize"},
    "training": {"epochs": 3},
    "loss": {
        "choices": ["mse", "huber", "dynamic_alpha"],
        "params": {"huber": {"delta": {"type": "float", "low": 0.5, "high": 5.0, "log": True}}},
        "penalty": {"l2": {"type": "float", "low": 1.0e-6, "high": 1.0e-2, "log": True}},
    },
    "search": {"seed": 3},
}
# The label-noise family on binary data: active_passive nests a scope per sub-loss inside its loss's scope,
# each of its two parents (active, passive) with parameters that several of its values share.
CLASSIFICATION_SPACE = {
    **SPACE,
    "study": "contract_classification",
    "data": {"name": "imbalanced_classification", "args": {"n_samples": 600}},
    "objective": {"metric": "val_auc", "direction": "maximize"},
    "loss": {
        "choices": ["bce", "gce", "sce", "active_passive", "bootstrap"],
        "params": {"active_passive": {
            "active": {"type": "categorical", "choices": ["ce", "nce", "gce", "ngce", "focal", "nfocal"]},
            "log_clip": {"type": "float", "low": -9.0, "high": -2.0},
            "min_prob": {"type": "float", "low": 1.0e-8, "high": 1.0e-6, "log": True},
        }},
        "penalty": {"l1": {"type": "float", "low": 1.0e-7, "high": 1.0e-4, "log": True}},
    },
}
SPACES = {"regression": SPACE, "classification": CLASSIFICATION_SPACE}
N_DRAWS = 40

pytestmark = pytest.mark.filterwarnings(
    # scikit-learn's Gaussian process (KerasTuner's Bayesian oracle) on a handful of points
    "ignore::sklearn.exceptions.ConvergenceWarning",
)


def synthetic_objective(params: dict[str, Any]) -> float:
    """A cheap, deterministic objective with some structure for the model-based samplers."""
    return abs(math.log10(params["optimizer.learning_rate"]) + 2.0) + 0.3 * (params["loss"] != "huber")


@dataclass(frozen=True)
class Backend:
    """A backend under contract: how to draw ``n`` trials' params from a space through its ask/tell loop."""

    name: str
    uniform: bool  # draws independently and uniformly, so the sampling law itself can be checked
    draw: Callable[[SearchSpace, TrialContext, Path, int], list[dict[str, Any]]]
    n: int = N_DRAWS


def _optuna(sampler: str) -> Callable[..., list[dict[str, Any]]]:
    def draw(space: SearchSpace, ctx: TrialContext, tmp: Path, n: int) -> list[dict[str, Any]]:
        space = space.with_overrides(sampler=sampler)
        study = optuna_backend.create_study(space, optuna.storages.InMemoryStorage(), space.study, "minimize")
        out = []
        for _ in range(n):
            trial = study.ask()
            params = space.sample(optuna_backend.OptunaSuggester(trial), ctx.target_scale)
            study.tell(trial, synthetic_objective(params))
            out.append(params)
        return out

    return draw


def _keras_tuner(tuner: str, **oracle_options: Any) -> Callable[..., list[dict[str, Any]]]:
    def draw(space: SearchSpace, ctx: TrialContext, tmp: Path, n: int) -> list[dict[str, Any]]:
        space = space.with_overrides(tuner=tuner, n_trials=n)
        kt = kt_backend.make_tuner(space, ctx, directory=tmp, oracle_options=oracle_options)
        oracle = kt.oracle
        out = []
        while len(out) < n:  # KerasTuner's search loop, with the synthetic objective for run_trial
            trial = oracle.create_trial(kt.tuner_id)
            if trial.status != "RUNNING":
                break
            params = kt.hypermodel.params(trial.hyperparameters)
            oracle.update_trial(trial.trial_id, {oracle.objective.name: synthetic_objective(params)})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
            out.append(params)
        return out

    return draw


BACKENDS = [
    Backend("optuna-random", True, _optuna("random")),
    Backend("optuna-tpe", False, _optuna("tpe")),
    Backend("keras-tuner-random", True, _keras_tuner("random")),
    # Each Gaussian-process proposal takes seconds here: five random starts, then one proposal.
    Backend("keras-tuner-bayesian", False, _keras_tuner("bayesian", num_initial_points=5), n=6),
    Backend("keras-tuner-hyperband", False, _keras_tuner("hyperband", hyperband_iterations=20)),
]


@pytest.fixture(scope="module", params=sorted(SPACES))
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return SearchSpace.from_dict(SPACES[request.param])


@pytest.fixture(scope="module")
def ctx(space: SearchSpace) -> TrialContext:
    return prepare(space)


@pytest.fixture(scope="module")
def optuna_reference(space: SearchSpace, ctx: TrialContext, tmp_path_factory: pytest.TempPathFactory
                     ) -> list[dict[str, Any]]:
    """The reference backend's draws (Optuna, random sampler)."""
    return BACKENDS[0].draw(space, ctx, tmp_path_factory.mktemp("reference"), N_DRAWS)


@pytest.fixture(scope="module", params=BACKENDS, ids=[b.name for b in BACKENDS])
def drawn(request: pytest.FixtureRequest, space: SearchSpace, ctx: TrialContext,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Backend, list[dict[str, Any]]]:
    backend: Backend = request.param
    draws = backend.draw(space, ctx, tmp_path_factory.mktemp(backend.name), backend.n)
    assert len(draws) == backend.n
    return backend, draws


def active(params: dict[str, Any], name: str) -> bool:
    """Whether the loss parameter ``name`` exists in a trial of ``params`` (a formula's constant exists only
    with its formula, a sub-loss's constant only with its sub-loss)."""
    factory = get_factory(params["loss"])
    spec = factory._by_name.get(name)
    if spec is None or spec.when is None:
        return True
    parent, values = spec.when
    return params.get(f"loss.{parent}", factory.param(parent).default) in values


def flat_ranges(space: SearchSpace, params: dict[str, Any], target_scale: float) -> dict[str, Any]:
    """Flat key -> range (or fixed value) for the trial of ``params`` (its loss and, for dynamic_alpha, its
    alpha formula), independently of any backend."""
    out: dict[str, Any] = {f"loss.{k}": v for k, v in space.loss_space(params["loss"], target_scale).items()
                           if active(params, k)}
    out.update({f"loss.{k}": v for k, v in space.penalty.items()})
    out.update({f"model.{k}": v for k, v in space.model_params.items()})
    out.update({f"optimizer.{k}": v for k, v in space.optimizer_params.items()})
    return out


def kind(params: dict[str, Any]) -> tuple[Any, ...]:
    """The loss of a trial and the values of its parameters that others depend on (its alpha formula, its
    active and passive losses): trials of one kind have the same keys."""
    factory = get_factory(params["loss"])
    parents = sorted({spec.when[0] for spec in factory.params if spec.when is not None})
    return (params["loss"], *(params.get(f"loss.{parent}") for parent in parents))


def expected_keys(space: SearchSpace, params: dict[str, Any], target_scale: float) -> set[str]:
    """The flat keys the space defines for the trial of ``params``."""
    return {"loss", *flat_ranges(space, params, target_scale)}


def on_grid(value: float, dist: Float) -> bool:
    k = (value - dist.low) / dist.step  # type: ignore[operator]
    return abs(k - round(k)) < 1e-9


class TestBackendContract:
    """Every backend honours the space the same way (cf. optuna's `pytest_samplers.py`)."""

    def test_conditional_params_exist_only_for_the_chosen_loss(self, drawn: Any, space: SearchSpace,
                                                               ctx: TrialContext) -> None:
        backend, draws = drawn
        chosen = {p["loss"] for p in draws}
        if backend.n >= N_DRAWS:
            assert chosen == set(space.losses), f"{backend.name} never chose {set(space.losses) - chosen}"
        for params in draws:
            mine = space.loss_space(params["loss"], ctx.target_scale)
            own = {f"loss.{name}" for name in mine if active(params, name)}
            others = {f"loss.{name}" for loss in space.losses if loss != params["loss"]
                      for name in space.loss_space(loss, ctx.target_scale)} - {f"loss.{name}" for name in mine}
            assert own <= set(params)
            assert not others & set(params), f"{backend.name}: {params}"
            assert not {f"loss.{name}" for name in mine if not active(params, name)} & set(params), params

    def test_values_honour_their_ranges_steps_and_types(self, drawn: Any, space: SearchSpace,
                                                        ctx: TrialContext) -> None:
        backend, draws = drawn
        assert all(p["loss"] in space.losses for p in draws)
        for params in draws:
            for key, dist in flat_ranges(space, params, ctx.target_scale).items():
                value = params[key]
                if isinstance(dist, Categorical):
                    assert dist.contains(value), f"{backend.name}: {key}={value!r} not in {dist.choices}"
                elif isinstance(dist, Int):
                    assert type(value) is int and dist.contains(value), f"{backend.name}: {key}={value!r}"
                elif isinstance(dist, Float):
                    assert type(value) is float, f"{backend.name}: {key}={value!r}"
                    assert dist.low <= value <= dist.high, f"{backend.name}: {key}={value}"
                    if dist.step is not None:
                        assert on_grid(value, dist), f"{backend.name}: {key}={value} is off the grid"
                else:
                    assert value == dist

    def test_every_categorical_value_and_grid_end_is_reachable(self, drawn: Any) -> None:
        backend, draws = drawn
        if not backend.uniform:
            pytest.skip("a model-based sampler concentrates where the objective is good")
        assert {p["model.flag"] for p in draws} == {True, False, None}
        assert {repr(p["model.mixed"]) for p in draws} == {"1", "'a'", "2.5"}
        assert {p["model.layers"] for p in draws} == {0, 2, 4}
        assert {p["model.dropout"] for p in draws} == {0.0, 0.1, 0.2, 0.3}

    def test_log_ranges_are_sampled_log_uniformly(self, drawn: Any) -> None:
        backend, draws = drawn
        if not backend.uniform:
            pytest.skip("a model-based sampler concentrates where the objective is good")
        # Below the geometric midpoint: about half the draws under log sampling, about 3% under linear.
        lr_low = sum(p["optimizer.learning_rate"] < math.sqrt(1e-4 * 1e-1) for p in draws) / len(draws)
        assert 0.3 <= lr_low <= 0.7, lr_low
        # model.units in [8, 64]: log-uniform puts about half at or below 22, uniform about a quarter.
        units_low = sum(p["model.units"] <= 22 for p in draws) / len(draws)
        assert 0.35 <= units_low <= 0.75, units_low

    def test_flat_keys_are_the_spaces_and_the_same_as_optuna(self, drawn: Any, space: SearchSpace,
                                                             ctx: TrialContext,
                                                             optuna_reference: list[dict[str, Any]]) -> None:
        backend, draws = drawn
        reference = {kind(p): set(p) for p in optuna_reference}
        for params in draws:
            assert set(params) == expected_keys(space, params, ctx.target_scale)
            if kind(params) in reference:
                assert set(params) == reference[kind(params)]
