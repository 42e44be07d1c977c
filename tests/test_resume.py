"""Resumed and concurrent runs of one study: no params drawn twice, exact trial counts in Optuna and MLflow,
stores created once, nothing left RUNNING, one parent run whatever the study's name.

Read back through the engines' own clients (`optuna.load_study`, `MlflowClient`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from aloss_tune.backends.optuna import RUN_ATTR
from aloss_tune.cli import main
from aloss_tune.tracking import StudyTracker, TrackingSettings

HERE = Path(__file__).resolve().parent
COMPLETE, RUNNING, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                           optuna.trial.TrialState.FAIL)


def write_space(folder: Path, study: str = "s", *, epochs: int = 1, n_trials: int = 2, sampler: str = "tpe",
                **more) -> str:
    """A tiny regression study with the default sampler (TPE): every trial is one of its random start-ups."""
    raw = {
        "study": study,
        "data": "helpers.user_side:tiny_regression",
        "model": {"builder": "mlp", "params": {"units": 4, "layers": 1}},
        "optimizer": {"name": "adam",
                      "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
        "objective": {"metric": "val_mae", "direction": "minimize"},
        "training": {"epochs": epochs, "batch_size": 64},
        "loss": ["mse", "huber"],
        "search": {"sampler": sampler, "pruner": "none", "n_trials": n_trials, "seed": 0},
        **more,
    }
    path = folder / f"{study}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ALOSS_TUNE_STORAGE", None)
    return env


def start_cli(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    exe = str(Path(sys.executable).parent / "aloss-tune")
    return subprocess.Popen([exe, *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def wait_for(check, *, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def trials_of(study: str, url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials()
    except KeyError:
        return []


def runs_of(uri: str, study: str) -> tuple[MlflowClient, list, list]:
    """``(client, parents, children)`` of the study's experiment."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def param_sets(trials: list[optuna.trial.FrozenTrial]) -> set[tuple]:
    return {tuple(sorted(t.params.items())) for t in trials}


def in_training(study: str, url: str, count: int = 1):
    """``count`` running trials with an epoch reported, once a trial has completed (``None`` before)."""
    trials = trials_of(study, url)
    running = [t for t in trials
               if t.state == RUNNING and t.intermediate_values and t.user_attrs.get(RUN_ATTR)]
    return running if len(running) >= count and any(t.state == COMPLETE for t in trials) else None


# ------------------------------------------------------------------------------------ study names with quotes
@pytest.mark.parametrize("name", ["bob's", 'say "hi"', "it's \"both\"", "back\\slash", "50%_off"])
def test_study_runs_are_found_whatever_the_name(stores, name):
    from aloss_tune.tracking import study_runs

    settings = TrackingSettings(tracking_uri=stores["tracking_uri"])
    first = StudyTracker(settings, name, backend="optuna").open()
    StudyTracker(settings, name + "x", backend="optuna").open()  # a name the pattern would also match
    tracker = StudyTracker(settings, name, backend="optuna")
    assert tracker.open() == first
    assert [r.info.run_id for r in study_runs(tracker.client, tracker.experiment_id, name)] == [first]


@pytest.mark.slow
def test_a_study_name_with_a_quote_resumes_its_parent_run(tmp_path, stores, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(HERE))
    space = write_space(tmp_path, n_trials=1)
    args = ["tune", space, "--study", "bob's", "--storage", stores["storage"], "--tracking-uri",
            stores["tracking_uri"], "--quiet"]
    assert main(args) == 0
    assert main(args) == 0
    _, parents, children = runs_of(stores["tracking_uri"], "bob's")
    assert len(parents) == 1
    assert sorted(r.info.run_name for r in children) == ["trial-0", "trial-1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
