"""Quality suite: does a default aloss-tune study beat the best *tuned* standard loss at equal budget?

Six problems in three kinds, each with a clean test set and data made offline:

* contaminated regression (clean-test RMSE, lower is better):

  - ``diabetes``: scikit-learn's bundled diabetes data, 20% of the training and validation targets shifted up
    by 4-8 standard deviations (``contaminated_regression``, 442 rows);
  - ``friedman-heavy``: Friedman #1, 2,000 rows, Student-t noise with 1.5 degrees of freedom (infinite
    variance) in the training and validation targets (``friedman_regression``);
  - ``friedman-proportional``: Friedman #1, 5,000 rows, Student-t(3) noise whose spread grows with the target;

* label-noise classification (clean-test accuracy): MNIST-1D (``mnist1d``, 10,000 signals, 10 classes) with
  symmetric noise 0.6 (``mnist1d-sym0.6``) and asymmetric noise 0.4 (``mnist1d-asym0.4``) in the training and
  validation labels;
* imbalanced classification (test PR-AUC): ``imbalanced-2pct``, 20,000 rows with 2% positives
  (``imbalanced_classification``), about 80 positives in each of validation and test.

Arms, at the same trial budget, epochs, early stopping and model space (aloss-tune's built-in MLP: units,
layers, dropout, Adam's learning rate):

* ``aloss-tune``: a default study. The space names the data, the model space, the training budget and the
  loss list, and nothing else: sampler, pruner, objective, first trials and default ranges are aloss-tune's;
* each standard loss tuned in plain Keras + Optuna: a hand-written Optuna loop (``TPESampler(seed)``,
  Optuna's default ``MedianPruner`` through ``KerasPruningCallback``) over the same model space, compiling the
  same MLP with Keras's own loss: ``MSE`` and ``Huber`` (``delta`` searched over aloss-tune's own ``huber``
  range, in robust spreads of the training targets) for regression; ``CE`` and label-smoothing ``CE``
  (``label_smoothing`` in [0, 0.8]) under label noise; ``BCE`` and class-weighted ``BCE``
  (``fit(class_weight={1: w})``, ``w`` log-uniform in [1, 100]) for imbalance. They select on the standard
  validation metric of the kind (``val_mae``, ``val_accuracy``, ``val_pr_auc``).

Each study's best trial (on its own, contaminated or noisy, validation objective) is retrained with its params
and seed and scored on the clean test set. A trial is **dead** when its best validation metric is no better
than a constant predictor's (the training median; the training set's most common class; the positive rate),
or when aloss-tune stopped it as not learning. Wall times cover the search only (data made once per seed
beforehand, retraining excluded).

Usage::

    .venv/bin/python benchmarks/quality.py                       # everything: 6 problems x 3 seeds
    .venv/bin/python benchmarks/quality.py --quick               # smoke run, under 10 minutes on 2 cores
    .venv/bin/python benchmarks/quality.py --problems diabetes mnist1d-sym0.6 --seeds 0 1 2 --json out.json
    .venv/bin/python benchmarks/quality.py --json out.json --figure docs/quality.png
    .venv/bin/python benchmarks/quality.py --from-json out.json --figure docs/quality.png   # redraw only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# --------------------------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Budget:
    """What every arm of one problem gets."""

    trials: int
    epochs: int
    patience: int
    batch_size: int


@dataclass(frozen=True)
class Kind:
    """What the problems of one kind share: the objective, the test score, the arms."""

    name: str
    objective: str  # the standard validation metric (the plain arms select on it)
    direction: str
    test_metric: str  # rmse | accuracy | pr_auc
    losses: tuple[str, ...]  # the loss list of the aloss-tune default study
    baselines: tuple[str, ...]  # names in BASELINES
    lr_high: float


KINDS = {
    "regression": Kind("regression", "val_mae", "minimize", "rmse",
                       ("huber", "barron", "adaptive_barron"), ("mse", "keras_huber"), 3e-2),
    "label_noise": Kind("label_noise", "val_accuracy", "maximize", "accuracy",
                        ("cce", "gce", "sce", "active_passive", "bootstrap"), ("cce", "ls_cce"), 1e-2),
    "imbalance": Kind("imbalance", "val_pr_auc", "maximize", "pr_auc",
                      ("class_bce", "focal", "poly1", "confidence_bce"), ("bce", "weighted_bce"), 1e-2),
}


@dataclass(frozen=True)
class Problem:
    name: str
    kind: str
    data: str
    args: dict[str, Any]
    budget: Budget
    quick_args: dict[str, Any] = field(default_factory=dict)  # smaller data for --quick
    quick_budget: Budget | None = None


PROBLEMS = (
    Problem("diabetes", "regression", "contaminated_regression", {},
            Budget(trials=20, epochs=40, patience=8, batch_size=32),
            quick_budget=Budget(trials=3, epochs=4, patience=2, batch_size=32)),
    Problem("friedman-heavy", "regression", "friedman_regression", {"noise": "heavy_tailed", "n_samples": 2000},
            Budget(trials=20, epochs=40, patience=8, batch_size=64),
            quick_args={"n_samples": 600}, quick_budget=Budget(trials=3, epochs=4, patience=2, batch_size=64)),
    Problem("friedman-proportional", "regression", "friedman_regression",
            {"noise": "proportional", "n_samples": 5000},
            Budget(trials=20, epochs=30, patience=6, batch_size=64),
            quick_args={"n_samples": 1000}, quick_budget=Budget(trials=3, epochs=4, patience=2, batch_size=64)),
    Problem("mnist1d-sym0.6", "label_noise", "mnist1d",
            {"label_noise": {"kind": "symmetric", "rate": 0.6}},
            Budget(trials=20, epochs=40, patience=8, batch_size=128),
            quick_args={"n_samples": 2000}, quick_budget=Budget(trials=3, epochs=4, patience=2, batch_size=128)),
    Problem("mnist1d-asym0.4", "label_noise", "mnist1d",
            {"label_noise": {"kind": "asymmetric", "rate": 0.4}},
            Budget(trials=20, epochs=40, patience=8, batch_size=128),
            quick_args={"n_samples": 2000}, quick_budget=Budget(trials=3, epochs=4, patience=2, batch_size=128)),
    Problem("imbalanced-2pct", "imbalance", "imbalanced_classification",
            {"n_samples": 20000, "positive_fraction": 0.02},
            Budget(trials=20, epochs=20, patience=5, batch_size=256),
            quick_args={"n_samples": 5000}, quick_budget=Budget(trials=3, epochs=3, patience=2, batch_size=256)),
)
BY_NAME = {p.name: p for p in PROBLEMS}

# Targets (issue "studies that pay off"), as means over seeds.
TARGET_VS_HUBER = 0.10  # regression: clean-test RMSE at least 10 % below tuned Keras Huber
TARGET_VS_MSE = 0.40  # ... and at least 40 % below tuned MSE
TARGET_POINTS = 10.0  # label noise: at least 10 points of clean-test accuracy above each tuned CE arm
TARGET_WALL = 1.2  # a default study's wall time at most 1.2 x the tuned-standard arms'

ARM_NAMES = {"aloss-tune": "aloss-tune", "mse": "tuned MSE", "keras_huber": "tuned Keras Huber",
             "cce": "tuned CE", "ls_cce": "tuned label-smoothing CE", "bce": "tuned BCE",
             "weighted_bce": "tuned class-weighted BCE"}


@dataclass
class Result:
    """One study (problem x arm x seed) and its best trial's test score."""

    problem: str
    kind: str
    arm: str
    seed: int
    losses: list[str]
    best_loss: str | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    val_objective: float | None = None
    test: float | None = None
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    dead: int = 0
    trials: int = 0
    seconds: float = 0.0
    timed: bool = True  # False: the study shared the machine with other work; its seconds are left out


