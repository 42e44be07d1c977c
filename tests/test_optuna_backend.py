"""Samplers and pruners built from a space, and the sampling of conditional params through Optuna."""

from __future__ import annotations

import contextlib

import optuna
import pytest

from aloss_tune.backends.optuna import OptunaSuggester, make_pruner, make_sampler
from aloss_tune.backends.pruning import FamilyMedianPruner
from aloss_tune.errors import ConfigError
from aloss_tune.space import SearchSpace


def space(sampler="tpe", pruner="median", **extra):
    return SearchSpace.from_dict({"study": "s", "loss": ["mse", "huber"], "training": {"epochs": 9},
                                  "search": {"sampler": sampler, "pruner": pruner, "seed": 7}, **extra})


@pytest.mark.parametrize("name, cls", [("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
                                       ("cmaes", optuna.samplers.CmaEsSampler)])
def test_samplers(name, cls):
    sampler = make_sampler(space(name))
    assert isinstance(sampler, cls)
    study = optuna.create_study(sampler=sampler)
    spec = space(name)
    for _ in range(4):
        trial = study.ask()
        params = spec.sample(OptunaSuggester(trial))
        assert set(params) == ({"loss"} if params["loss"] == "mse" else {"loss", "loss.delta"})
        study.tell(trial, 1.0)


def test_grid_sampler_enumerates_every_combination():
    spec = SearchSpace.from_dict({"study": "s", "loss": {"choices": ["mse", "huber"], "params": {"huber": {
        "delta": {"type": "float", "low": 0.5, "high": 1.5, "step": 0.5}}}}, "search": {"sampler": "grid"}})
    study = optuna.create_study(sampler=make_sampler(spec))
    seen = set()

    def objective(trial):
        params = spec.sample(OptunaSuggester(trial))
        seen.add((params["loss"], params.get("loss.delta")))
        return 0.0

    study.optimize(objective, n_trials=20)  # the grid sampler stops the study once its grid is done
    assert len(study.trials) == 6
    # the grid is the product of the backend names: 2 losses x 3 deltas (delta unused for mse)
    assert seen == {("mse", None), ("huber", 0.5), ("huber", 1.0), ("huber", 1.5)}


def test_pruners():
    median = make_pruner(space(pruner="median"))
    assert isinstance(median, FamilyMedianPruner)
    assert (median.n_startup_trials, median.n_warmup_steps) == (2, 2)  # 9 epochs: warm-up max(2, 9 // 4)
    assert make_pruner(space(pruner="median", training={"epochs": 40})).n_warmup_steps == 10
    hyperband = make_pruner(space(pruner="hyperband"))
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner) and hyperband._max_resource == 9
    assert isinstance(make_pruner(space(pruner="none")), optuna.pruners.NopPruner)


def test_sampler_arguments_are_checked():
    spec = SearchSpace.from_dict({"study": "s", "loss": ["mse"], "search": {"sampler": {"name": "tpe",
                                                                                       "n_startup_trials": 3}}})
    assert make_sampler(spec)._n_startup_trials == 3
    spec = SearchSpace.from_dict({"study": "s", "loss": ["mse"], "search": {"sampler": {"name": "random",
                                                                                       "bogus": 1}}})
    with pytest.raises(ConfigError, match=r"search\.sampler\.bogus: unknown argument of optuna's Random"):
        make_sampler(spec)


def test_a_study_searches_one_class_weight_and_reloads_the_best_loss_with_it(stores):
    import aloss_tune

    space = {"study": "weights", "data": "helpers.user_side:tiny_multiclass",
             "objective": {"metric": "val_accuracy", "direction": "maximize"},
             "training": {"epochs": 1, "batch_size": 64},
             "loss": {"choices": ["class_cce"], "params": {"class_cce": {
                 "class_weights": [1.0, {"type": "float", "low": 2.0, "high": 8.0}, 0.5]}}},
             "search": {"sampler": "random", "pruner": "none", "n_trials": 2, "seed": 1}}
    result = aloss_tune.tune(space, storage=stores["storage"], tracking=False)
    trials = result.study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        middle = trial.params["loss.class_cce.class_weights.1"]
        assert 2.0 <= middle <= 8.0
        assert trial.user_attrs["aloss_tune.params"]["loss.class_weights"] == [1.0, middle, 0.5]
    best = aloss_tune.load_best_loss("weights", storage=stores["storage"])
    assert best.get_config()["class_weights"] == result.best_params["loss.class_weights"]


