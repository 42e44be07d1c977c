"""Search spaces: loading, validation with key paths, conditional sampling, scale-aware defaults."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from aloss_tune.distributions import Categorical, Float, Int
from aloss_tune.errors import ConfigError
from aloss_tune.space import FixedSuggester, SearchSpace

REPO = Path(__file__).resolve().parent.parent


class Recorder:
    """A suggester that returns each distribution's low end (or first choice) and records the calls."""

    def __init__(self, choose: dict | None = None):
        self.calls: list[tuple[str, object, tuple]] = []
        self.scope: tuple = ()
        self.choose = choose or {}

    def suggest(self, name, dist):
        self.calls.append((name, dist, self.scope))
        if name in self.choose:
            return self.choose[name]
        return dist.choices[0] if isinstance(dist, Categorical) else dist.low

    @contextlib.contextmanager
    def conditional(self, parent, values):
        old, self.scope = self.scope, self.scope + ((parent, values),)
        yield
        self.scope = old


def test_three_line_space_is_valid_and_uses_factory_defaults():
    space = SearchSpace.from_dict({"study": "s", "data": "contaminated_regression", "loss": ["mse", "huber"]})
    assert space.losses == ("mse", "huber")
    assert space.objective is None  # resolved from the data's task
    assert space.search_params() == {
        "loss": Categorical(("mse", "huber")),
        "loss.huber.delta": Float(0.02, 2.0, log=True),
    }
    assert space.resolve_objective("regression").metric == "val_mae"
    assert space.resolve_objective("binary").metric == "val_pr_auc"


@pytest.mark.parametrize("name", ["robust_regression.yaml", "imbalanced_classification.yaml", "quickstart.yaml"])
def test_shipped_spaces_load(name):
    space = SearchSpace.from_yaml(REPO / "search_spaces" / name)
    assert space.study
    assert space.search_params()


def test_relative_default_ranges_follow_the_target_spread():
    space = SearchSpace.from_dict({"study": "s", "loss": ["huber"]})
    base = space.search_params()["loss.huber.delta"]
    scaled = space.search_params(target_scale=40.0)["loss.huber.delta"]
    assert scaled.low == pytest.approx(base.low * 40.0) and scaled.high == pytest.approx(base.high * 40.0)
    assert scaled.log
    # A user's explicit range is absolute and left alone.
    space = SearchSpace.from_dict({"study": "s", "loss": {"choices": ["huber"], "params": {
        "huber": {"delta": {"type": "float", "low": 1.0, "high": 2.0}}}}})
    assert space.search_params(target_scale=40.0)["loss.huber.delta"] == Float(1.0, 2.0)


def test_conditional_sampling_only_asks_for_the_chosen_loss_params():
    space = SearchSpace.from_dict({
        "study": "s", "loss": {"choices": ["mse", "huber", "error_mse"], "penalty": {"l2": 1e-4}},
        "model": {"builder": "mlp", "params": {"units": {"type": "int", "low": 8, "high": 64, "log": True},
                                                "layers": 2}},
    })
    rec = Recorder(choose={"loss": "huber"})
    params = space.sample(rec)
    asked = {name: scope for name, _, scope in rec.calls}
    assert set(asked) == {"loss", "loss.huber.delta", "model.units"}
    assert asked["loss.huber.delta"] == (("loss", ("huber",)),)
    assert asked["model.units"] == ()
    assert params == {"loss": "huber", "loss.delta": 0.02, "loss.l2": 1e-4, "model.units": 8, "model.layers": 2}
    rec = Recorder(choose={"loss": "mse"})
    assert space.sample(rec) == {"loss": "mse", "loss.l2": 1e-4, "model.units": 8, "model.layers": 2}


def test_fixed_suggester_replays_and_checks_ranges():
    space = SearchSpace.from_dict({"study": "s", "loss": ["huber"]})
    assert space.sample(FixedSuggester({"loss.huber.delta": 0.5})) == {"loss": "huber", "loss.delta": 0.5}
    with pytest.raises(ConfigError, match=r"loss\.huber\.delta.*log-uniform \[0\.02, 2\].*7"):
        space.sample(FixedSuggester({"loss.huber.delta": 7.0}))


