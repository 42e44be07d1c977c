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

from aloss_tune.api import tune
from aloss_tune.backends.optuna import RUN_ATTR, WORKER_ATTR
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


# -------------------------------------------------------------------------------------- no params drawn twice
@pytest.mark.slow
def test_a_resumed_study_draws_new_params_and_a_fresh_one_repeats_itself(tmp_path, stores):
    space = write_space(tmp_path, n_trials=2)
    tune(space, **stores)
    tune(space, **stores)  # the rerun of the same command resumes the study
    trials = trials_of("s", stores["storage"])
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state == COMPLETE for t in trials)
    assert len(param_sets(trials)) == 4, [t.params for t in trials]
    _, parents, children = runs_of(stores["tracking_uri"], "s")
    assert len(parents) == 1
    assert sorted(r.info.run_name for r in children) == [f"trial-{i}" for i in range(4)]
    assert {r.info.run_id for r in children} == {t.user_attrs[RUN_ATTR] for t in trials}

    # The same seed on a fresh study draws the same params, trial by trial.
    again = tune(space, storage=f"sqlite:///{tmp_path / 'again.db'}", tracking=False, n_trials=4)
    assert [t.params for t in again.study.trials] == [t.params for t in trials]


@pytest.mark.slow
def test_two_processes_started_together_in_a_fresh_directory(tmp_path):
    """Default stores (./aloss_tune.db, ./mlflow.db) created by two processes at once; 3 trials each."""
    space = write_space(tmp_path, n_trials=3)
    procs = [start_cli("tune", space, "--quiet", cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
    trials = trials_of("s", f"sqlite:///{tmp_path / 'aloss_tune.db'}")
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == COMPLETE for t in trials)
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) == 2
    assert len(param_sets(trials)) == 6, [t.params for t in trials]
    _, parents, children = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    assert len(parents) == 1
    assert sorted(r.info.run_name for r in children) == sorted(f"trial-{i}" for i in range(6))
    assert all(r.info.status == "FINISHED" for r in children)


def test_per_trial_seeds_leave_the_grid_sampler_alone(tmp_path):
    from aloss_tune.backends.optuna import OptunaSuggester, make_sampler
    from aloss_tune.space import SearchSpace

    spec = SearchSpace.from_dict({"study": "s", "loss": {"choices": ["mse", "huber"], "params": {"huber": {
        "delta": {"type": "float", "low": 0.5, "high": 1.5, "step": 0.5}}}}, "search": {"sampler": "grid"}})
    assert type(make_sampler(spec)) is optuna.samplers.GridSampler
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    for _ in range(2):  # a resumed grid goes on with the points not run yet
        study = optuna.create_study(study_name="g", storage=url, sampler=make_sampler(spec),
                                    load_if_exists=True)
        study.optimize(lambda t: float(len(spec.sample(OptunaSuggester(t)))), n_trials=3)
    assert len(study.trials) == 6
    assert len({t.system_attrs["grid_id"] for t in study.trials}) == 6


# ---------------------------------------------------------------------------------------- stores created once
_OPEN_AT = """
import sys, time
from aloss_tune.backends.optuna import StorageOptions, open_storage
from aloss_tune.tracking import StudyTracker, TrackingSettings
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
open_storage(StorageOptions(url="sqlite:///aloss_tune.db"))
StudyTracker(TrackingSettings(tracking_uri="sqlite:///mlflow.db"), "s", backend="optuna").open()
print("ok")
"""


@pytest.mark.slow
def test_processes_creating_the_stores_together_do_not_race(tmp_path):
    start = time.time() + 8  # every process has imported MLflow and Optuna by then
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, str(start)], cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0 and stdout.strip() == "ok", stderr[-3000:]
    _, parents, _ = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    assert len(parents) == 1


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