# ------------------------------------------------------------------------------------------ shared parts
def model_space(kind: Kind) -> dict[str, Any]:
    """The MLP's searched hyperparameters, the same for every arm of a kind (Optuna's short form)."""
    return {
        "units": {"type": "int", "low": 16, "high": 256, "log": True},
        "layers": {"type": "int", "low": 1, "high": 3},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "learning_rate": {"type": "float", "low": 3e-4, "high": kind.lr_high, "log": True},
    }


def load(problem: Problem, seed: int, quick: bool) -> Any:
    """The problem's data for one seed (every seed changes the split and the noise)."""
    from aloss_tune.datasets import as_dataset

    args = {**problem.args, **(problem.quick_args if quick else {}), "seed": seed}
    if "label_noise" in args:
        args["label_noise"] = {**args["label_noise"], "seed": seed}
    return as_dataset(problem.data, args=args)


def baseline_value(kind: Kind, data: Any) -> float:
    """The objective of a constant predictor on the validation data (the dead-trial bar)."""
    import numpy as np

    y_val = np.asarray(data.y_val, dtype="float64")
    if kind.objective == "val_mae":
        return float(np.mean(np.abs(y_val - np.median(np.asarray(data.y_train, dtype="float64")))))
    if kind.objective == "val_pr_auc":
        return float(np.mean(y_val))
    majority = int(np.argmax(np.asarray(data.y_train).sum(axis=0)))
    return float(np.mean(np.argmax(y_val, axis=-1) == majority))