def test_bare_values_fix_parameters_and_are_validated():
    space = SearchSpace.from_dict({"study": "s", "loss": {"choices": ["huber"], "params": {"huber": {"delta": 2.5}}}})
    assert space.search_params() == {}
    assert space.sample(Recorder()) == {"loss": "huber", "loss.delta": 2.5}


FULL_SPACE = {
    "study": "full", "data": {"name": "contaminated_regression", "args": {"outlier_fraction": 0.1}},
    "model": {"builder": "mlp", "params": {"units": {"type": "int", "low": 8, "high": 64, "log": True},
                                           "activation": {"type": "categorical", "choices": ["relu", "gelu"]},
                                           "dropout": 0.1}},
    "optimizer": {"name": "adamw", "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                  "weight_decay": 1e-4},
    "objective": {"metric": "val_median_ae", "direction": "minimize"},
    "training": {"epochs": 7, "batch_size": 16, "early_stopping": {"patience": 2}, "jit_compile": False,
                 "verbose": 1, "stop_dead": 4},
    "loss": {"choices": ["huber", "barron", "dynamic_alpha"],
             "params": {"huber": {"delta": {"type": "float", "low": 0.5, "high": 2.0, "step": 0.5}},
                        "dynamic_alpha": {"alpha_formula": "inverse_rms"}},
             "penalty": {"l2": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True}}},
    "search": {"backend": "keras-tuner", "sampler": {"name": "tpe", "n_startup_trials": 3},
               "pruner": {"name": "median", "n_warmup_steps": 2}, "tuner": "hyperband", "n_trials": 9,
               "timeout": 60.0, "seed": 4, "executions_per_trial": 2},
}


@pytest.mark.parametrize("source", ["full", *sorted(p.name for p in (REPO / "search_spaces").glob("*.yaml"))])
def test_to_dict_round_trips(source):
    space = (SearchSpace.from_dict(FULL_SPACE) if source == "full"
             else SearchSpace.from_yaml(REPO / "search_spaces" / source))
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert SearchSpace.from_dict(yaml.safe_load(yaml.safe_dump(space.to_dict()))) == space  # as space.yaml


def test_to_dict_keeps_every_setting():
    dumped = SearchSpace.from_dict(FULL_SPACE).to_dict()
    assert dumped["search"]["sampler"] == {"name": "tpe", "n_startup_trials": 3}
    assert dumped["search"]["pruner"] == {"name": "median", "n_warmup_steps": 2}
    assert dumped["search"]["executions_per_trial"] == 2
    assert dumped["training"]["jit_compile"] is False and dumped["training"]["verbose"] == 1
    assert dumped["training"]["stop_dead"] == 4


@pytest.mark.parametrize("stop_dead, epochs, warmup", [
    (None, 40, 10), (None, 4, 3), (None, 13, 4), (True, 20, 5), (False, 40, None), (6, 40, 6), (50, 40, 50)])
def test_the_dead_trial_warm_up_is_a_quarter_of_the_epochs_at_least_three(stop_dead, epochs, warmup):
    training = {"epochs": epochs} if stop_dead is None else {"epochs": epochs, "stop_dead": stop_dead}
    space = SearchSpace.from_dict({"study": "s", "loss": ["mse"], "training": training})
    assert space.training.dead_warmup == warmup
    assert space.to_dict()["training"]["stop_dead"] == (True if stop_dead is None else stop_dead)