# ---------------------------------------------------------------------------------------- the first round
FIRST_ROUND_SPACE = {
    "study": "first", "data": "contaminated_regression",
    "model": {"params": {"units": {"type": "int", "low": 4, "high": 16, "log": True},
                         "dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1}}},
    "optimizer": {"name": "adam", "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
    "training": {"epochs": 1, "batch_size": 128},
    "loss": {"choices": ["huber", "barron", "dynamic_alpha"],
             "penalty": {"l2": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True}}},
    "search": {"sampler": "tpe", "pruner": "none", "n_trials": 4, "seed": 3},
}


def test_the_first_round_tries_each_loss_at_its_start_and_the_middle_of_the_model_ranges():
    from aloss_tune.factories import get_factory

    spec = SearchSpace.from_dict(FIRST_ROUND_SPACE)
    rounds = spec.first_round(target_scale=50.0)
    assert [r["loss"] for r in rounds] == ["huber", "barron", "dynamic_alpha"]
    huber, barron, dynamic = rounds
    assert huber["loss.huber.delta"] == pytest.approx(0.3 * 50.0)  # its start, 0.3 spreads, in target units
    assert barron["loss.barron.alpha"] == get_factory("barron").param("alpha").start == 0.0
    assert barron["loss.barron.scale"] == pytest.approx(0.1 * 50.0)
    # the formula's default and only that formula's constants (its `when` condition)
    assert dynamic["loss.dynamic_alpha.alpha_formula"] == get_factory("dynamic_alpha").param("alpha_formula").default
    assert "loss.dynamic_alpha.temperature" in dynamic and "loss.dynamic_alpha.power" not in dynamic
    for r in rounds:
        assert r["model.units"] == 8 and r["model.dropout"] == 0.1  # geometric middle; middle on the grid
        assert r["optimizer.learning_rate"] == pytest.approx(1e-2)
        assert r["loss.l2"] == 1e-6  # the least penalty


def test_optuna_runs_the_first_round_first_and_only_in_a_new_study(stores):
    import aloss_tune

    result = aloss_tune.tune(FIRST_ROUND_SPACE, storage=stores["storage"], tracking=False, progress=False)
    trials = result.study.get_trials()
    spec = SearchSpace.from_dict(FIRST_ROUND_SPACE)
    rounds = spec.first_round(result.study.user_attrs["aloss_tune.target_scale"])
    assert [t.params for t in trials[:3]] == rounds
    assert trials[3].params["loss"] in ("huber", "barron", "dynamic_alpha")  # then the sampler's own
    resumed = aloss_tune.tune(FIRST_ROUND_SPACE, storage=stores["storage"], tracking=False, progress=False,
                              n_trials=1)
    assert len(resumed.study.get_trials()) == 5 and not any(
        t.params == rounds[0] for t in resumed.study.get_trials()[3:])
    off = dict(FIRST_ROUND_SPACE, study="no-first", search={**FIRST_ROUND_SPACE["search"], "first_round": False})
    plain = aloss_tune.tune(off, storage=stores["storage"], tracking=False, progress=False, n_trials=2)
    assert [t.params for t in plain.study.get_trials()] != rounds[:2]


def test_a_budget_shorter_than_the_first_round_queues_only_what_it_runs(stores):
    import aloss_tune

    short = dict(FIRST_ROUND_SPACE, study="short-budget")
    result = aloss_tune.tune(short, storage=stores["storage"], tracking=False, progress=False, n_trials=2)
    trials = result.study.get_trials()
    rounds = SearchSpace.from_dict(short).first_round(result.study.user_attrs["aloss_tune.target_scale"])
    assert len(rounds) == 3
    assert [t.params for t in trials] == rounds[:2]  # the first two losses of the list, none left waiting
    assert all(t.state.is_finished() for t in trials)


def test_first_round_must_be_a_flag():
    with pytest.raises(ConfigError, match=r"search\.first_round: must be true or false, but got 'yes'"):
        SearchSpace.from_dict({"study": "s", "loss": ["mse"], "search": {"first_round": "yes"}})


def _finished(loss: str, curve: list[float]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"loss": loss}, distributions={"loss": optuna.distributions.CategoricalDistribution(["a", "b"])},
        value=min(curve), intermediate_values=dict(enumerate(curve)))


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_family_median_compares_a_trial_with_its_own_loss_only(direction):
    sign = 1.0 if direction == "minimize" else -1.0
    loss = {"loss": optuna.distributions.CategoricalDistribution(["a", "b"])}
    study = optuna.create_study(direction=direction, pruner=FamilyMedianPruner(n_startup_trials=2,
                                                                                n_warmup_steps=1))
    for name, curve in (("a", [1.0, 0.5, 0.4]), ("a", [1.2, 0.7, 0.6]), ("a", [0.9, 0.3, 0.2]),
                        ("b", [9.0, 8.0, 7.0])):
        study.add_trial(_finished(name, [sign * v for v in curve]))

    def running(name: str, curve: list[float]) -> optuna.Trial:
        study.enqueue_trial({"loss": name})
        trial = study.ask(loss)
        for step, value in enumerate(curve):
            trial.report(sign * value, step)
        return trial

    # far worse than every "a" trial, but family "b" has one completed trial (< n_startup_trials): kept
    assert not running("b", [8.5, 7.9]).should_prune()
    assert not running("a", [2.0]).should_prune()  # warm-up: step 0 < 1
    assert running("a", [2.0, 0.6]).should_prune()  # step 1: best 0.6 against the median of 0.5, 0.7, 0.3
    assert not running("a", [2.0, 0.45]).should_prune()
    assert running("a", [2.0, 0.6, 0.45]).should_prune()  # step 2: best 0.45 against the median 0.4
    assert not running("a", [2.0, 0.6, 0.35]).should_prune()


def test_a_queued_trial_is_claimed_by_one_worker_only_on_sqlite(tmp_path, monkeypatch):
    """Two workers that read a queued trial as WAITING at the same moment: one runs it, the other moves on.

    Each claim pauses after reading the trial's state until the other has read it too (or 1 s has passed):
    unlocked, both would see WAITING and both would set it RUNNING (SQLite has no ``SELECT ... FOR UPDATE``).
    """
    import threading

    from aloss_tune.backends.optuna import StorageOptions, open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    storages = [open_storage(StorageOptions(url=url)) for _ in range(2)]
    study = optuna.create_study(study_name="s", storage=storages[0])
    study.enqueue_trial({"x": 1.0})
    trial_id = study.trials[0]._trial_id
    both_read = threading.Barrier(2, timeout=1.0)
    check = optuna.storages.RDBStorage.check_trial_is_updatable

    def check_then_wait(self, trial_id, state):
        check(self, trial_id, state)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()

    monkeypatch.setattr(optuna.storages.RDBStorage, "check_trial_is_updatable", check_then_wait)
    claimed = [None, None]

    def claim(i):
        claimed[i] = storages[i].set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == [False, True]
    assert storages[1].get_trial(trial_id).state == optuna.trial.TrialState.RUNNING
