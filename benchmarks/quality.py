"""Quality benchmark: does searching aloss-tune's losses beat the best *tuned* standard loss at equal budget?

Each arm is an Optuna study with the same trial budget, the same model and optimizer space (an MLP's
units, layers, dropout and learning rate), the same sampler, pruner, epochs and early stopping; only the
loss choices differ:

* regression, on ``contaminated_regression`` (20% gross one-sided outliers in train and validation targets,
  clean test targets):

  - ``aloss-tune robust``: Barron's general loss (``barron``), the adaptive one (``adaptive_barron``) and
    Huber, with their scale-aware default ranges;
  - ``tuned MSE``: ``mse`` only;
  - ``tuned Keras Huber``: ``keras.losses.Huber`` itself, its ``delta`` searched over the same
    scale-aware range as aloss-tune's Huber;

* classification, on ``imbalanced_classification`` (about 8% positives, 2% flipped labels):

  - ``aloss-tune``: ``class_bce``, ``confidence_bce``, ``focal`` and ``poly1``;
  - ``tuned BCE``: ``bce`` only.

Studies select on the validation objective (``val_mae`` or, with ``--regression-objective``,
``val_median_ae``; ``val_pr_auc``), as a user would; then the best
trial's model is retrained with its params and seed (`aloss_tune.runner.train`) and scored on the test set:
clean-test RMSE and MAE (regression), PR-AUC (average precision) and ROC-AUC (classification). Every seed
changes the data split, the outliers and the study's sampler. A *dead* trial never got better than
predicting the training median (or the class prior) on the validation objective: it completed no better, or
was stopped early for it (`aloss_tune.states`, ``training.stop_dead``).

Usage::

    .venv/bin/python benchmarks/quality.py                 # 3 seeds, full budget (about 30 min on 2 cores)
    .venv/bin/python benchmarks/quality.py --quick         # smoke run: 1 seed, 4 trials, few epochs
    .venv/bin/python benchmarks/quality.py --tasks regression --seeds 0 1 2 --trials 16 --json out.json
    .venv/bin/python benchmarks/quality.py --quick --report quality_reports/   # + each study's figures
    .venv/bin/python benchmarks/quality.py --tasks regression --regression-objective val_median_ae
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REGRESSION_ROBUST = ("barron", "adaptive_barron", "huber")
CLASSIFICATION_LOSSES = ("class_bce", "confidence_bce", "focal", "poly1")
KERAS_HUBER = "keras_huber"

# What regression studies select on (--regression-objective): val_mae, or val_median_ae, which ignores the
# contaminated half of the validation errors at most and so rewards fitting the clean majority.
REGRESSION_OBJECTIVES = ("val_mae", "val_median_ae")
regression_objective = "val_mae"

# Targets on the regression set, relative to the tuned standard losses' clean-test RMSE.
TARGET_VS_MSE = 0.50
TARGET_VS_HUBER = 0.10


@dataclass(frozen=True)
class Budget:
    """What every arm of one task gets."""

    trials: int
    epochs: int
    patience: int
    batch_size: int


FULL = {"regression": Budget(trials=16, epochs=40, patience=6, batch_size=32),
        "classification": Budget(trials=10, epochs=15, patience=4, batch_size=128)}
QUICK = {"regression": Budget(trials=4, epochs=6, patience=3, batch_size=32),
         "classification": Budget(trials=3, epochs=3, patience=2, batch_size=64)}


@dataclass(frozen=True)
class Arm:
    task: str
    name: str
    losses: tuple[str, ...]


@dataclass
class Result:
    """One study (arm x seed) and its best trial's test scores."""

    task: str
    arm: str
    seed: int
    losses: list[str]
    best_loss: str | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    val_objective: float | None = None
    retrained_val_objective: float | None = None  # the retrained model's, to check the retrain reproduces it
    test: dict[str, float] = field(default_factory=dict)
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    dead: int = 0
    seconds: float = 0.0


def register_keras_huber() -> None:
    """``keras_huber``: ``keras.losses.Huber`` itself, its delta on aloss-tune's scale-aware range."""
    import keras

    import aloss_tune
    from aloss_tune.distributions import Float
    from aloss_tune.losses._base import FINITE_POSITIVE

    if KERAS_HUBER in aloss_tune.list_losses():
        return
    search = aloss_tune.get_factory("huber").param("delta").search or Float(0.05, 5.0, log=True)
    delta = aloss_tune.ParamSpec("delta", float, 1.0, FINITE_POSITIVE, search, relative=True,
                                 doc="keras.losses.Huber's delta")
    aloss_tune.register_loss_factory(aloss_tune.LossFactory(
        KERAS_HUBER, lambda delta: keras.losses.Huber(delta=delta), (delta,), tasks=("regression",),
        description="keras.losses.Huber (the stock Keras loss)",
    ))


