"""The best trial's trained model in MLflow (``log_model`` / ``register``): a LoggedModel that loads back with
``mlflow.keras`` and ``mlflow.pyfunc`` and scores exactly the trial's objective, its export-ready copy loading
in a process that never imports aloss-tune, a Model Registry version; on SQLite, on a tracking server, and
from a KerasTuner search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import aloss_tune
from aloss_tune.api import tune
from aloss_tune.losses import LossModel

HERE = Path(__file__).resolve().parent
SERVER = os.environ.get("ALOSS_TUNE_TEST_MLFLOW_URI")


def tiny_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)).astype("float32")
    return x[:90], y[:90], x[90:], y[90:]


def space(study: str, losses: list, n_trials: int = 2) -> dict:
    return {
        "study": study,
        "model": {"builder": "mlp", "params": {"units": 8, "layers": 1}},
        "optimizer": {"name": "adam", "learning_rate": {"type": "float", "low": 3e-3, "high": 3e-2, "log": True}},
        "objective": {"metric": "val_mae", "direction": "minimize"},
        "training": {"epochs": 3, "batch_size": 32},
        "loss": {"choices": losses},
        "search": {"sampler": "random", "pruner": "none", "n_trials": n_trials, "seed": 2},
    }


def val_mae(model, data) -> float:
    prediction = np.asarray(model.predict(data[2], verbose=0), dtype="float64").reshape(-1)
    return float(np.mean(np.abs(prediction - data[3])))


def check_logged_model(result, tracking_uri: str, data, monkeypatch, *, registered: str | None) -> dict:
    """What every logged best model satisfies, whatever the store and backend; returns what it found."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # mlflow.keras.load_model reads the process's URI
    client = MlflowClient(tracking_uri)
    uri = result.best_model_uri
    assert uri and uri.startswith("models:/"), result
    model_id = uri.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    assert (logged.name, str(logged.status)) == ("best_model", "READY")
    assert logged.tags["aloss_tune.trial"] == str(result.best_trial)
    assert logged.params["loss"] == result.best_params["loss"]
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["aloss_tune.best_model"] == uri
    assert parent.data.tags["aloss_tune.best_model_trial"] == str(result.best_trial)
    # The model's source is the best trial's own run, which lists it among its outputs.
    trial_run = client.get_run(logged.source_run_id)
    assert trial_run.data.tags["aloss_tune.trial"] == str(result.best_trial)
    assert model_id in [o.model_id for o in trial_run.outputs.model_outputs]

    # It is the model that scored the trial's objective: its best epoch, not merely its last one.
    loaded = mlflow.keras.load_model(uri)
    assert val_mae(loaded, data) == pytest.approx(result.best_value, rel=1e-5)
    prediction = loaded.predict(data[2], verbose=0)
    served = mlflow.pyfunc.load_model(uri).predict(data[2])
    np.testing.assert_allclose(np.asarray(served).reshape(prediction.shape), prediction, rtol=1e-6)
    if registered is not None:
        assert result.registered_model == f"{registered}/1"
        assert parent.data.tags["aloss_tune.registered_model"] == f"{registered}/1"
        version = client.get_model_version(registered, "1")
        assert (version.source, version.run_id) == (uri, logged.source_run_id)
        np.testing.assert_allclose(mlflow.keras.load_model(f"models:/{registered}/1").predict(data[2], verbose=0),
                                   prediction, rtol=1e-6)
    else:
        assert result.registered_model is None and "aloss_tune.registered_model" not in parent.data.tags
    return {"uri": uri, "logged": logged, "prediction": prediction}


