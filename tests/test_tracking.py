"""MLflow tracking against a real SQLite store: statuses, partial curves and loss configs of pruned and failed
trials, run names, the experiment's review setup, settings, secrets."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

import aloss_tune
from aloss_tune._urls import redact_text, redact_url
from aloss_tune.api import TuneResult, tune
from aloss_tune.errors import ConfigError, StudyFailed, UsageError
from aloss_tune.tracking import StudyTracker, TrackingSettings, check_tracking_uri, load_settings, runs_url


def tiny_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x.sum(axis=1) + 0.1 * rng.normal(size=n)).astype("float32")
    return x[:90], y[:90], x[90:], y[90:]


def space(**search):
    return {
        "study": "track",
        "model": {"builder": "mlp", "params": {"units": 4, "layers": 1}},
        "training": {"epochs": 4, "batch_size": 32},
        "loss": {"choices": ["mse", "huber"]},
        "search": {"sampler": "random", "pruner": "none", "n_trials": 2, "seed": 1, **search},
    }


def test_pruned_trial_is_killed_with_its_params_and_partial_curve(stores, monkeypatch):
    # Prune every trial after its second epoch: the run must keep params and the two epochs it had. (The pruner
    # is asked from its warm-up on: none here.)
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: len(self.storage.get_trial(
        self._trial_id).intermediate_values) >= 2)
    result = tune(space(pruner={"name": "median", "n_warmup_steps": 0}), data=tiny_data(), **stores)
    assert result.counts == {"complete": 0, "dead": 0, "pruned": 2, "failed": 0}
    client = MlflowClient(stores["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("track").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for run in children:
        assert run.info.status == "KILLED"
        assert run.data.tags["aloss_tune.state"] == "pruned"
        loss = run.data.params["loss"]
        assert loss in ("mse", "huber")
        assert run.info.run_name == f"trial-{run.data.tags['aloss_tune.trial']} {loss}"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mae")] == [0, 1]
        # A pruned trial keeps its loss config: its loss rebuilds from the run.
        rebuilt = aloss_tune.load_loss(f"runs:/{run.info.run_id}", tracking_uri=stores["tracking_uri"])
        params = result.study.trials[int(run.data.tags["aloss_tune.trial"])].user_attrs["aloss_tune.params"]
        expected = aloss_tune.build_loss({k: v for k, v in params.items() if k.startswith("loss")})
        assert rebuilt.get_config() == expected.get_config()


def test_non_finite_loss_fails_the_trial_with_its_reason(stores):
    x, y, xv, yv = tiny_data()
    y = y.copy()
    y[0] = 1e30  # finite (the data check passes), but its squared error overflows: the training loss is inf
    raw = space(n_trials=1)
    raw["loss"] = ["mse"]
    with pytest.raises(StudyFailed, match=r"^the only trial of this run failed: TrialFailed: the training loss is"):
        tune(raw, data=(x, y, xv, yv), **stores)
    (trial,) = optuna.load_study(study_name=raw["study"], storage=stores["storage"]).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "the training loss is" in trial.user_attrs["aloss_tune.error"]
    client = MlflowClient(stores["tracking_uri"])
    run = client.get_run(trial.user_attrs["aloss_tune.mlflow_run_id"])
    assert run.info.status == "FAILED" and "TrialFailed" in run.data.tags["aloss_tune.error"]
    assert run.data.tags["aloss_tune.state"] == "failed"
    # A failed trial keeps its loss config too.
    rebuilt = aloss_tune.load_loss(f"runs:/{run.info.run_id}", tracking_uri=stores["tracking_uri"])
    assert type(rebuilt) is type(aloss_tune.build_loss({"loss": run.data.params["loss"]}))


def test_adaptive_loss_logs_learned_alpha_and_scale_each_epoch(stores):
    pytest.importorskip("aloss_tune.losses.adaptive")
    from aloss_tune.factories import list_losses

    if "adaptive_barron" not in list_losses():
        pytest.skip("adaptive_barron is not registered")
    raw = space(n_trials=1)
    raw["loss"] = ["adaptive_barron"]
    result = tune(raw, data=tiny_data(), **stores)
    trial = result.study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("aloss_tune.error")
    history = trial.user_attrs["aloss_tune.history"]
    assert len(history["alpha"]) == 4 and len(history["scale"]) == 4
    client = MlflowClient(stores["tracking_uri"])
    run_id = trial.user_attrs["aloss_tune.mlflow_run_id"]
    logged = [m.value for m in client.get_metric_history(run_id, "alpha")]
    assert logged == pytest.approx(history["alpha"])
    assert all(0.0 < a < 2.0 for a in logged)


def test_settings_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "mlflow.yaml"
    cfg.write_text("tracking_uri: sqlite:///from_file.db\nexperiment: exp\ntags: {team: ml}\n")
    assert load_settings(cfg) == TrackingSettings("sqlite:///from_file.db", "exp", {"team": "ml"}, True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from_env.db")
    assert load_settings(cfg).tracking_uri == "sqlite:///from_env.db"
    assert load_settings(cfg, tracking_uri="sqlite:///flag.db").tracking_uri == "sqlite:///flag.db"
    cfg.write_text("tracking_url: x\n")
    with pytest.raises(ConfigError, match=r"mlflow\.yaml: tracking_url: unknown key; allowed keys: tracking_uri"):
        load_settings(cfg)


def test_unreachable_tracking_is_detected_before_training(tmp_path):
    with pytest.raises(UsageError, match=r"cannot reach the MLflow tracking server http://u:\*\*\*@127\.0\.0\.1:9"):
        check_tracking_uri("http://u:pw@127.0.0.1:9", timeout=2)
    with pytest.raises(UsageError, match="does not exist"):
        check_tracking_uri(f"sqlite:///{tmp_path}/no/such/dir/mlflow.db")


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg2://alice:s3cret@db:5432/optuna", "postgresql+psycopg2://alice:***@db:5432/optuna"),
    ("http://bob:p%40ss@mlflow:5000", "http://bob:***@mlflow:5000"),
    ("sqlite:///aloss_tune.db", "sqlite:///aloss_tune.db"),
    ("postgresql://db/optuna?user=a&password=s3cret", "postgresql://db/optuna?user=a&password=***"),
    # Unencoded characters a database URL may hold in its password (SQLAlchemy reads it to the next "@").
    ("postgresql+psycopg2://user:ab/s3cret@host/db", "postgresql+psycopg2://user:***@host/db"),
    ("mysql://user:a?b#s3cret@host:3306/db", "mysql://user:***@host:3306/db"),
    ("http://u:ab/s3cret@127.0.0.1:5000", "http://u:***@127.0.0.1:5000"),
    ("sqlite:////data/a:b@s3cret.db", "sqlite:////data/a:b@s3cret.db"),  # a path, not a password
])
def test_urls_are_redacted(url, shown):
    assert redact_url(url) == shown
    if "***" in shown:
        assert "s3cret" not in redact_text(f"could not connect to {url}", url)
        assert "s3cret" not in redact_text(f"could not connect to {url}")  # found in the text itself


def test_a_tracking_server_password_with_a_slash_is_refused_in_one_line():
    with pytest.raises(UsageError) as info:
        check_tracking_uri("http://u:ab/s3cret@127.0.0.1:9", timeout=2)
    message = str(info.value)
    assert message == ("tracking URI 'http://u:***@127.0.0.1:9': the password holds '/', which end a URL's host "
                       "part; percent-encode it (/ as %2F) or set MLFLOW_TRACKING_PASSWORD instead.")


@pytest.mark.parametrize("password", ["s3cret", "ab/s3cret"])
def test_storage_password_never_reaches_mlflow(stores, tmp_path, password):
    storage = stores["storage"]
    settings = TrackingSettings(tracking_uri=stores["tracking_uri"])
    tracker = StudyTracker(settings, "secret", backend="optuna", space={"study": "secret"},
                           storage=f"postgresql://alice:{password}@db/optuna")
    run_id = tracker.open()
    trial = tracker.start_trial(0, {"loss": "mse"}, seed=0)
    trial.finish("failed", error=f"OperationalError: password {password!r} refused")  # quoted without its URL
    tracker.close()
    client = MlflowClient(stores["tracking_uri"])
    parent = client.get_run(run_id)
    assert parent.data.params["storage"] == "postgresql://alice:***@db/optuna"
    child = client.get_run(trial.run_id)
    assert "s3cret" not in child.data.tags["aloss_tune.error"]
    local = client.download_artifacts(trial.run_id, "error.txt", str(tmp_path))
    from pathlib import Path

    assert "s3cret" not in Path(local).read_text()
    assert storage  # the fixture's own store is untouched by this test


def test_the_experiment_is_set_up_to_open_on_its_runs_with_the_review_columns(stores):
    import json

    client = MlflowClient(stores["tracking_uri"])
    settings = TrackingSettings(tracking_uri=stores["tracking_uri"])
    StudyTracker(settings, "fresh", backend="optuna").open()
    tags = client.get_experiment_by_name("fresh").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.aloss_tune"])
    columns = ["metrics.`objective`", "tags.`aloss_tune.loss`", "tags.`aloss_tune.state`"]
    assert view == {
        "selectedColumns": columns,
        "orderByKey": "metrics.`objective`", "orderByAsc": True,  # best first: the lowest, when minimizing
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *columns],
        "columnWidths": {"attributes.`Run Name`": 210, "metrics.`objective`": 150, "tags.`aloss_tune.loss`": 130,
                         "tags.`aloss_tune.state`": 270},
    }
    StudyTracker(settings, "fresh_max", backend="optuna", direction="maximize").open()
    view = json.loads(client.get_experiment_by_name("fresh_max").tags["mlflow.sharedViewState.aloss_tune"])
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`objective`", False)
    # An experiment that exists already gets the same tags, but keeps a kind someone chose for it.
    older = client.create_experiment("older", tags={"mlflow.experimentKind": "genai_development"})
    StudyTracker(settings, "older", backend="optuna").open()
    tags = client.get_experiment(older).tags
    assert tags["mlflow.experimentKind"] == "genai_development"
    assert "mlflow.sharedViewState.aloss_tune" in tags


def test_the_end_of_a_study_prints_where_to_review_it(capsys):
    from aloss_tune.cli import _print_result

    def printed(uri: str) -> list[str]:
        result = TuneResult(study_name="s", backend="optuna", best_params={"loss": "mse"}, best_value=1.0,
                            best_trial=0, best_loss_config=None, objective={"metric": "val_mae"},
                            counts={"complete": 1}, experiment_id="7", tracking_uri=uri)
        _print_result(result)
        return [line for line in capsys.readouterr().out.splitlines() if "mlflow" in line or "#/" in line]

    link = "/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=aloss_tune"
    assert runs_url("http://mlflow:5000/", "7") == "http://mlflow:5000" + link
    assert runs_url("sqlite:///mlflow.db", "7") is None
    assert printed("http://mlflow:5000") == [f"review: http://mlflow:5000{link}"]
    assert printed("sqlite:///mlflow.db") == ["review: mlflow ui --backend-store-uri sqlite:///mlflow.db",
                                              f"        then open http://127.0.0.1:5000{link}"]


def test_a_second_worker_reuses_the_parent_run(stores):
    settings = TrackingSettings(tracking_uri=stores["tracking_uri"])
    first = StudyTracker(settings, "shared", backend="optuna").open()
    second = StudyTracker(settings, "shared", backend="optuna").open()
    assert first == second



def test_a_new_study_trains_while_its_parent_run_settles(stores, monkeypatch):
    # The check that no other worker created a parent at the same moment runs in the background: the first
    # trial's run is queued at once, then created under the settled parent with its params and epochs.
    import aloss_tune.tracking as tracking

    monkeypatch.setattr(tracking, "PARENT_SETTLE_S", 4.0)
    settings = TrackingSettings(tracking_uri=stores["tracking_uri"])
    tracker = StudyTracker(settings, "settling", backend="optuna")
    tracker.start()
    assert tracker.created_parent and not tracker._settled.is_set()
    run = tracker.start_trial(0, {"loss": "mse"}, seed=0)
    run.log_epoch(0, {"val_mae": 1.5})
    run.log_epoch(1, {"val_mae": 1.25})
    assert run.run_id is None and run.pending  # queued behind the settle, not waited for
    run.finish("complete", objective=1.25)
    assert tracker._settled.is_set()
    client = MlflowClient(stores["tracking_uri"])
    child = client.get_run(run.run_id)
    assert child.data.tags["mlflow.parentRunId"] == tracker.parent_run_id
    assert child.info.status == "FINISHED" and child.data.params["loss"] == "mse"
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "val_mae")] == [(0, 1.5), (1, 1.25)]
    tracker.close()
    assert client.get_run(tracker.parent_run_id).data.params["backend"] == "optuna"


def test_tracking_failure_mid_study_does_not_stop_training(stores, monkeypatch):
    import mlflow.tracking

    calls = {"n": 0}
    original = mlflow.tracking.MlflowClient.log_batch

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:  # the server "goes away" after the first few calls
            raise ConnectionError("server went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_batch", flaky)
    result = tune(space(n_trials=2), data=tiny_data(), **stores)
    # Both trials trained (the MSE one, no better than the baseline, stopped as dead after 3 epochs): none failed.
    assert result.counts == {"complete": 1, "dead": 1, "pruned": 0, "failed": 0}
    assert all(len(t.intermediate_values) >= 3 for t in result.study.trials)
    assert all(math.isfinite(t.value) for t in result.study.trials if t.value is not None)


def stuck_space(**training):
    return {
        "study": "stuck",
        "model": {"builder": "helpers.user_side:stuck_or_mlp",
                  "params": {"units": 8, "layers": 1, "mode": {"type": "categorical", "choices": ["ok", "stuck"]}}},
        "optimizer": {"name": "adam", "learning_rate": 0.05},
        "objective": {"metric": "val_mae", "direction": "minimize"},
        "training": {"epochs": 8, "batch_size": 32, **training},
        "loss": {"choices": ["mse"]},
        "search": {"sampler": "grid", "pruner": "none", "n_trials": 2, "seed": 0},
    }


def test_a_trial_that_is_not_learning_is_stopped_and_recorded_as_dead(stores, capsys):
    from aloss_tune.backends.optuna import study_record
    from aloss_tune.report._study import read_study

    result = tune(stuck_space(stop_dead=2), data=tiny_data(), progress="lines", **stores)
    assert result.counts == {"complete": 1, "dead": 1, "pruned": 0, "failed": 0}
    trials = {t.params["model.mode"]: t for t in result.study.trials}
    stuck, learning = trials["stuck"], trials["ok"]
    # Optuna: PRUNED after the 2-epoch warm-up (samplers rank it with the bad trials), marked as dead.
    assert stuck.state == optuna.trial.TrialState.PRUNED and len(stuck.intermediate_values) == 2
    x_train, y_train, x_val, y_val = tiny_data()
    baseline = float(np.mean(np.abs(y_val - np.median(y_train))))  # predicting the training median
    record = stuck.user_attrs["aloss_tune.stopped_dead"]
    assert record == {"epochs": 2, "best": pytest.approx(min(stuck.intermediate_values.values())),
                      "baseline": pytest.approx(baseline)}
    assert record["best"] > baseline and len(stuck.user_attrs["aloss_tune.history"]["val_mae"]) == 2
    assert learning.state == optuna.trial.TrialState.COMPLETE and learning.value < baseline
    assert len(learning.intermediate_values) == 8
    # MLflow: the dead trial's run is KILLED with state `dead`, the other one FINISHED.
    client = MlflowClient(stores["tracking_uri"])
    for trial, status, state in ((stuck, "KILLED", "dead"), (learning, "FINISHED", "complete")):
        run = client.get_run(trial.user_attrs["aloss_tune.mlflow_run_id"])
        assert (run.info.status, run.data.tags["aloss_tune.state"]) == (status, state)
    # The progress line, and the report, count it the same way.
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    assert f"trial {stuck.number} dead      loss=mse  val_mae={record['best']:.6g}" in "\n".join(lines)
    assert read_study(study_record(result.study)).counts == result.counts


def test_a_complete_trial_no_better_than_the_baseline_is_dead(stores):
    # The warm-up is longer than the training: nothing is stopped, the stuck trial completes, and counts as dead.
    result = tune(stuck_space(epochs=3), data=tiny_data(), **stores)
    assert result.counts == {"complete": 1, "dead": 1, "pruned": 0, "failed": 0}
    stuck = next(t for t in result.study.trials if t.params["model.mode"] == "stuck")
    assert stuck.state == optuna.trial.TrialState.COMPLETE and "aloss_tune.stopped_dead" not in stuck.user_attrs
    run = MlflowClient(stores["tracking_uri"]).get_run(stuck.user_attrs["aloss_tune.mlflow_run_id"])
    assert (run.info.status, run.data.tags["aloss_tune.state"]) == ("FINISHED", "dead")


def test_the_parent_run_shows_the_winner_as_the_study_goes(stores):
    from aloss_tune.states import counts_text

    result = tune(space(n_trials=3), data=tiny_data(), **stores)
    client = MlflowClient(stores["tracking_uri"])
    parent = client.get_run(result.parent_run_id)
    # The runs table's columns on the parent's row: the best objective, its loss, the study's counts.
    assert parent.data.metrics["objective"] == result.best_value
    assert parent.data.tags["aloss_tune.loss"] == result.best_params["loss"]
    assert parent.data.tags["aloss_tune.state"] == counts_text(result.counts)
    assert sum(result.counts.values()) == 3
    # Updated after every trial: the objective's history is the best so far, one step per finished trial.
    best_so_far, expected = None, set()
    for trial in sorted(result.study.trials, key=lambda t: t.number):
        best_so_far = trial.value if best_so_far is None else min(best_so_far, trial.value)
        expected.add((trial.number + 1, best_so_far))
    history = client.get_metric_history(result.parent_run_id, "objective")
    assert {(m.step, m.value) for m in history} == expected
    # Each trial's row has its loss in the same column.
    for trial in result.study.trials:
        run = client.get_run(trial.user_attrs["aloss_tune.mlflow_run_id"])
        assert run.data.tags["aloss_tune.loss"] == run.data.params["loss"] == trial.params["loss"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize("ended", ["complete", "pruned", None])
def test_the_run_of_a_trial_failed_for_a_lost_worker_is_failed_whatever_its_worker_ended_it_as(stores, ended):
    """A worker ends a trial's run, then tells Optuna the trial's state; one killed between the two leaves a
    trial that Optuna fails once its heartbeats stop, and its run must say FAILED too (or stay RUNNING)."""
    import time

    from aloss_tune._schema import RUN_ATTR
    from aloss_tune.backends.optuna import StorageOptions, _stale_trial_hook, open_storage

    settings = TrackingSettings(tracking_uri=stores["tracking_uri"])
    tracker = StudyTracker(settings, "lost", backend="optuna")
    tracker.start()
    storage = open_storage(StorageOptions(url=stores["storage"], heartbeat_interval=1, grace_period=1),
                           on_stale=_stale_trial_hook(tracker))
    study = optuna.create_study(study_name="lost", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    run = tracker.start_trial(trial.number, {"loss": "mse"}, seed=0)
    run.log_epoch(0, {"val_mae": 0.5})
    if ended is not None:
        run.finish(ended, objective=0.5 if ended == "complete" else None)
    run.flush()
    trial.set_user_attr(RUN_ATTR, run.resolve())
    time.sleep(1.5)  # no heartbeat since: the worker is lost
    optuna.storages.fail_stale_trials(study)  # a live worker's check: fails the trial, calls the hook
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    client = MlflowClient(stores["tracking_uri"])
    lost = client.get_run(run.run_id)
    assert lost.info.status == "FAILED"
    assert lost.data.tags["aloss_tune.state"] == "failed"
    assert "worker lost" in lost.data.tags["aloss_tune.error"]
    reconciled = lost.data.tags["aloss_tune.reconciled"]
    assert ("died before the study recorded the trial" in reconciled) == (ended is not None)
    # A run that is already failed is left as it is.
    assert not tracker.end_lost_run(run.run_id, "failed", error="again", lost=True)
    tracker.close()