def better(kind: Kind, a: float, b: float) -> bool:
    return a < b if kind.direction == "minimize" else a > b


def test_score(kind: Kind, model: Any, data: Any) -> float:
    """Clean-test RMSE, accuracy or PR-AUC (average precision) of a trained model."""
    import numpy as np

    prediction = np.asarray(model.predict(data.x_test, verbose=0), dtype="float64")
    if not np.all(np.isfinite(prediction)):
        return math.nan
    y = np.asarray(data.y_test, dtype="float64")
    if kind.test_metric == "rmse":
        return float(np.sqrt(np.mean((prediction.reshape(y.shape) - y) ** 2)))
    if kind.test_metric == "accuracy":
        return float(np.mean(np.argmax(prediction, axis=-1) == np.argmax(y, axis=-1)))
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y.ravel(), prediction.ravel()))


# -------------------------------------------------------------------------------------- aloss-tune arm
def aloss_space(problem: Problem, kind: Kind, seed: int, budget: Budget, losses: Sequence[str],
                objective: str | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A default study: data, model space, training budget and the loss list; nothing else. ``objective`` and
    ``overrides`` (``key.path=yaml-value``, e.g. ``search.first_round=false``) change a default, to measure
    what it is worth."""
    space = model_space(kind)
    learning_rate = space.pop("learning_rate")
    extra = {"objective": objective} if objective else {}
    out = _default_space(problem, kind, seed, budget, losses, space, learning_rate, extra)
    for item in overrides:
        path, _, value = item.partition("=")
        keys = path.split(".")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(value)
    return out


def _default_space(problem: Problem, kind: Kind, seed: int, budget: Budget, losses: Sequence[str],
                   space: dict[str, Any], learning_rate: Any, extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra,
        "study": f"{problem.name}-aloss-tune-seed{seed}",
        "data": problem.data,
        "model": {"builder": "mlp", "params": space},
        "optimizer": {"name": "adam", "learning_rate": learning_rate},
        "training": {"epochs": budget.epochs, "batch_size": budget.batch_size,
                     "early_stopping": {"patience": budget.patience}},
        "loss": list(losses),
        "search": {"n_trials": budget.trials, "seed": seed},
    }


def run_aloss(problem: Problem, seed: int, budget: Budget, data: Any, storage: str,
              losses: Sequence[str], objective: str | None = None, overrides: Sequence[str] = ()) -> Result:
    import aloss_tune
    from aloss_tune.backends.base import make_backend
    from aloss_tune.report._study import read_study
    from aloss_tune.runner import prepare, train
    from aloss_tune.space import SearchSpace

    kind = KINDS[problem.kind]
    space = SearchSpace.from_dict(aloss_space(problem, kind, seed, budget, losses, objective, overrides))
    result = Result(problem.name, kind.name, "aloss-tune", seed, list(losses))
    started = time.perf_counter()
    tuned = aloss_tune.tune(space, data=data, tracking=False, storage=storage, progress=False)
    result.seconds = time.perf_counter() - started
    study = read_study(make_backend("optuna", storage=storage).records(tuned.study))
    counts = study.counts
    result.complete, result.pruned = counts.get("complete", 0), counts.get("pruned", 0)
    result.failed, result.dead = counts.get("failed", 0), counts.get("dead", 0)
    result.trials = len(study.trials)
    best = study.best
    if best is not None:
        ctx = prepare(space, data=data)
        model, _ = train(ctx, best.params, seed=best.seed if best.seed is not None else seed + best.number)
        result.best_loss, result.best_params = best.loss, dict(best.params)
        result.val_objective = best.value
        result.test = test_score(kind, model, data)
    return result


# ------------------------------------------------------------------------------ plain Keras + Optuna arms
LossMaker = Callable[[Any, Any], tuple[Any, dict[str, Any]]]


def _mse(trial: Any, data: Any) -> tuple[Any, dict[str, Any]]:
    import keras

    return keras.losses.MeanSquaredError(), {}


def _keras_huber(trial: Any, data: Any) -> tuple[Any, dict[str, Any]]:
    import keras

    from aloss_tune.factories import get_factory

    # aloss-tune's own huber range, in robust spreads (1.4826 x MAD) of the training targets: the same search
    searched = get_factory("huber").param("delta").search.scaled(data.target_scale)
    delta = trial.suggest_float("delta", searched.low, searched.high, log=True)
    return keras.losses.Huber(delta=delta), {}


def _cce(trial: Any, data: Any) -> tuple[Any, dict[str, Any]]:
    import keras

    return keras.losses.CategoricalCrossentropy(), {}


def _ls_cce(trial: Any, data: Any) -> tuple[Any, dict[str, Any]]:
    import keras

    smoothing = trial.suggest_float("label_smoothing", 0.0, 0.8)
    return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing), {}


def _bce(trial: Any, data: Any) -> tuple[Any, dict[str, Any]]:
    import keras

    return keras.losses.BinaryCrossentropy(), {}


def _weighted_bce(trial: Any, data: Any) -> tuple[Any, dict[str, Any]]:
    import keras

    weight = trial.suggest_float("pos_weight", 1.0, 100.0, log=True)
    return keras.losses.BinaryCrossentropy(), {"class_weight": {0: 1.0, 1: weight}}


BASELINES: dict[str, LossMaker] = {"mse": _mse, "keras_huber": _keras_huber, "cce": _cce, "ls_cce": _ls_cce,
                                   "bce": _bce, "weighted_bce": _weighted_bce}


def _plain_fit(kind: Kind, arm: str, trial: Any, data: Any, budget: Budget, seed: int,
               callbacks: Sequence[Any] = ()) -> tuple[Any, float]:
    """Build, compile and fit the MLP with a Keras loss, as a plain Keras + Optuna user would."""
    import keras

    from aloss_tune.models import mlp
    from aloss_tune.runner import TASK_METRICS

    space = model_space(kind)
    params = {}
    for name, dist in space.items():
        key = f"{'optimizer' if name == 'learning_rate' else 'model'}.{name}"
        suggest = trial.suggest_int if dist["type"] == "int" else trial.suggest_float
        params[key] = suggest(key, dist["low"], dist["high"], log=dist.get("log", False))
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    loss, fit_kwargs = BASELINES[arm](trial, data)
    model = mlp(params, data)
    model.compile(optimizer=keras.optimizers.Adam(params["optimizer.learning_rate"]), loss=loss,
                  metrics=TASK_METRICS[data.task]())
    mode = "min" if kind.direction == "minimize" else "max"
    stop = keras.callbacks.EarlyStopping(monitor=kind.objective, mode=mode, patience=budget.patience,
                                         restore_best_weights=True)
    history = model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                        epochs=budget.epochs, batch_size=budget.batch_size, verbose=0,
                        callbacks=[*callbacks, stop], **fit_kwargs)
    series = [v for v in history.history[kind.objective] if math.isfinite(v)]
    if not series:
        raise RuntimeError(f"{kind.objective} was never finite")
    return model, (min(series) if mode == "min" else max(series))


def run_plain(problem: Problem, arm: str, seed: int, budget: Budget, data: Any, storage: str) -> Result:
    import optuna
    from optuna_integration import KerasPruningCallback

    kind = KINDS[problem.kind]
    result = Result(problem.name, kind.name, ARM_NAMES[arm], seed, [arm])
    study = optuna.create_study(study_name=f"{problem.name}-{arm}-seed{seed}", storage=storage,
                                direction=kind.direction, sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner())

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("seed", seed * 1000 + trial.number)
        prune = KerasPruningCallback(trial, kind.objective)
        _, value = _plain_fit(kind, arm, trial, data, budget, seed * 1000 + trial.number, [prune])
        return value

    started = time.perf_counter()
    study.optimize(objective, n_trials=budget.trials, catch=(Exception,))
    result.seconds = time.perf_counter() - started
    bar = baseline_value(kind, data)
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    result.trials = len(trials)
    result.complete = sum(t.state == states.COMPLETE for t in trials)
    result.pruned = sum(t.state == states.PRUNED for t in trials)
    result.failed = sum(t.state == states.FAIL for t in trials)
    result.dead = sum(t.state == states.COMPLETE and not better(kind, t.value, bar) for t in trials)
    try:
        best = study.best_trial
    except ValueError:
        return result
    model, _ = _plain_fit(kind, arm, optuna.trial.FixedTrial(best.params), data, budget, best.user_attrs["seed"])
    result.best_loss, result.best_params = arm, dict(best.params)
    result.val_objective = best.value
    result.test = test_score(kind, model, data)
    return result


# -------------------------------------------------------------------------------------------- reporting
def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def _cell(values: Sequence[float | None], digits: int) -> str:
    mean, std = _mean_std(values)
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


DIGITS = {"rmse": 2, "accuracy": 3, "pr_auc": 3}
TEST_NAMES = {"rmse": "clean-test RMSE", "accuracy": "clean-test accuracy", "pr_auc": "test PR-AUC"}


def group(results: Sequence[Result]) -> dict[str, dict[str, list[Result]]]:
    """``{problem: {arm: [results over seeds]}}``, in suite order."""
    out: dict[str, dict[str, list[Result]]] = {}
    for r in results:
        out.setdefault(r.problem, {}).setdefault(r.arm, []).append(r)
    return out


def summarize(results: Sequence[Result]) -> tuple[str, list[str]]:
    """The Markdown table (one row per problem and arm) and the target checks."""
    lines = ["| problem | arm | test score (mean ± std) | best val objective | dead / trials | pruned | failed "
             "| best losses | minutes per study |", "|---|---|---|---|---|---|---|---|---|"]
    checks: list[str] = []
    for name, arms in group(results).items():
        kind = KINDS[arms[next(iter(arms))][0].kind]
        digits = DIGITS[kind.test_metric]
        for arm, rs in arms.items():
            best_losses = ", ".join(sorted({r.best_loss or "-" for r in rs}))
            lines.append(
                f"| {name} | {arm} | {TEST_NAMES[kind.test_metric]} {_cell([r.test for r in rs], digits)} | "
                f"{_cell([r.val_objective for r in rs], digits)} | {sum(r.dead for r in rs)} / "
                f"{sum(r.trials for r in rs)} | {sum(r.pruned for r in rs)} | {sum(r.failed for r in rs)} | "
                f"{best_losses} | {_minutes(rs)} |")
        checks += check(name, kind, arms)
    dead = sum(r.dead for rs in group(results).values() for r in rs.get("aloss-tune", []))
    checks.append(f"dead trials in aloss-tune studies: {dead} (target 0): {'met' if dead == 0 else 'MISSED'}")
    return "\n".join(lines), checks


def _minutes(rs: Sequence[Result]) -> str:
    timed = [r.seconds / 60 for r in rs if r.timed]
    return f"{statistics.fmean(timed):.1f}" if timed else "n/a"


def check(name: str, kind: Kind, arms: dict[str, list[Result]]) -> list[str]:
    """The targets of one problem against each standard arm."""
    mine = arms.get("aloss-tune")
    if not mine:
        return []
    ours = _mean_std([r.test for r in mine])[0]
    out = []
    for arm, rs in arms.items():
        if arm == "aloss-tune":
            continue
        theirs = _mean_std([r.test for r in rs])[0]
        if kind.test_metric == "rmse":
            target = TARGET_VS_MSE if arm == ARM_NAMES["mse"] else TARGET_VS_HUBER
            gain = 1 - ours / theirs if theirs and math.isfinite(theirs) else math.nan
            status = "met" if gain >= target else "MISSED"
            out.append(f"{name}: clean-test RMSE {ours:.3g} vs {arm} {theirs:.3g}: {gain:+.1%} lower "
                       f"(target >= {target:.0%}): {status}")
        elif kind.test_metric == "accuracy":
            points = 100 * (ours - theirs)
            status = "met" if points >= TARGET_POINTS else "MISSED"
            out.append(f"{name}: clean-test accuracy {ours:.3f} vs {arm} {theirs:.3f}: {points:+.1f} points "
                       f"(target >= +{TARGET_POINTS:g}): {status}")
        elif arm == ARM_NAMES["weighted_bce"]:
            status = "met" if ours >= theirs else "MISSED"
            out.append(f"{name}: test PR-AUC {ours:.3f} vs {arm} {theirs:.3f} (target >=): {status}")
    standard = [r.seconds for arm, rs in arms.items() if arm != "aloss-tune" for r in rs if r.timed]
    timed = [r.seconds for r in mine if r.timed]
    if standard and timed:
        ratio = statistics.fmean(timed) / statistics.fmean(standard)
        out.append(f"{name}: wall time {ratio:.2f} x the tuned-standard arms' (target <= {TARGET_WALL}): "
                   f"{'met' if ratio <= TARGET_WALL else 'MISSED'}")
    return out


def figure(results: Sequence[Result], path: Path) -> None:
    """One panel per problem: each arm's test score over seeds (dots) and their mean (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = group(results)
    n = len(grouped)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, arms) in zip(axes.ravel(), grouped.items(), strict=False):
        kind = KINDS[arms[next(iter(arms))][0].kind]
        labels = list(arms)
        for i, arm in enumerate(labels):
            values = [r.test for r in arms[arm] if r.test is not None and math.isfinite(r.test)]
            color = "tab:green" if arm == "aloss-tune" else "tab:gray"
            if values:
                ax.bar(i, statistics.fmean(values), color=color, alpha=0.35, width=0.6)
                ax.scatter([i] * len(values), values, color=color, s=18, zorder=3)
        finite = [r.test for rs in arms.values() for r in rs if r.test is not None and math.isfinite(r.test)]
        if finite:
            low, high = min(finite), max(finite)
            pad = 0.15 * (high - low or abs(high) or 1.0)
            ax.set_ylim(max(0.0, low - pad) if kind.test_metric != "rmse" else max(0.0, low - 3 * pad), high + pad)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([label.replace("tuned ", "tuned\n") for label in labels], fontsize=7)
        better_way = "lower is better" if kind.test_metric == "rmse" else "higher is better"
        ax.set_title(f"{name}\n{TEST_NAMES[kind.test_metric]} ({better_way})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: seed 0, 3 trials of a few epochs, smaller data (under 10 minutes)")
    parser.add_argument("--problems", nargs="+", choices=list(BY_NAME), help="problems (default: all six)")
    parser.add_argument("--arms", nargs="+", help="arms: aloss-tune and/or baseline names (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default 0 1 2; --quick: 0)")
    parser.add_argument("--trials", type=int, help="trials per study (overrides every problem's budget)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (overrides every problem's budget)")
    parser.add_argument("--losses", nargs="+", help="the aloss-tune arm's loss list (overrides the kind's)")
    parser.add_argument("--objective", help="the aloss-tune arm's objective (default: aloss-tune's choice)")
    parser.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                        help="change the aloss-tune arm's space, e.g. search.first_round=false search.pruner=none")
    parser.add_argument("--workdir", help="where the Optuna storage goes (default: a temporary folder)")
    parser.add_argument("--json", help="write every study's result to this JSON file (after each study)")
    parser.add_argument("--figure", help="draw the test scores to this PNG (e.g. docs/quality.png)")
    parser.add_argument("--from-json", nargs="+",
                        help="read results from these JSON files (e.g. one per seed) instead of running")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    started = time.perf_counter()
    command = "benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_json:
        saved = [json.loads(Path(path).read_text(encoding="utf-8")) for path in args.from_json]
        results = [Result(**r) for one in saved for r in one["results"]]
        command = "; ".join(one.get("command", "") for one in saved)
        minutes = sum(one.get("minutes", 0.0) for one in saved)
    else:
        results = run(args, lambda done, minutes: save(args.json, command, done, minutes))
        minutes = (time.perf_counter() - started) / 60
    table, checks = summarize(results)
    print()
    print(table)
    print()
    for line in checks:
        print(f"- {line}")
    print(f"\n{command.strip()}: {minutes:.1f} min")
    if args.json and not args.from_json:
        save(args.json, command, results, minutes, checks)
    if args.figure:
        figure(results, Path(args.figure))
    return 0