BAD_SPACES = [
    ({"loss": ["mse"]}, r"study: must be a non-empty name"),
    ({"study": "s", "loss": ["nope"]}, r"loss\.choices\[0\]: .*must be one of .*huber.*but got loss='nope'"),
    ({"study": "s", "losss": ["mse"]}, r"losss: unknown key; allowed keys: study, "),
    ({"study": "s", "loss": {"choices": ["huber"], "params": {"huber": {"delta": {"type": "float", "low": 3, "high": 1}}}}},
     r"loss\.params\.huber\.delta\.low: `low <= high` must hold, but got \(low=3\.0, high=1\.0\)"),
    ({"study": "s", "loss": {"choices": ["huber"], "params": {"huber": {"delta": {"type": "float", "low": 0.1, "high": 1, "log": True, "step": 0.1}}}}},
     r"loss\.params\.huber\.delta\.step: `step` and `log` cannot be used together"),
    ({"study": "s", "loss": {"choices": ["huber"], "params": {"huber": {"delta": {"type": "float", "low": -1, "high": 1}}}}},
     r"loss\.params\.huber\.delta\.low: `delta` must be > 0.*but got low=-1"),
    ({"study": "s", "loss": {"choices": ["huber"], "params": {"huber": {"delta": -2.0}}}},
     r"loss\.params\.huber\.delta.*`delta` must be > 0.*-2"),
    ({"study": "s", "loss": {"choices": ["huber"], "params": {"huber": {"gamma": 1.0}}}},
     r"loss\.params\.huber\.gamma: unknown key; allowed keys: delta"),
    ({"study": "s", "loss": {"choices": ["mse"], "params": {"huber": {"delta": 1.0}}}},
     r"loss\.params\.huber: 'huber' is not among loss\.choices"),
    ({"study": "s", "loss": ["mse", "huber"], "objective": {"metric": "val_loss"}},
     r"objective\.metric: 'val_loss' cannot rank trials whose loss varies.*val_mae"),
    ({"study": "s", "loss": ["mse"], "training": {"epochs": 0}}, r"training\.epochs: must be an integer >= 1, but got 0"),
    ({"study": "s", "loss": ["mse"], "training": {"stop_dead": 0}},
     r"training\.stop_dead: must be a warm-up in epochs \(an integer >= 1\), true \(the default warm-up, "
     r"max\(3, ceil\(epochs / 4\)\)\) or false, but got 0\.$"),
    ({"study": "s", "loss": ["mse"], "training": {"stop_dead": "auto"}},
     r"training\.stop_dead: must be a warm-up in epochs .* but got 'auto'\.$"),
    ({"study": "s", "loss": ["mse"], "search": {"sampler": "bogus"}}, r"search\.sampler: must be one of tpe, random, cmaes, grid"),
    ({"study": "s", "loss": ["mse", "huber"], "search": {"sampler": "grid"}}, r"grid needs a finite grid.*loss\.huber\.delta"),
    ({"study": "s", "loss": {"choices": ["error_mse"], "params": {"error_mse": {"clip_min": 3.0, "clip_max": 1.0}}}},
     r"loss\.params\.error_mse: .*clip_min"),
    ({"study": "s", "loss": {"choices": ["mse"], "penalty": {"l2": {"type": "float", "low": -1, "high": 1}}}},
     r"loss\.penalty\.l2\.low: `l2` must be >= 0"),
    ({"study": "s", "loss": ["mse"], "model": {"builder": "mlp", "params": {"units": {"type": "int", "low": 8.5, "high": 9}}}},
     r"model\.params\.units\.low: `low` must be an integer, but got low=8\.5"),
    ([1, 2], r"a search space must be a mapping"),
    # Settings that would be silently ignored or wrong.
    ({"study": "s", "loss": ["mse"], "objective": "mae"},
     r"^space\.yaml: objective\.metric: 'mae' is measured on the training data, which each model is fitted to .*"
     r"use val_mae\.$"),
    ({"study": "s", "loss": ["mse"], "objective": {"metric": "loss"}}, r"objective\.metric: 'loss' is measured on the "
                                                                      r"training data.*use val_loss\.$"),
    ({"study": "s", "loss": ["mse"], "model": {"params": {"dropout": {"type": "float", "low": 0.0, "high": 0.3,
                                                                      "step": 0.5}}}},
     r"model\.params\.dropout\.step: `step` must divide `high - low`.*\(low=0, high=0\.3, step=0\.5\)"),
    ({"study": "s", "loss": ["mse"], "model": {"params": {"dropout": {"type": "float", "low": 0.0, "high": 0.3,
                                                                      "step": 0.2}}}},
     r"model\.params\.dropout\.step: `step` must divide `high - low`.*\(low=0, high=0\.3, step=0\.2\)"),
    ({"study": "s", "loss": ["mse"], "model": {"params": {"units": {"type": "int", "low": 8, "high": 60,
                                                                    "step": 8}}}},
     r"model\.params\.units\.step: `step` must divide `high - low`.*\(low=8, high=60, step=8\)"),
    ({"study": "s", "loss": {"choices": ["dynamic_alpha"],
                             "params": {"dynamic_alpha": {"alpha_formula": "constant", "temperature": 2.0}}}},
     r"loss\.params\.dynamic_alpha\.temperature: is used only when `alpha_formula` is 'sigmoid_snr', but "
     r"`alpha_formula` is 'constant' here, so it would never be used"),
    ({"study": "s", "loss": {"choices": ["dynamic_alpha"], "params": {"dynamic_alpha": {
        "alpha_formula": {"type": "categorical", "choices": ["constant", "inverse_rms"]},
        "strength": {"type": "float", "low": 0.0, "high": 1.0}}}}},
     r"loss\.params\.dynamic_alpha\.strength: is used only when `alpha_formula` is 'outlier_damping', but "
     r"`alpha_formula` is one of constant, inverse_rms here"),
]


