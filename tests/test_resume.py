"""Resumed and concurrent runs of one study: no params drawn twice, exact trial counts in Optuna and MLflow,
stores created once, nothing left RUNNING, one parent run whatever the study's name.

Read back through the engines' own clients (`optuna.load_study`, `MlflowClient`).
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import spaces
from helpers.processes import cli_env, start_cli, study_counts, wait_for
from mlflow.tracking import MlflowClient

from aloss_tune.api import tune
from aloss_tune.backends.optuna import ERROR_ATTR, PARAMS_ATTR, RUN_ATTR, WORKER_ATTR
from aloss_tune.cli import main
from aloss_tune.errors import ConfigError, StudyFailed
from aloss_tune.tracking import StudyTracker, TrackingSettings

HERE = Path(__file__).resolve().parent
COMPLETE, RUNNING, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                           optuna.trial.TrialState.FAIL)


def write_space(folder: Path, study: str = "s", *, epochs: int = 1, n_trials: int = 2, sampler: str = "tpe",
                **more) -> str:
    """A tiny regression study with the default sampler (TPE): every trial is one of its random start-ups."""
    return spaces.write_space(folder, study, epochs=epochs, n_trials=n_trials, sampler=sampler, units=4, **more)


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
    assert sorted(r.info.run_name.split()[0] for r in children) == [f"trial-{i}" for i in range(4)]
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
    assert sorted(r.info.run_name.split()[0] for r in children) == sorted(f"trial-{i}" for i in range(6))
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
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, str(start)], cwd=tmp_path, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0 and stdout.strip() == "ok", stderr[-3000:]
    _, parents, _ = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    assert len(parents) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aloss_tune.db", "mlflow.db"]  # no lock file left


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
    assert sorted(r.info.run_name.split()[0] for r in children) == ["trial-0", "trial-1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}


# ------------------------------------------------------------------ one parent per study, not per study name
@pytest.mark.slow
def test_two_backends_and_two_storages_of_one_study_name_keep_their_own_parents(tmp_path, stores, monkeypatch):
    """An Optuna study, a KerasTuner study and an Optuna study in another storage, all named "s", tracked in one
    store: three parents, each with its own trials and its own best, which `best` reads back alike."""
    from aloss_tune.best import best_trial_summary, run_summary

    monkeypatch.chdir(tmp_path)
    space = write_space(tmp_path, n_trials=2)
    uri = stores["tracking_uri"]
    first = tune(space, **stores)
    kt = tune(space, backend="keras-tuner", tuner="random", tracking_uri=uri, directory=tmp_path / "kt")
    other = tune(space, storage=f"sqlite:///{tmp_path / 'other.db'}", tracking_uri=uri, n_trials=1)
    resumed = tune(space, **stores, n_trials=1)
    client, parents, children = runs_of(uri, "s")
    assert resumed.parent_run_id == first.parent_run_id
    assert sorted(p.info.run_id for p in parents) == sorted({first.parent_run_id, kt.parent_run_id,
                                                             other.parent_run_id})
    kids = {p.info.run_id: sorted(r.info.run_name.split()[0] for r in children
                                  if r.data.tags["mlflow.parentRunId"] == p.info.run_id) for p in parents}
    assert kids == {first.parent_run_id: ["trial-0", "trial-1", "trial-2"],
                    kt.parent_run_id: ["trial-0", "trial-1"], other.parent_run_id: ["trial-0"]}
    by_id = {p.info.run_id: p for p in parents}
    assert by_id[kt.parent_run_id].data.tags["aloss_tune.backend"] == "keras-tuner"
    assert by_id[kt.parent_run_id].info.run_name == "s (keras-tuner)"
    assert len({p.data.tags["aloss_tune.study_id"] for p in parents}) == 3
    for result, summary in ((resumed, best_trial_summary("s", stores["storage"])),
                            (kt, best_trial_summary("s", backend="keras-tuner", directory=str(tmp_path / "kt"))),
                            (other, best_trial_summary("s", f"sqlite:///{tmp_path / 'other.db'}"))):
        parent = by_id[result.parent_run_id]
        assert parent.data.metrics["best_objective"] == pytest.approx(summary["value"])
        assert parent.data.tags["aloss_tune.best_trial"] == str(summary["number"])
        assert run_summary(f"runs:/{result.parent_run_id}", uri)["params"] == summary["params"]
    # Without its project at hand, a KerasTuner study is read from its own parent, not from an Optuna one.
    assert best_trial_summary("s", backend="keras-tuner", tracking_uri=uri)["value"] == pytest.approx(kt.best_value)


def test_resuming_with_another_objective_or_loss_list_is_refused_before_anything_is_written(tmp_path, stores,
                                                                                          monkeypatch, capsys):
    from aloss_tune.backends.optuna import SPACE_ATTR

    monkeypatch.chdir(tmp_path)
    tune(write_space(tmp_path, n_trials=1), **stores)
    study = optuna.load_study(study_name="s", storage=stores["storage"])
    before = (len(study.trials), study.user_attrs[SPACE_ATTR], len(runs_of(stores["tracking_uri"], "s")[2]))
    capsys.readouterr()
    cases = [({"objective": {"metric": "val_rmse", "direction": "minimize"}},
              "objective.metric: study 's' was run with objective val_mae, not val_rmse: resuming it would rank "
              "values of both metrics together; keep val_mae or use another study name (--study)."),
             ({"loss": ["huber", "mse"]},
              "loss.choices: study 's' was run with losses [mse, huber], not [huber, mse]: a resumed study keeps "
              "its loss list (in its order); keep it or use another study name (--study).")]
    for change, message in cases:
        space = write_space(tmp_path, n_trials=1, **change)
        with pytest.raises(ConfigError) as info:
            tune(space, **stores)
        assert str(info.value) == f"{space}: {message}"
        for workers in ("1", "2"):  # the command, with one worker or several
            args = ["tune", space, "--workers", workers, "--storage", stores["storage"], "--tracking-uri",
                    stores["tracking_uri"]]
            assert main(args) == 2
            assert capsys.readouterr().err == f"aloss-tune: error: {space}: {message}\n"
    study = optuna.load_study(study_name="s", storage=stores["storage"])
    assert (len(study.trials), study.user_attrs[SPACE_ATTR], len(runs_of(stores["tracking_uri"], "s")[2])) == before


def test_a_parent_made_before_study_ids_is_adopted_by_its_backend_only(stores):
    settings = TrackingSettings(tracking_uri=stores["tracking_uri"])
    legacy = StudyTracker(settings, "old", backend="optuna").open()  # a parent without a study id
    assert StudyTracker(settings, "old", backend="optuna", study_id="a" * 32).open() == legacy
    client = MlflowClient(stores["tracking_uri"])
    assert client.get_run(legacy).data.tags["aloss_tune.study_id"] == "a" * 32
    another = StudyTracker(settings, "old", backend="optuna", study_id="b" * 32).open()
    keras_tuner = StudyTracker(settings, "old", backend="keras-tuner", study_id="c" * 32).open()
    assert len({legacy, another, keras_tuner}) == 3
    assert StudyTracker(settings, "old", backend="optuna", study_id="b" * 32).open() == another


# --------------------------------------------------------------------------------------- nothing left RUNNING
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leave_running(study: str, stores: dict[str, str], worker: str) -> int:
    """A trial RUNNING in Optuna with a RUNNING MLflow run, as a process killed mid-trial leaves them."""
    from aloss_tune.backends.optuna import SEED_ATTR

    optuna_study = optuna.load_study(study_name=study, storage=stores["storage"])
    trial = optuna_study.ask()
    trial.suggest_categorical("loss", ["mse", "huber"])
    trial.set_user_attr(PARAMS_ATTR, {"loss": trial.params["loss"]})
    trial.set_user_attr(SEED_ATTR, trial.number)
    trial.set_user_attr(WORKER_ATTR, worker)
    tracker = StudyTracker(TrackingSettings(tracking_uri=stores["tracking_uri"]), study, backend="optuna")
    tracker.open()
    run = tracker.start_trial(trial.number, {"loss": trial.params["loss"]}, seed=trial.number)
    trial.set_user_attr(RUN_ATTR, run.resolve())
    return trial.number


@pytest.mark.slow
def test_trials_of_a_dead_process_are_reported_and_failed_on_a_rerun(tmp_path, stores, monkeypatch, capsys,
                                                                      caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(HERE))
    space = write_space(tmp_path, n_trials=1)
    args = ["tune", space, "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"],
            "--quiet"]
    assert main(args) == 0
    host = platform.node() or "localhost"
    dead = [_leave_running("s", stores, f"{host}:{_dead_pid()}") for _ in range(2)]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        alive = _leave_running("s", stores, f"{host}:{sleeper.pid}")
        elsewhere = _leave_running("s", stores, "another-host:4242")
        capsys.readouterr()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main(args) == 0
        out = capsys.readouterr().out
        messages = [r.getMessage() for r in caplog.records]
        assert (f"2 trials left RUNNING by a process that is gone: #{dead[0]}, #{dead[1]}; marked FAIL."
                in messages), messages
        assert any(f"still RUNNING: #{alive}, #{elsewhere}" in m and "--reclaim" in m
                   for m in messages), messages
        counts = study_counts(out, "s")
        assert (counts["finished"], counts["pruned"], counts["failed"], counts["running"]) == (2, 0, 2, 2)
        trials = trials_of("s", stores["storage"])
        assert [trials[n].state for n in dead] == [FAIL, FAIL]
        assert "gone" in trials[dead[0]].user_attrs[ERROR_ATTR]
        assert trials[alive].state == trials[elsewhere].state == RUNNING
        client, parents, children = runs_of(stores["tracking_uri"], "s")
        for number in dead:
            run = client.get_run(trials[number].user_attrs[RUN_ATTR])
            assert run.info.status == "FAILED" and run.data.tags["aloss_tune.state"] == "failed"
            assert "error.txt" in [a.path for a in client.list_artifacts(run.info.run_id)]
        assert sorted(r.info.run_name.split()[0] for r in children if r.info.status == "RUNNING") == [
            f"trial-{alive}", f"trial-{elsewhere}"]

        # --reclaim: the user knows no other process runs the study; every RUNNING trial is failed.
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main([*args, "--reclaim", "--n-trials", "1"]) == 0
        counts = study_counts(capsys.readouterr().out, "s")
        assert (counts["finished"], counts["pruned"], counts["failed"], counts["running"]) == (3, 0, 4, 0)
        assert any("2 trials left RUNNING" in r.getMessage() and "--reclaim" in r.getMessage()
                   for r in caplog.records)
        assert not [t.number for t in trials_of("s", stores["storage"]) if t.state == RUNNING]
        _, _, children = runs_of(stores["tracking_uri"], "s")
        assert not [r.info.run_name for r in children if r.info.status == "RUNNING"]
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_a_killed_run_then_a_plain_rerun_leaves_nothing_running(tmp_path):
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tmp_path, epochs=40, n_trials=5, sampler="random")
    stores = ["--storage", storage, "--tracking-uri", tracking, "--quiet"]
    worker = start_cli("tune", space, *stores, cwd=tmp_path)
    try:
        victim = wait_for(lambda: in_training("s", storage), timeout=180, what="a trial in training")[0]
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.communicate()
    done = sum(t.state == COMPLETE for t in trials_of("s", storage))  # complete or dead: never stopped here
    rerun = start_cli("tune", space, *stores, "--n-trials", "1", "--timeout", "1", cwd=tmp_path)
    stdout, stderr = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, stderr[-3000:]
    assert f"1 trial left RUNNING by a process that is gone: #{victim.number}; marked FAIL." in stderr
    counts = study_counts(stdout, "s")
    assert (counts["finished"], counts["pruned"], counts["failed"]) == (done + 1, 0, 1)
    trials = trials_of("s", storage)
    assert trials[victim.number].state == FAIL
    client, parents, children = runs_of(tracking, "s")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(trials)
    assert client.get_run(victim.user_attrs[RUN_ATTR]).info.status == "FAILED"
    assert not [r.info.run_name for r in children if r.info.status == "RUNNING"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_local_workers_ends_every_run(tmp_path, how):
    """Ctrl-C on a terminal reaches the whole process group; SIGTERM (preemption) only the command."""
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tmp_path, epochs=40, n_trials=8, sampler="random")
    command = start_cli("tune", space, "--workers", "2", "--storage", storage, "--tracking-uri", tracking,
                        cwd=tmp_path, start_new_session=True)
    try:
        wait_for(lambda: in_training("s", storage, 2), timeout=240, what="two trials in training")
        if how == "ctrl-c":
            os.killpg(command.pid, signal.SIGINT)
        else:
            command.send_signal(signal.SIGTERM)
        stdout, stderr = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
        command.communicate()
    assert command.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    trials = trials_of("s", storage)
    assert not [t.number for t in trials if t.state == RUNNING]
    failed = [t for t in trials if t.state == FAIL]
    assert len(failed) == 2
    client, parents, children = runs_of(tracking, "s")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert len(children) == len(trials)
    assert not [r.info.run_name for r in children if r.info.status == "RUNNING"]
    assert {r.info.run_id for r in children} == {t.user_attrs[RUN_ATTR] for t in trials}
    for trial in failed:
        run = client.get_run(trial.user_attrs[RUN_ATTR])
        assert run.info.status == "FAILED"
        assert "error.txt" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_a_failed_trial_is_one_line_and_its_traceback_is_in_error_txt(tmp_path, stores, caplog):
    space = yaml.safe_load(Path(write_space(tmp_path, n_trials=2, sampler="random")).read_text())
    space["model"] = {"builder": "helpers.user_side:build", "params": {"units": 8}}
    builds = []

    def build_then_fail(params):  # the up-front check of the space builds it; every trial fails
        from helpers.user_side import build

        builds.append(params)
        return build({**params, "model.mode": "fail" if len(builds) > 1 else "ok"})

    every_trial_failed = pytest.raises(StudyFailed, match=r"^all 2 trials of this run failed; the most common "
                                                          r"error \(every one\): RuntimeError: deliberate failure")
    with caplog.at_level(logging.WARNING), every_trial_failed:
        tune(space, build_model=build_then_fail, progress=False, **stores)
    trials = trials_of("s", stores["storage"])
    assert [t.state for t in trials] == [FAIL, FAIL]
    records = [r for r in caplog.records if r.name.startswith("optuna")]
    assert [r.getMessage() for r in records] == [f"trial {n} failed: {trials[n].user_attrs[ERROR_ATTR]}" for n in (0, 1)]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
    # With a line per trial (no terminal), that line says it; the log does not repeat it.
    caplog.clear()
    builds.clear()
    with caplog.at_level(logging.WARNING), every_trial_failed:
        tune(space, build_model=build_then_fail, progress=None, study_name="s2", **stores)
    assert not [r for r in caplog.records if r.name.startswith("optuna")]
    client, _, children = runs_of(stores["tracking_uri"], "s")
    for run in children:
        text = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()
        assert "Traceback" in text and "deliberate failure" in text


_LOST_IN_A_FINALISER = """
import os, signal, time
from aloss_tune.workers import interrupt_once

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # handled here, inside the finaliser: Python drops the exception

try:
    with interrupt_once():
        Finalised()
        time.sleep(10)
    print("not interrupted")
except KeyboardInterrupt as exc:
    print("interrupted:", exc)
"""


def test_an_interrupt_lost_in_a_finaliser_is_delivered_again():
    out = subprocess.run([sys.executable, "-c", _LOST_IN_A_FINALISER], env=cli_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "interrupted: signal SIGINT", out.stderr[-3000:]
    assert out.stderr == ""