@pytest.mark.slow
def test_the_best_trials_model_is_logged_registered_and_loads_back_on_sqlite(stores, tmp_path, monkeypatch):
    data = tiny_data()
    # An adaptive loss with a weight penalty: the model trains attached (a LossModel) and is served without it.
    raw = space("logged", ["adaptive_barron"])
    raw["loss"]["penalty"] = {"l2": 1e-4}
    result = tune(raw, data=data, register="aloss-best", progress=False, **stores)
    best = result.study.best_trial
    assert result.best_trial == best.number and result.counts["complete"] == 2
    found = check_logged_model(result, stores["tracking_uri"], data, monkeypatch, registered="aloss-best")
    assert found["logged"].source_run_id == best.user_attrs["aloss_tune.mlflow_run_id"]

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=found["uri"], dst_path=str(tmp_path / "dl")))
    config = json.loads((folder / "loss_config.json").read_text())
    assert config == best.user_attrs["aloss_tune.loss_config"]
    # The model as trained, with its loss (and the learned alpha and scale), for more training.
    trained = keras.saving.load_model(folder / "training" / "model.keras")
    assert isinstance(trained, LossModel)
    assert trained.loss.get_config() == aloss_tune.load_loss(config).get_config()
    np.testing.assert_allclose(trained.predict(data[2], verbose=0), found["prediction"], rtol=1e-6)

    # The export-ready copy, and the logged model through mlflow, in a process that never imports aloss-tune.
    np.save(tmp_path / "x.npy", data[2])
    code = (
        "import json, sys, numpy as np, keras, mlflow.keras, mlflow.pyfunc\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"plain = keras.saving.load_model({str(folder / 'data' / 'model.keras')!r})\n"
        f"logged = mlflow.keras.load_model({found['uri']!r})\n"
        f"served = mlflow.pyfunc.load_model({found['uri']!r})\n"
        "print(json.dumps({'plain': plain.predict(x, verbose=0).tolist(),\n"
        "                  'logged': logged.predict(x, verbose=0).tolist(),\n"
        "                  'served': np.asarray(served.predict(x)).tolist(),\n"
        "                  'aloss_tune': [m for m in sys.modules if m.startswith('aloss_tune')]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MLFLOW_TRACKING_URI=stores["tracking_uri"], TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["aloss_tune"] == []
    np.testing.assert_allclose(out["plain"], found["prediction"], rtol=1e-6)
    np.testing.assert_allclose(out["logged"], found["prediction"], rtol=1e-6)
    np.testing.assert_allclose(np.reshape(out["served"], found["prediction"].shape), found["prediction"], rtol=1e-6)

    # Resumed with a trial that cannot win: nothing new is logged or registered, and the result still points
    # to the study's best model.
    raw["optimizer"]["learning_rate"], raw["training"]["epochs"] = 1e-7, 1
    again = tune(raw, data=data, register="aloss-best", n_trials=1, progress=False, **stores)
    new = again.study.trials[-1]
    assert new.number == 2 and new.value > best.value
    assert (again.best_trial, again.best_model_uri, again.registered_model) == (
        best.number, found["uri"], "aloss-best/1")
    client = MlflowClient(stores["tracking_uri"])
    assert [m.model_id for m in client.search_logged_models([result.experiment_id])] == [found["logged"].model_id]
    assert [str(v.version) for v in client.search_model_versions("name = 'aloss-best'")] == ["1"]


def test_no_model_is_logged_unless_asked(stores):
    result = tune(space("not_logged", ["mse"], n_trials=1), data=tiny_data(), progress=False, **stores)
    assert result.best_model_uri is None and result.registered_model is None
    client = MlflowClient(stores["tracking_uri"])
    assert "aloss_tune.best_model" not in client.get_run(result.parent_run_id).data.tags
    assert not client.search_logged_models([result.experiment_id])


@pytest.mark.parametrize("kwargs, message", [
    ({"register": "a/b"}, "register: 'a/b' is not a valid registered model name: names cannot contain '/' or ':'."),
    ({"register": " "}, "register: a registered model name must be a non-empty name, but got ' '"),
    ({"log_model": True, "tracking": False}, "log_model: the best model is logged to MLflow, but tracking is off."),
])
def test_bad_model_logging_options_are_refused_before_any_store_exists(kwargs, message, in_tmp):
    with pytest.raises(aloss_tune.UsageError) as caught:
        tune(space("refused", ["mse"]), data=tiny_data(), **kwargs)
    assert str(caught.value).startswith(message)
    assert not list(in_tmp.iterdir())


def test_a_keras_tuner_search_logs_its_best_trial_from_its_checkpoint(stores, tmp_path, monkeypatch):
    data = tiny_data()
    result = tune(space("kt_logged", ["huber", "mse"]), data=data, backend="keras-tuner", tuner="random",
                  directory=tmp_path / "kt", log_model=True, progress=False, **stores)
    assert result.counts["complete"] == 2
    check_logged_model(result, stores["tracking_uri"], data, monkeypatch, registered=None)


@pytest.mark.mlflow_server
@pytest.mark.skipif(SERVER is None, reason="needs an MLflow tracking server (ALOSS_TUNE_TEST_MLFLOW_URI, see "
                                           ".ci/services.sh)")
def test_on_a_tracking_server_the_model_and_its_registry_version_go_through_the_server(tmp_path, monkeypatch):
    data = tiny_data()
    tag = uuid.uuid4().hex[:8]
    name = f"served-{tag}"
    result = tune(space(f"served_{tag}", ["huber", "mse"]), data=data, register=name, progress=False,
                  storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=SERVER)
    found = check_logged_model(result, SERVER, data, monkeypatch, registered=name)
    assert found["logged"].artifact_location.startswith("mlflow-artifacts:")


@pytest.mark.slow
def test_with_worker_processes_the_worker_that_trained_the_best_trial_logs_it(tmp_path, monkeypatch):
    import optuna

    from aloss_tune.workers import run_workers

    monkeypatch.chdir(tmp_path)
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = space("workers_logged", ["huber", "mse"])
    raw["data"] = "helpers.user_side:tiny_regression"
    result = run_workers(raw, 2, n_trials=2, storage=storage, tracking_uri=tracking, log_model=True)
    trials = optuna.load_study(study_name="workers_logged", storage=storage).trials
    assert len({t.user_attrs["aloss_tune.worker"] for t in trials}) == 2  # one trial in each process
    assert sorted(t.params["loss"] for t in trials) == ["huber", "mse"]  # the first round, for the command
    best = min(trials, key=lambda t: t.value)
    assert result.best_trial == best.number
    client = MlflowClient(tracking)
    assert client.get_run(result.parent_run_id).data.tags["aloss_tune.best_model"] == result.best_model_uri
    logged = client.get_logged_model(result.best_model_uri.removeprefix("models:/"))
    assert logged.source_run_id == best.user_attrs["aloss_tune.mlflow_run_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    from helpers.user_side import tiny_regression  # the study's data (tests/ is on the path: conftest.py)

    assert val_mae(mlflow.keras.load_model(result.best_model_uri), tiny_regression()) == pytest.approx(
        best.value, rel=1e-5)


def test_a_worker_whose_best_trial_was_beaten_while_it_logged_leaves_the_parent_tags_to_the_better_one(stores):
    """Two workers end together: the first ended when its trial 1 was the best and logs it slowly; meanwhile
    trial 0 completes better and its worker logs it. The parent run names trial 0's model, whichever of the two
    writes its tags last (checked under the storage's lock)."""
    import optuna

    from aloss_tune._schema import BEST_MODEL_TAG, BEST_MODEL_TRIAL_TAG
    from aloss_tune.backends.optuna import _still_best
    from aloss_tune.best_model import log_best_model
    from aloss_tune.tracking import StudyTracker, TrackingSettings

    study = optuna.create_study(study_name="beaten", storage=stores["storage"])
    for value in (0.5, 1.0):
        study.add_trial(optuna.trial.create_trial(value=value))
    tracker = StudyTracker(TrackingSettings(tracking_uri=stores["tracking_uri"]), "beaten", backend="optuna")
    tracker.start()
    x = tiny_data()[0]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(loss="mse")

    def log(number):
        return log_best_model(tracker, model, number=number, value=study.trials[number].value, params={},
                              loss_config=None, run_id=None, x_example=x,
                              still_best=lambda: _still_best(study, number, stores["storage"]))

    better = log(0)
    beaten = log(1)  # logged, but it is not the study's best any more: the tags stay
    assert beaten.uri != better.uri
    tags = MlflowClient(stores["tracking_uri"]).get_run(tracker.parent_run_id).data.tags
    assert (tags[BEST_MODEL_TAG], tags[BEST_MODEL_TRIAL_TAG]) == (better.uri, "0")
    tracker.close()