def arms(tasks: Sequence[str]) -> list[Arm]:
    """The arms to run; the robust arm keeps only the robust losses registered in this build."""
    import aloss_tune

    registered = set(aloss_tune.list_losses())
    out: list[Arm] = []
    if "regression" in tasks:
        robust = tuple(name for name in REGRESSION_ROBUST if name in registered)
        missing = sorted(set(REGRESSION_ROBUST) - registered)
        if missing:
            print(f"note: {', '.join(missing)} not registered in this build; the robust arm searches "
                  f"{', '.join(robust)}", file=sys.stderr)
        out += [Arm("regression", "aloss-tune robust", robust), Arm("regression", "tuned MSE", ("mse",)),
                Arm("regression", "tuned Keras Huber", (KERAS_HUBER,))]
    if "classification" in tasks:
        losses = tuple(name for name in CLASSIFICATION_LOSSES if name in registered)
        out += [Arm("classification", "aloss-tune", losses), Arm("classification", "tuned BCE", ("bce",))]
    return out


def space_for(arm: Arm, seed: int, budget: Budget) -> dict[str, Any]:
    """The study's space: everything but the loss choices is the same for every arm of a task."""
    regression = arm.task == "regression"
    return {
        "study": f"{arm.task}-{arm.name.replace(' ', '_')}-seed{seed}",
        "data": {"name": "contaminated_regression" if regression else "imbalanced_classification",
                 "args": {"seed": seed}},
        "model": {"builder": "mlp", "params": {
            "units": {"type": "int", "low": 16, "high": 128, "log": True},
            "layers": {"type": "int", "low": 1, "high": 3 if regression else 2},
            "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        }},
        "optimizer": {"name": "adam", "learning_rate": {
            "type": "float", "low": 3e-4, "high": 3e-2 if regression else 1e-2, "log": True}},
        "objective": {"metric": regression_objective, "direction": "minimize"} if regression
        else {"metric": "val_pr_auc", "direction": "maximize"},
        "training": {"epochs": budget.epochs, "batch_size": budget.batch_size,
                     "early_stopping": {"patience": budget.patience}},
        "loss": {"choices": list(arm.losses)},
        "search": {"sampler": "tpe", "pruner": "median", "n_trials": budget.trials, "seed": seed},
    }


def test_scores(task: str, model: Any, data: Any) -> dict[str, float]:
    """Clean-test RMSE and MAE (regression) or PR-AUC and ROC-AUC (classification)."""
    import numpy as np

    prediction = np.asarray(model.predict(data.x_test, verbose=0), dtype="float64")
    prediction = prediction.reshape(len(data.y_test), -1)
    y = np.asarray(data.y_test, dtype="float64").reshape(len(data.y_test), -1)
    if task == "regression":
        err = prediction - y
        return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
    from sklearn.metrics import average_precision_score, roc_auc_score

    p, t = prediction.ravel(), y.ravel()
    if not np.all(np.isfinite(p)):
        return {"pr_auc": math.nan, "roc_auc": math.nan}
    return {"pr_auc": float(average_precision_score(t, p)), "roc_auc": float(roc_auc_score(t, p))}


def run_arm(arm: Arm, seed: int, budget: Budget, storage: str, report_dir: Path | None = None) -> Result:
    """Run one study, retrain its best trial's model and score it on the test set (and write its report)."""
    import aloss_tune
    from aloss_tune.report._study import read_study
    from aloss_tune.runner import prepare, train
    from aloss_tune.space import SearchSpace

    started = time.perf_counter()
    space = SearchSpace.from_dict(space_for(arm, seed, budget))
    result = Result(task=arm.task, arm=arm.name, seed=seed, losses=list(arm.losses))
    tuned = aloss_tune.tune(space, tracking=False, storage=storage)
    if report_dir is not None:
        from aloss_tune.report import write_report

        write_report(tuned.study, report_dir / space.study)
    data = read_study(tuned.study)
    counts = data.counts
    result.complete, result.pruned = counts.get("complete", 0), counts.get("pruned", 0)
    result.failed, result.dead = counts.get("failed", 0), counts.get("dead", 0)
    best = data.best
    if best is not None:
        ctx = prepare(space)
        trial_seed = best.seed if best.seed is not None else seed + best.number
        model, outcome = train(ctx, best.params, seed=trial_seed)
        result.best_loss, result.best_params = best.loss, dict(best.params)
        result.val_objective, result.retrained_val_objective = best.value, outcome.value
        result.test = test_scores(arm.task, model, ctx.data)
    result.seconds = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------------ tables
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def _cell(values: Sequence[float], digits: int) -> str:
    mean, std = _mean_std(values)
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarize(results: Sequence[Result]) -> tuple[str, list[str]]:
    """The Markdown results table and the target checks (lines)."""
    lines = []
    checks: list[str] = []
    by_arm: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_arm.setdefault((r.task, r.arm), []).append(r)
    names = {"rmse": "clean-test RMSE", "mae": "clean-test MAE", "pr_auc": "test PR-AUC",
             "roc_auc": "test ROC-AUC"}
    tables = (("regression", ("rmse", "mae"), 2), ("classification", ("pr_auc", "roc_auc"), 3))
    for task, metrics, digits in tables:
        rows = [(arm, rs) for (t, arm), rs in by_arm.items() if t == task]
        if not rows:
            continue
        seeds = sorted({r.seed for _, rs in rows for r in rs})
        objective = regression_objective if task == "regression" else "val_pr_auc"
        first = rows[0][1][0]
        trials = first.complete + first.pruned + first.failed
        lines.append(f"**{task}** ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: "
                     f"{', '.join(map(str, seeds))}; {trials} trials per study)")
        lines.append("")
        lines.append("| arm | losses searched | " + " | ".join(names[m] for m in metrics)
                     + f" | best {objective} | dead trials | pruned | failed | best losses | minutes |")
        lines.append("|---|---|" + "---|" * (len(metrics) + 6))
        for arm, rs in rows:
            cells = [_cell([r.test.get(m, math.nan) for r in rs], digits) for m in metrics]
            best_losses = ", ".join(sorted({r.best_loss or "-" for r in rs}))
            lines.append(
                f"| {arm} | {', '.join(rs[0].losses)} | " + " | ".join(cells)
                + f" | {_cell([r.val_objective for r in rs], digits)}"
                + f" | {sum(r.dead for r in rs)} | {sum(r.pruned for r in rs)} | {sum(r.failed for r in rs)}"
                + f" | {best_losses} | {sum(r.seconds for r in rs) / 60:.1f} |"
            )
        lines.append("")
    robust = by_arm.get(("regression", "aloss-tune robust"))
    if robust:
        rmse = _mean_std([r.test.get("rmse", math.nan) for r in robust])[0]
        for arm, target in (("tuned MSE", TARGET_VS_MSE), ("tuned Keras Huber", TARGET_VS_HUBER)):
            other = by_arm.get(("regression", arm))
            if not other:
                continue
            base = _mean_std([r.test.get("rmse", math.nan) for r in other])[0]
            gain = 1 - rmse / base if base and math.isfinite(base) else math.nan
            status = "met" if gain >= target else "MISSED"
            change = f"{abs(gain):.1%} {'lower' if gain >= 0 else 'higher'}"
            checks.append(f"clean-test RMSE vs {arm}: {change} (target: >= {target:.0%} lower): {status}")
        dead = sum(r.dead for r in robust)
        checks.append(f"dead trials in the robust arm: {dead} (target 0): {'met' if dead == 0 else 'MISSED'}")
    return "\n".join(lines), checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, a few trials and epochs")
    parser.add_argument("--tasks", nargs="+", choices=("regression", "classification"),
                        default=["regression", "classification"])
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default 0 1 2; --quick: 0)")
    parser.add_argument("--trials", type=int, help="trials per study (overrides the budget of every task)")
    parser.add_argument("--workdir", help="where the Optuna storage goes (default: a temporary folder)")
    parser.add_argument("--json", help="also write every study's results to this JSON file")
    parser.add_argument("--report", help="write each study's report (figures, summary) under this folder")
    parser.add_argument("--regression-objective", choices=REGRESSION_OBJECTIVES, default="val_mae",
                        help="what regression studies select on (default val_mae)")
    args = parser.parse_args(argv)
    global regression_objective
    regression_objective = args.regression_objective

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices: a new model per trial
    budgets = dict(QUICK if args.quick else FULL)
    if args.trials:
        budgets = {k: Budget(args.trials, b.epochs, b.patience, b.batch_size) for k, b in budgets.items()}
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="aloss_tune_quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{workdir / f'quality-{int(time.time())}.db'}"
    register_keras_huber()
    started = time.perf_counter()
    results: list[Result] = []
    for seed in seeds:
        for arm in arms(args.tasks):
            reports = Path(args.report) if args.report else None
            result = run_arm(arm, seed, budgets[arm.task], storage, reports)
            results.append(result)
            scores = ", ".join(f"{k}={v:.4g}" for k, v in result.test.items())
            val = "n/a" if result.val_objective is None else f"{result.val_objective:.4g}"
            if result.retrained_val_objective is not None:
                val += f", retrained {result.retrained_val_objective:.4g}"
            print(f"[{time.perf_counter() - started:6.0f}s] {arm.task} / {arm.name} / seed {seed}: best "
                  f"{result.best_loss} (val {val}), test {scores}; dead {result.dead}, "
                  f"pruned {result.pruned}, failed {result.failed} ({result.seconds:.0f}s)", flush=True)
    table, checks = summarize(results)
    minutes = (time.perf_counter() - started) / 60
    command = "benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print()
    print(table)
    for line in checks:
        print(f"- {line}")
    print(f"\n{command.strip()}: {minutes:.1f} min; storage {storage}")
    if args.json:
        report = {"command": command.strip(), "minutes": minutes,
                  "budgets": {k: asdict(b) for k, b in budgets.items()},
                  "results": [asdict(r) for r in results], "checks": checks}
        Path(args.json).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