def save(path: str | None, command: str, results: Sequence[Result], minutes: float,
         checks: Sequence[str] = ()) -> None:
    """Write ``results`` to ``path`` (nothing without one): after every study, so a long run that stops
    keeps what it measured."""
    if path:
        Path(path).write_text(json.dumps({"command": command.strip(), "minutes": minutes,
                                          "results": [asdict(r) for r in results], "checks": list(checks)},
                                         indent=2, default=str), encoding="utf-8")


def run(args: argparse.Namespace, done: Callable[[list[Result], float], None] = lambda r, m: None
        ) -> list[Result]:
    """Every study the arguments ask for; ``done(results, minutes)`` after each."""
    import aloss_tune

    problems = [BY_NAME[name] for name in args.problems] if args.problems else list(PROBLEMS)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="aloss_tune_quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{workdir / f'quality-{int(time.time())}.db'}"
    registered = set(aloss_tune.list_losses())
    results: list[Result] = []
    started = time.perf_counter()
    for seed in seeds:
        for problem in problems:
            kind = KINDS[problem.kind]
            budget = (problem.quick_budget or problem.budget) if args.quick else problem.budget
            if args.trials or args.epochs:
                budget = replace(budget, trials=args.trials or budget.trials, epochs=args.epochs or budget.epochs)
            data = load(problem, seed, args.quick)
            losses = tuple(args.losses or [name for name in kind.losses if name in registered])
            for arm in ("aloss-tune", *kind.baselines):
                if args.arms and arm not in args.arms:
                    continue
                if arm == "aloss-tune" and not losses:
                    print(f"{problem.name}: none of {', '.join(kind.losses)} is registered; no aloss-tune arm",
                          file=sys.stderr)
                    continue
                if arm == "aloss-tune":
                    result = run_aloss(problem, seed, budget, data, storage, losses, args.objective,
                                       args.override)
                else:
                    result = run_plain(problem, arm, seed, budget, data, storage)
                results.append(result)
                test = "n/a" if result.test is None else f"{result.test:.4g}"
                val = "n/a" if result.val_objective is None else f"{result.val_objective:.4g}"
                print(f"[{time.perf_counter() - started:6.0f}s] {problem.name} / {result.arm} / seed {seed}: "
                      f"test {test} (best {result.best_loss}, val {val}); dead {result.dead}/{result.trials}, "
                      f"pruned {result.pruned}, failed {result.failed} ({result.seconds:.0f}s)", flush=True)
                done(results, (time.perf_counter() - started) / 60)
    return results


if __name__ == "__main__":
    sys.exit(main())