@pytest.mark.parametrize("raw, message", BAD_SPACES)
def test_bad_spaces_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(raw, source="space.yaml")


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("study: s\nloss: [mse\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML at line \d+"):
        SearchSpace.from_yaml(path)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        SearchSpace.from_yaml(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("study: !!python/object/apply:os.system ['echo pwned']\nloss: [mse]\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        SearchSpace.from_yaml(path)


def test_val_loss_is_allowed_when_the_loss_is_fixed():
    space = SearchSpace.from_dict({"study": "s", "loss": {"choices": ["huber"], "params": {"huber": {"delta": 1.0}}},
                                   "objective": "val_loss"})
    assert space.resolve_objective("regression").metric == "val_loss"


def test_objective_direction_must_match_the_metric():
    space = SearchSpace.from_dict({"study": "s", "loss": ["mse"], "objective": {"metric": "val_mae",
                                                                                 "direction": "maximize"}})
    with pytest.raises(ConfigError, match=r"objective\.direction: val_mae must be minimized"):
        space.resolve_objective("regression")
    space = SearchSpace.from_dict({"study": "s", "loss": ["bce"], "objective": "val_mae"})
    with pytest.raises(ConfigError, match=r"objective\.metric: 'val_mae' is not computed for binary data"):
        space.resolve_objective("binary")


def test_int_and_categorical_model_params():
    space = SearchSpace.from_dict({"study": "s", "loss": ["mse"], "model": {"builder": "mlp", "params": {
        "units": {"type": "int", "low": 8, "high": 64, "step": 8},
        "activation": {"type": "categorical", "choices": ["relu", "gelu"]}}}})
    assert space.search_params() == {"model.units": Int(8, 64, step=8),
                                     "model.activation": Categorical(("relu", "gelu"))}


def test_dynamic_alpha_samples_only_the_chosen_formulas_constants():
    from aloss_tune.losses import get_alpha_formula, list_alpha_formulas

    space = SearchSpace.from_dict({"study": "s", "data": "contaminated_regression", "loss": ["dynamic_alpha"]})
    formulas = list_alpha_formulas()
    constants = {key for name in formulas for key in get_alpha_formula(name).params}
    assert len(constants) >= 4  # the space would search all of them before
    for formula in formulas:
        recorder = Recorder(choose={"loss.dynamic_alpha.alpha_formula": formula})
        params = space.sample(recorder)
        own = set(get_alpha_formula(formula).params)
        assert {k[len("loss."):] for k in params if k.startswith("loss.")} == {"alpha_formula", *own}
        nested = [(name, scope) for name, _, scope in recorder.calls if name.endswith(tuple(own))]
        assert nested == [(f"loss.dynamic_alpha.{key}", (("loss", ("dynamic_alpha",)),
                                                          ("loss.dynamic_alpha.alpha_formula", (formula,))))
                          for key in own]
    # A fixed formula: its constants only, and no choice asked.
    fixed = SearchSpace.from_dict({"study": "s", "data": "contaminated_regression", "loss": {
        "choices": ["dynamic_alpha"], "params": {"dynamic_alpha": {"alpha_formula": "inverse_rms"}}}})
    recorder = Recorder()
    params = fixed.sample(recorder)
    assert params["loss.alpha_formula"] == "inverse_rms" and "loss.power" in params
    assert not {"loss.temperature", "loss.strength", "loss.alpha_value"} & set(params)
    assert [name for name, _, _ in recorder.calls] == ["loss.dynamic_alpha.power"]


def test_a_parameter_may_depend_only_on_an_earlier_one():
    from aloss_tune.factories import LossFactory, ParamSpec

    with pytest.raises(ConfigError, match="`b` depends on `a`, which must be a parameter declared before it"):
        LossFactory("bad", lambda a, b: None, (ParamSpec("b", float, 1.0, when=("a", ("x",))),
                                                ParamSpec("a", str, "x")))


CLASS_CCE = {"study": "s", "data": "helpers.user_side:tiny_multiclass", "loss": {
    "choices": ["class_cce"],
    "params": {"class_cce": {"class_weights": [1.0, {"type": "float", "low": 1.0, "high": 5.0, "log": True}, 2.0]}}}}


def test_class_weights_take_a_fixed_list_or_one_range_per_class():
    space = SearchSpace.from_dict(CLASS_CCE)
    assert space.search_params(only_loss=True) == {"loss.class_cce.class_weights.1": Float(1.0, 5.0, log=True)}
    recorder = Recorder()
    assert space.sample(recorder)["loss.class_weights"] == [1.0, 1.0, 2.0]
    assert [name for name, _, _ in recorder.calls] == ["loss.class_cce.class_weights.1"]
    assert SearchSpace.from_dict(space.to_dict()).loss_params == space.loss_params
    fixed = SearchSpace.from_dict({**CLASS_CCE, "loss": {"choices": ["class_cce"], "params": {
        "class_cce": {"class_weights": [1, 4, 2]}}}})
    assert fixed.sample(Recorder())["loss.class_weights"] == [1, 4, 2] and not fixed.search_params(only_loss=True)


@pytest.mark.parametrize("weights, where, message", [
    ([1.0, -2.0], "class_weights[1]", "a class weight must be a number > 0, but got -2.0"),
    ([1.0, {"type": "float", "low": 0.0, "high": 2.0}], "class_weights[1]", "must be a number > 0, but got 0.0"),
    ({"type": "float", "low": 1.0, "high": 2.0}, "class_weights", "one weight > 0 or one search range per class"),
    ([], "class_weights", "one weight > 0 or one search range per class"),
])
def test_bad_class_weights_name_the_item(weights, where, message):
    raw = {**CLASS_CCE, "loss": {"choices": ["class_cce"], "params": {"class_cce": {"class_weights": weights}}}}
    with pytest.raises(ConfigError, match=rf"loss\.params\.class_cce\.{where.replace('[', '.').replace(']', '.')}"):
        SearchSpace.from_dict(raw)
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(raw)


def test_class_weights_must_match_the_data_before_any_training():
    from aloss_tune.runner import prepare

    raw = {**CLASS_CCE, "loss": {"choices": ["class_cce"], "params": {"class_cce": {"class_weights": [1.0, 2.0]}}}}
    with pytest.raises(ConfigError, match="class_weights: must give one value per class: .* has 3 classes, but got 2"):
        prepare(SearchSpace.from_dict(raw))
