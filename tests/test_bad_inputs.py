"""Every bad input is refused before training: one line naming the file and the key, exit 2, no store written.

Tables of cases, like Optuna's tables of invalid distributions: each case gives an id, what to change in a
good space (or which arguments to pass) and a fragment the message must contain. Library cases run in this
process through the Python API; the CLI cases run in one subprocess through `aloss_tune.cli.main` (each in
its own empty folder), and a few through the installed ``aloss-tune`` script itself.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import pytest
import yaml

import aloss_tune
from aloss_tune.errors import ConfigError, UsageError

HERE = Path(__file__).resolve().parent
STORES = ("aloss_tune.db", "mlflow.db", "mlruns", "kt_projects")

GOOD: dict[str, Any] = {
    "study": "bad",
    "data": "helpers.bad_inputs:data",
    "model": {"builder": "mlp", "params": {"units": 8, "layers": 1}},
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "training": {"epochs": 1, "batch_size": 64},
    "loss": ["mse"],
    "search": {"sampler": "random", "pruner": "none", "n_trials": 1},
}


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def write_space(folder: Path, patch: dict[str, Any] | None = None, text: str | None = None) -> Path:
    path = folder / "space.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(merged(GOOD, patch or {}), sort_keys=False))
    return path


def stores_in(folder: Path) -> list[str]:
    return [name for name in STORES if (folder / name).exists()]


def defect(kind: str) -> dict[str, Any]:
    """A space patch: the data with one defect (see `helpers.bad_inputs.data`)."""
    return {"data": {"name": "helpers.bad_inputs:data", "args": {"defect": kind}}}


DUPLICATE_TRAINING = yaml.safe_dump(GOOD, sort_keys=False) + "training: {epochs: 2}\n"

# ------------------------------------------------------------------------------------ the Python API: tune
# (id, space patch, tune() keyword arguments, exception type, message fragments)
TUNE_CASES: list[tuple[str, dict[str, Any], dict[str, Any], type, tuple[str, ...]]] = [
    ("mlp_unknown_param", {"model": {"params": {"unitz": 8}}}, {}, ConfigError,
     ("model.params.unitz", "units, layers")),
    ("mlp_bad_activation", {"model": {"params": {"activation": "foo"}}}, {}, ConfigError,
     ("model.params.activation", "'foo'", "relu")),
    ("mlp_bad_activation_choice",
     {"model": {"params": {"activation": {"type": "categorical", "choices": ["relu", "foo"]}}}}, {},
     ConfigError, ("model.params.activation", "'foo'")),
    ("mlp_units_range", {"model": {"params": {"units": {"type": "int", "low": 0, "high": 8}}}}, {},
     ConfigError, ("model.params.units",)),
    ("adam_momentum", {"optimizer": {"momentum": 0.9}}, {}, ConfigError,
     ("optimizer.momentum", "adam does not take momentum", "learning_rate")),
    ("negative_learning_rate", {"optimizer": {"learning_rate": -0.1}}, {}, ConfigError,
     ("optimizer.learning_rate", "> 0", "-0.1")),
    ("builder_not_a_model", {"model": {"builder": "helpers.bad_inputs:not_a_model", "params": {}}}, {},
     ConfigError, ("model.builder", "keras.Model", "Dense")),
    ("builder_raises", {"model": {"builder": "helpers.bad_inputs:key_error", "params": {}}}, {}, ConfigError,
     ("model.builder", "KeyError", "model.width")),
    ("builder_indexes_its_data", {"model": {"builder": "helpers.bad_inputs:indexes_its_data", "params": {}}}, {},
     ConfigError, ("model.builder: helpers.bad_inputs:indexes_its_data failed to build the space's first sample "
                   "(TypeError: 'Dataset' object is not subscriptable); its second argument is an "
                   "aloss_tune.datasets.Dataset: read data.x_train",)),
    ("builder_wrong_input", {"model": {"builder": "helpers.bad_inputs:wrong_input", "params": {}}}, {},
     ConfigError, ("model.builder", "shape (4,)")),
    ("data_nan", defect("nan_x"), {}, ConfigError,
     ("data:", "x_train", "NaN")),
    ("data_inf", defect("inf_y"), {}, ConfigError,
     ("data:", "y_val", "inf")),
    ("data_y_shape", defect("y_val_shape"), {},
     ConfigError, ("data:", "y_val", "y_train")),
    ("data_features", defect("features"), {},
     ConfigError, ("data:", "x_val", "x_train", "features")),
    ("data_empty", defect("empty"), {}, ConfigError,
     ("data:", "x_train", "empty")),
    ("data_strings", defect("strings"), {},
     ConfigError, ("data:", "y_train", "numeric")),
    ("data_function_raises", {"data": "helpers.bad_inputs:raises"}, {}, ConfigError,
     ("data: helpers.bad_inputs:raises raised OSError: cannot reach the data server.",)),
    ("data_function_needs_an_argument", {"data": "helpers.bad_inputs:needs"}, {}, ConfigError,
     ("data: helpers.bad_inputs:needs needs the argument 'path'; give it in data.args",)),
    ("data_function_unknown_argument", {"data": {"name": "helpers.bad_inputs:data", "args": {"defekt": "x"}}}, {},
     ConfigError, ("data.args.defekt: helpers.bad_inputs:data takes no argument 'defekt' (its arguments: defect, "
                   "n, seed).",)),
    ("data_function_returns_text", {"data": "helpers.bad_inputs:text"}, {}, ConfigError,
     ("data: helpers.bad_inputs:text returned a str; data must be a tuple (x_train, y_train, x_val, y_val[, "
      "x_test, y_test]), a dict with those keys or an aloss_tune.datasets.Dataset.",)),
    ("data_function_returns_a_bad_dict", {"data": {"name": "helpers.bad_inputs:as_dict", "args": {"extra": True}}},
     {}, ConfigError, ("data: helpers.bad_inputs:as_dict returned a dict with the key 'x_valid'; its keys are "
                       "x_train, y_train, x_val, y_val, x_test, y_test",)),
    ("data_scalars", {"data": "helpers.bad_inputs:scalars"}, {}, ConfigError,
     ("data: x_train must be an array of rows, but is a scalar (1.0).",)),
    ("data_complex", defect("complex"), {}, ConfigError,
     ("data: x_train holds complex numbers such as (", "separate features")),
    ("data_labels_0_1_2_for_bce", {**defect("labels_0_1_2"), "loss": ["bce"]}, {}, ConfigError,
     ("loss.choices[0]: 'bce' is for binary data", "its targets take the values 0, 1, 2")),
    ("data_binary_with_a_2", {**defect("binary_with_a_2"), "loss": ["bce"]}, {}, ConfigError,
     ("data: y_train holds 1 labels outside [0, 1] (such as 2), but the task is binary",)),
    ("model_three_outputs", {"model": {"builder": "helpers.bad_inputs:three_outputs", "params": {}}}, {},
     ConfigError, ("model.builder: the model of helpers.bad_inputs:three_outputs predicts rows of shape (3,) (3 "
                   "values), but the targets have rows of shape () (one value)",)),
    ("model_softmax_for_bce", {**defect("labels_0_1"), "loss": ["bce"],
                               "model": {"builder": "helpers.bad_inputs:softmax_two", "params": {}}}, {},
     ConfigError, ("predicts rows of shape (2,)", "binary labels take one sigmoid unit")),
    ("executions_per_trial_on_optuna", {"search": {"executions_per_trial": 2}}, {}, ConfigError,
     ("search.executions_per_trial: 2 applies to the keras-tuner backend only",)),
    ("tuner_on_optuna", {}, {"tuner": "hyperband"}, UsageError,
     ("--tuner hyperband: chooses KerasTuner's tuner, but the backend is optuna",)),
    ("sampler_args", {"search": {"sampler": {"name": "tpe", "n_startup": 3}}}, {}, ConfigError,
     ("search.sampler.n_startup", "n_startup_trials")),
    ("pruner_arg_value", {"search": {"pruner": {"name": "median", "n_startup_trials": -1}}}, {}, ConfigError,
     ("search.pruner", "n_startup_trials", "must be an integer >= 0")),
    ("pruner_args", {"search": {"pruner": {"name": "median", "warmup": 2}}}, {}, ConfigError,
     ("search.pruner.warmup", "n_warmup_steps")),
    ("storage_garbage", {}, {"storage": "garbage"}, UsageError,
     ("'garbage'", "not a valid database URL", "sqlite:///")),
    ("storage_unknown_dialect", {}, {"storage": "foo://bar/db"}, UsageError, ("foo://bar/db",)),
    ("tracking_scheme", {}, {"tracking_uri": "foo://bar"}, UsageError, ("foo://bar", "sqlite", "http")),
    ("kt_directory_is_a_file", {"search": {"backend": "keras-tuner"}}, {"directory": "afile"}, UsageError,
     ("directory", "afile", "not a folder")),
    ("kt_study_escapes_the_root", {"study": "../escaped", "search": {"backend": "keras-tuner"}}, {}, ConfigError,
     ("space.yaml: study: '../escaped' cannot name a KerasTuner project", "must not hold '/'")),
    ("kt_study_absolute", {"study": "/tmp/abs", "search": {"backend": "keras-tuner"}}, {}, ConfigError,
     ("space.yaml: study: '/tmp/abs' cannot name",)),
    ("storage_password_with_a_slash", {}, {"storage": "postgresql+psycopg2://u:ab/Secret@127.0.0.1:9/db"},
     UsageError, ("cannot open the Optuna storage postgresql+psycopg2://u:***@127.0.0.1:9/db",)),
    ("study_name_over_mlflow_limit", {"study": "s" * 501}, {}, ConfigError,
     ("space.yaml: study: names the MLflow experiment, which MLflow limits to 500 characters, but has 501.",)),
    ("tracking_password_with_a_slash", {}, {"tracking_uri": "http://u:ab/Secret@127.0.0.1:9"}, UsageError,
     ("tracking URI 'http://u:***@127.0.0.1:9'", "percent-encode it (/ as %2F)")),
]


@pytest.mark.parametrize("case_id, patch, kwargs, exc_type, fragments", TUNE_CASES,
                         ids=[c[0] for c in TUNE_CASES])
def test_tune_refuses_before_training(in_tmp, case_id, patch, kwargs, exc_type, fragments):
    space = write_space(in_tmp, patch)
    (in_tmp / "afile").write_text("not a folder")
    with pytest.raises(exc_type) as info:
        aloss_tune.tune(str(space), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert "Secret" not in message
    if exc_type is ConfigError:
        assert "space.yaml" in message
    assert sorted(p.name for p in in_tmp.iterdir()) == ["afile", "space.yaml"]  # no store, nothing at all


def test_an_unusable_experiment_is_refused_before_the_study_exists(in_tmp, stores, capsys):
    """A deleted experiment of the study's name, or a tracking "store" that is an Optuna file: refused before
    the Optuna study is created (MLflow would refuse either only after)."""
    import optuna
    from mlflow.tracking import MlflowClient

    from aloss_tune.cli import main

    client = MlflowClient(stores["tracking_uri"])
    client.delete_experiment(client.create_experiment("bad"))
    optuna.create_study(study_name="other", storage="sqlite:///other.db")
    space = str(write_space(in_tmp))
    storage = Path(stores["storage"][len("sqlite:///"):])
    cases = [(stores["tracking_uri"], "MLflow experiment 'bad' is deleted; restore it or choose another name."),
             ("sqlite:///other.db", "tracking store sqlite:///other.db: other.db is not an MLflow tracking store "
                                    "(it looks like an Optuna storage).")]
    for uri, message in cases:
        with pytest.raises(UsageError) as info:
            aloss_tune.tune(space, storage=stores["storage"], tracking_uri=uri)
        assert str(info.value) == message
        for workers in ("1", "2"):
            assert main(["tune", space, "--workers", workers, "--storage", stores["storage"], "--tracking-uri",
                         uri]) == 2
            assert capsys.readouterr().err == f"aloss-tune: error: {message}\n"
        assert not storage.exists()


def test_python_data_with_nan_is_refused(in_tmp):
    from helpers.bad_inputs import data

    space = write_space(in_tmp)
    with pytest.raises(ConfigError, match=r"data: x_train holds NaN"):
        aloss_tune.tune(str(space), data=data("nan_x"))
    assert stores_in(in_tmp) == []


def test_duplicate_yaml_keys(in_tmp):
    path = write_space(in_tmp, text=DUPLICATE_TRAINING)
    with pytest.raises(ConfigError, match=r"space.yaml: training: duplicate key at line \d+"):
        aloss_tune.SearchSpace.from_yaml(path)
    nested = "study: s\nloss:\n  choices: [mse]\n  choices: [huber]\n"
    with pytest.raises(ConfigError, match="loss.choices: duplicate key"):
        aloss_tune.SearchSpace.from_yaml(write_space(in_tmp, text=nested))
    with pytest.raises(ConfigError, match="could not determine a constructor"):  # still safe_load's safety
        unsafe = "study: !!python/object/apply:os.getcwd []\n"
        aloss_tune.SearchSpace.from_yaml(write_space(in_tmp, text=unsafe))


@pytest.mark.parametrize("backend", ["optuna", "keras-tuner"])
def test_every_trial_failing_with_one_config_error_stops_the_study(in_tmp, backend):
    from helpers import bad_inputs

    bad_inputs._calls["n"] = 0
    space = write_space(in_tmp, {"model": {"builder": "helpers.bad_inputs:fails_after_first", "params": {}},
                                 "optimizer": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.1}},
                                 "search": {"n_trials": 8, "backend": backend}})
    with pytest.raises(ConfigError, match="space.yaml: model.params.units: this builder cannot") as info:
        aloss_tune.tune(str(space), tracking=False)
    assert "\n" not in str(info.value)
    assert bad_inputs._calls["n"] == 4  # the check before training, then three trials: stopped early
    if backend == "optuna":
        import optuna

        study = optuna.load_study(study_name="bad", storage="sqlite:///aloss_tune.db")
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 3


@pytest.mark.parametrize("backend", ["optuna", "keras-tuner"])
def test_a_run_whose_every_trial_failed_ends_with_the_common_error(in_tmp, backend, capsys):
    """A learning rate that sends the loss to infinity in every trial: no result, so no exit 0."""
    from aloss_tune.cli import main

    space = write_space(in_tmp, {"optimizer": {"name": "sgd",
                                               "learning_rate": {"type": "float", "low": 1e8, "high": 1e9}},
                                 "training": {"epochs": 3}, "search": {"n_trials": 2}})
    assert main(["tune", str(space), "--no-tracking", "--backend", backend]) == 1
    out = capsys.readouterr()
    (line,) = error_lines(out.err)
    assert re.fullmatch(r"aloss-tune: error: all 2 trials of this run failed; the most common error \((every one|1 "
                        r"of them)\): TrialFailed: the training loss is (inf|nan) at epoch \d", line), line
    assert "Traceback" not in out.out + out.err  # KerasTuner prints none either
    assert [line.split("  ")[0] for line in out.err.splitlines() if line.startswith("trial ")] == [
        "trial 0 failed", "trial 1 failed"]


# -------------------------------------------------------------------------- the Python API: reading back
def _json_file(folder: Path, name: str, content: Any) -> str:
    (folder / name).write_text(json.dumps(content))
    return str(folder / name)


def _keras_config(obj: Any) -> dict[str, Any]:
    return keras.saving.serialize_keras_object(obj)


def _load_saved(folder: Path, name: str, obj: Any) -> Any:
    """`load_loss` of a JSON file holding ``obj``'s Keras serialization."""
    return aloss_tune.load_loss(_json_file(folder, name, _keras_config(obj)))


# (id, what to load (a function of the folder), exception type, message fragments)
LOAD_CASES: list[tuple[str, Any, type, tuple[str, ...]]] = [
    ("dense_json", lambda d: _load_saved(d, "dense.json", keras.layers.Dense(2)), ConfigError,
     ("dense.json", "Dense", "keras.losses.Loss")),
    ("adam_json", lambda d: _load_saved(d, "adam.json", keras.optimizers.Adam()), ConfigError,
     ("adam.json", "Adam", "keras.losses.Loss")),
    ("list_json", lambda d: aloss_tune.load_loss(_json_file(d, "list.json", [1, 2])), ConfigError,
     ("list.json", "list")),
    ("unknown_class", lambda d: aloss_tune.load_loss(_json_file(d, "x.json", {"class_name": "NoSuchLoss",
                                                                              "config": {}})),
     ConfigError, ("x.json", "NoSuchLoss")),
    ("directory", lambda d: aloss_tune.load_loss(str(d)), ConfigError, ("is a folder",)),
    ("dict_of_a_layer", lambda d: aloss_tune.load_loss(_keras_config(keras.layers.Dense(2))),
     ConfigError, ("Dense", "keras.losses.Loss")),
    ("missing_run", lambda d: aloss_tune.load_loss("runs:/0123456789abcdef"), UsageError,
     ("mlflow.db", "does not exist")),
    ("best_missing_storage", lambda d: aloss_tune.load_best_loss("nope"), UsageError,
     ("no study named 'nope'", "aloss_tune.db", "does not exist")),
    ("run_tracking_scheme", lambda d: aloss_tune.load_loss("runs:/0123456789abcdef", tracking_uri="foo://bar"),
     UsageError, ("'foo://bar'", "unknown scheme")),
    ("best_missing_kt_study", lambda d: aloss_tune.load_best_loss("nope", backend="keras-tuner"), UsageError,
     ("nope", "does not exist")),
]


@pytest.mark.parametrize("case_id, load, exc_type, fragments", LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_loading_a_loss_refuses_anything_else(in_tmp, case_id, load, exc_type, fragments):
    with pytest.raises(exc_type) as info:
        load(in_tmp)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert stores_in(in_tmp) == []


# ------------------------------------------------------------------- read-only commands never write a file
# (id, argv, a fragment of the one error line); every file of the folder is left byte for byte as it was.
READ_ONLY_CASES: list[tuple[str, list[str], str]] = [
    ("best_storage_is_mlflow_db", ["best", "s", "--storage", "sqlite:///mlflow.db"],
     "storage sqlite:///mlflow.db is not an Optuna storage: it holds no Optuna tables (it looks like an MLflow "
     "tracking store)"),
    ("best_storage_is_empty", ["best", "s", "--storage", "sqlite:///empty.db"],
     "storage sqlite:///empty.db: empty.db is an empty file, not an Optuna storage."),
    ("best_storage_is_garbage", ["best", "s", "--storage", "sqlite:///garbage.db"], "file is not a database"),
    ("best_storage_is_a_folder", ["best", "s", "--storage", "sqlite:///folder"], "folder is a folder"),
    ("report_storage_is_mlflow_db", ["report", "s", "--storage", "sqlite:///mlflow.db"], "not an Optuna storage"),
    ("best_run_in_an_optuna_db", ["best", "runs:/0123456789abcdef", "--tracking-uri", "sqlite:///optuna.db"],
     "optuna.db is not an MLflow tracking store (it looks like an Optuna storage)"),
    ("best_run_in_an_empty_file", ["best", "runs:/0123456789abcdef", "--tracking-uri", "sqlite:///empty.db"],
     "the MLflow tracking store file empty.db is empty"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case_id, argv, fragment", READ_ONLY_CASES, ids=[c[0] for c in READ_ONLY_CASES])
def test_read_only_commands_never_modify_a_file(in_tmp, stores, case_id, argv, fragment, capsys):
    import optuna

    from aloss_tune.cli import main

    optuna.create_study(study_name="s", storage="sqlite:///optuna.db")
    (in_tmp / "empty.db").write_bytes(b"")
    (in_tmp / "garbage.db").write_text("not a database\n" * 100)
    (in_tmp / "folder").mkdir()
    before = _snapshot(in_tmp)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and fragment in err, err
    assert _snapshot(in_tmp) == before


def test_load_best_loss_reads_only(in_tmp, stores):
    before = _snapshot(in_tmp)
    with pytest.raises(UsageError, match="not an Optuna storage"):
        aloss_tune.load_best_loss("s", storage="sqlite:///mlflow.db")
    assert _snapshot(in_tmp) == before


# (id, the run's loss_config.json (None: no artifact; "missing": no such run), the one error line)
RUN_CASES: list[tuple[str, Any, str]] = [
    ("corrupt_loss_config", "{not json", "runs:/{run}/loss_config.json: not a loss config: not valid JSON "
                                         "(Expecting property name enclosed in double quotes at line 1)."),
    ("optimizer_config", lambda: json.dumps(_keras_config(keras.optimizers.Adam())),
     "runs:/{run}: holds a Adam ('Adam'), not a keras.losses.Loss."),
    ("invalid_loss_config", json.dumps({"params": {"loss": "huber", "loss.delta": -1.0}}),
     "runs:/{run}: huber: `delta` must be > 0 and finite, but got delta=-1.0."),
    ("run_of_another_kind", None, "load_loss: run {run} has no loss config (loss_config.json or "
                                  "best_loss_config.json): it is not the run of an aloss-tune trial or study."),
    ("no_such_run", "missing", "load_loss: no run {run} in the MLflow tracking store {uri} (give the tracking URI "
                               "where the study logged)."),
]


@pytest.mark.parametrize("case_id, content, message", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_a_run_without_a_loss_is_one_line(in_tmp, stores, case_id, content, message, capsys):
    from mlflow.tracking import MlflowClient

    from aloss_tune.cli import main

    uri = stores["tracking_uri"]
    client = MlflowClient(uri)
    run = "0123456789abcdef0123456789abcdef"
    if content != "missing":
        run = client.create_run(client.create_experiment("other"), run_name="not a trial").info.run_id
        if content is not None:
            client.log_text(run, content() if callable(content) else content, "loss_config.json")
    message = message.format(run=run, uri=uri)
    with pytest.raises((ConfigError, UsageError)) as info:
        aloss_tune.load_loss(f"runs:/{run}", tracking_uri=uri)
    assert str(info.value) == message
    assert main(["best", f"runs:/{run}", "--tracking-uri", uri, "-o", "best.json"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [f"aloss-tune: error: {message}"] and "Traceback" not in err
    assert not (in_tmp / "best.json").exists()


def test_report_of_a_missing_study_writes_nothing(in_tmp):
    from aloss_tune.report import write_report

    with pytest.raises(UsageError, match="does not exist"):
        write_report("nope", in_tmp / "out")
    assert stores_in(in_tmp) == [] and not (in_tmp / "out").exists()


# -------------------------------------------------------------------------- tracking URIs with a password
@pytest.fixture
def health_server():
    """A /health endpoint that wants HTTP basic auth ``user:s3cret``; records the Authorization headers."""
    import base64
    import http.server
    import threading

    seen: list[str | None] = []
    good = "Basic " + base64.b64encode(b"user:s3cret").decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            self.send_response(200 if self.headers.get("Authorization") == good and self.path == "/health"
                               else 401)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_tracking_credentials_reach_the_server_and_are_never_shown(health_server, monkeypatch):
    from aloss_tune.tracking import check_tracking_uri

    host, seen = health_server
    check_tracking_uri(f"http://user:s3cret@{host}")  # in the URI
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    check_tracking_uri(f"http://{host}/")  # from MLflow's variables
    assert len(seen) == 2 and all(h and h.startswith("Basic ") for h in seen)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(UsageError) as info:
        check_tracking_uri(f"http://user:wrong-pw@{host}")
    message = str(info.value)
    assert "401" in message and "wrong-pw" not in message and "user:***@" in message


# ------------------------------------------------------------------------------------------- the CLI
def env() -> dict[str, str]:
    out = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    for name in ("MLFLOW_TRACKING_URI", "ALOSS_TUNE_STORAGE"):
        out.pop(name, None)
    return out


RUNNER = r"""
import json, os, sys
from aloss_tune.cli import main

cases = json.loads(sys.argv[1])
root = os.getcwd()
codes = {}
for case in cases:
    os.chdir(os.path.join(root, case["id"]))
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.path.join(root, case["id"] + ".out"), "w") as out, \
            open(os.path.join(root, case["id"] + ".err"), "w") as err:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            codes[case["id"]] = main(case["argv"])
        except SystemExit as exc:
            codes[case["id"]] = exc.code
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    os.chdir(root)
print(json.dumps(codes))
"""

BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"

# (id, argv, files to create in the case's folder: name -> space patch / text / bytes, message fragments)
CLI_CASES: list[tuple[str, list[str], dict[str, Any], tuple[str, ...]]] = [
    ("tune_mlp_unknown_param", ["tune", "space.yaml"], {"space.yaml": {"model": {"params": {"unitz": 8}}}},
     ("space.yaml: model.params.unitz",)),
    ("tune_adam_momentum", ["tune", "space.yaml"], {"space.yaml": {"optimizer": {"momentum": 0.9}}},
     ("space.yaml: optimizer.momentum",)),
    ("tune_negative_lr", ["tune", "space.yaml"], {"space.yaml": {"optimizer": {"learning_rate": -0.1}}},
     ("space.yaml: optimizer.learning_rate", "-0.1")),
    ("tune_not_a_model", ["tune", "space.yaml"],
     {"space.yaml": {"model": {"builder": "helpers.bad_inputs:not_a_model", "params": {}}}},
     ("space.yaml: model.builder",)),
    ("tune_data_nan", ["tune", "space.yaml"],
     {"space.yaml": defect("nan_x")},
     ("space.yaml: data: x_train",)),
    ("tune_workers_data_nan", ["tune", "space.yaml", "--workers", "2"],
     {"space.yaml": defect("nan_x")},
     ("space.yaml: data: x_train",)),
    ("validate_data_features", ["validate", "space.yaml", "--data"],
     {"space.yaml": defect("features")},
     ("space.yaml: data: x_val",)),
    ("validate_mlp_activation", ["validate", "space.yaml"],
     {"space.yaml": {"model": {"params": {"activation": "foo"}}}}, ("space.yaml: model.params.activation",)),
    ("tune_sampler_args", ["tune", "space.yaml"],
     {"space.yaml": {"search": {"sampler": {"name": "tpe", "n_startup": 3}}}},
     ("space.yaml: search.sampler.n_startup",)),
    ("tune_pruner_args", ["tune", "space.yaml"],
     {"space.yaml": {"search": {"pruner": {"name": "median", "warmup": 2}}}},
     ("space.yaml: search.pruner.warmup",)),
    ("tune_duplicate_key", ["tune", "space.yaml"], {"space.yaml": DUPLICATE_TRAINING},
     ("space.yaml: training: duplicate key",)),
    ("validate_binary_file", ["validate", "space.png"], {"space.png": BINARY},
     ("space.png", "not a text")),
    ("tune_storage_garbage", ["tune", "space.yaml", "--storage", "garbage"], {"space.yaml": {}},
     ("'garbage' is not a valid database URL",)),
    ("tune_tracking_scheme", ["tune", "space.yaml", "--tracking-uri", "foo://bar"], {"space.yaml": {}},
     ("foo://bar",)),
    ("tune_kt_directory_file", ["tune", "space.yaml", "--backend", "keras-tuner", "--directory", "afile"],
     {"space.yaml": {}, "afile": "x"}, ("--directory", "afile")),
    ("tune_storage_password_with_a_slash",
     ["tune", "space.yaml", "--storage", "postgresql+psycopg2://u:ab/Secret@127.0.0.1:9/db"], {"space.yaml": {}},
     ("cannot open the Optuna storage postgresql+psycopg2://u:***@127.0.0.1:9/db",)),
    ("tune_tracking_password_with_a_slash", ["tune", "space.yaml", "--tracking-uri", "http://u:ab/Secret@127.0.0.1:9"],
     {"space.yaml": {}}, ("tracking URI 'http://u:***@127.0.0.1:9'", "%2F")),
    ("validate_data_function_raises", ["validate", "space.yaml", "--data"],
     {"space.yaml": {"data": "helpers.bad_inputs:raises"}},
     ("space.yaml: data: helpers.bad_inputs:raises raised OSError",)),
    ("tune_data_function_needs_an_argument", ["tune", "space.yaml"], {"space.yaml": {"data": "helpers.bad_inputs:needs"}},
     ("space.yaml: data: helpers.bad_inputs:needs needs the argument 'path'",)),
    ("validate_mlp_params_without_a_builder", ["validate", "space.yaml"],
     {"space.yaml": yaml.safe_dump({**GOOD, "model": {"params": {"units1": 8}}})},  # no builder: the mlp
     ("space.yaml: model.params.units1: unknown parameter for model 'mlp'",)),
    ("tune_objective_training_metric", ["tune", "space.yaml"], {"space.yaml": {"objective": "mae"}},
     ("space.yaml: objective.metric: 'mae' is measured on the training data",)),
    ("validate_step_not_dividing", ["validate", "space.yaml"],
     {"space.yaml": {"model": {"params": {"dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.2}}}}},
     ("space.yaml: model.params.dropout.step: `step` must divide `high - low`",)),
    ("tune_workers_tuner_on_optuna", ["tune", "space.yaml", "--workers", "2", "--tuner", "random"],
     {"space.yaml": {}}, ("--tuner random: chooses KerasTuner's tuner, but the backend is optuna",)),
    ("tune_workers_model_three_outputs", ["tune", "space.yaml", "--workers", "2"],
     {"space.yaml": {"model": {"builder": "helpers.bad_inputs:three_outputs", "params": {}}}},
     ("space.yaml: model.builder: the model of helpers.bad_inputs:three_outputs predicts rows of shape (3,)",)),
    ("best_output_is_a_folder", ["best", "nope", "-o", "out"], {"out/": None},
     ("best: --output out is a folder; give a file name, e.g. out/best_loss.json.",)),
    ("best_output_in_a_missing_folder", ["best", "nope", "-o", "no/best.json"], {},
     ("best: --output no/best.json: the folder no does not exist.",)),
    ("best_kt_study_escapes_the_root", ["best", "../escaped", "--backend", "keras-tuner"], {},
     ("study '../escaped' cannot name a KerasTuner project",)),
    ("best_missing_study", ["best", "nope"], {}, ("no study named 'nope'", "does not exist")),
    ("best_storage_garbage", ["best", "nope", "--storage", "garbage"], {}, ("not a valid database URL",)),
    ("best_missing_run", ["best", "runs:/0123456789abcdef"], {}, ("mlflow.db", "does not exist")),
    ("best_run_tracking_scheme", ["best", "runs:/0123456789abcdef", "--tracking-uri", "foo://bar"], {},
     ("tracking URI 'foo://bar': unknown scheme",)),
    ("best_missing_kt_study", ["best", "nope", "--backend", "keras-tuner"], {}, ("nope", "does not exist")),
    ("report_missing_study", ["report", "nope"], {}, ("no study named 'nope'", "does not exist")),
    ("report_out_not_writable", ["report", "nope", "--out", "afile/report"], {"afile": "x"},
     ("afile", "cannot write")),
    ("tune_every_trial_fails", ["tune", "space.yaml", "--no-tracking"],
     {"space.yaml": {"model": {"builder": "helpers.bad_inputs:fails_after_first", "params": {}},
                     "search": {"n_trials": 8}}},
     ("space.yaml: model.params.units: this builder cannot build more than one model.",)),
]
STUDY_STARTED = {"tune_every_trial_fails"}  # its trials ran: the Optuna storage holds them


def _make_files(folder: Path, files: dict[str, Any]) -> None:
    folder.mkdir()
    for name, content in files.items():
        if name.endswith("/"):
            (folder / name).mkdir()
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        elif isinstance(content, str):
            (folder / name).write_text(content)
        else:
            write_space(folder, content)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Every CLI case, each in its own empty folder, in one process (TensorFlow is imported once)."""
    root = tmp_path_factory.mktemp("cli")
    for case_id, _, files, _ in CLI_CASES:
        _make_files(root / case_id, files)
    cases = [{"id": case_id, "argv": argv} for case_id, argv, _, _ in CLI_CASES]
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cases)], cwd=root, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    return {case_id: (codes[case_id], (root / f"{case_id}.err").read_text(), root / case_id)
            for case_id in codes}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("aloss-tune: error:")]


@pytest.mark.parametrize("case_id, argv, files, fragments", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_with_one_line(cli_results, case_id, argv, files, fragments):
    code, stderr, folder = cli_results[case_id]
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert "Secret" not in stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert stores_in(folder) == (["aloss_tune.db"] if case_id in STUDY_STARTED else [])
    assert not any(p.name.endswith("_report") for p in folder.iterdir())


def script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "aloss-tune"
    return subprocess.run([str(exe), *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)


def test_the_installed_script_exits_2_without_a_store(tmp_path):
    write_space(tmp_path, {"model": {"params": {"unitz": 8}}})
    done = script("tune", "space.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert error_lines(done.stderr) == [
        "aloss-tune: error: space.yaml: model.params.unitz: unknown parameter for model 'mlp' "
        "(allowed: units, layers, dropout, activation)."]
    assert stores_in(tmp_path) == []


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``aloss-tune losses | head -1``: the reader has gone, so the command stops as a Unix tool does."""
    exe = Path(sys.executable).parent / "aloss-tune"
    proc = subprocess.Popen([str(exe), "losses"], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # nobody reads: every write fails with EPIPE
    with proc.stderr:
        stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 141  # 128 + SIGPIPE, what the shell reports for `yes | head -1`
    assert stderr.strip() == "" or ("Traceback" not in stderr and "BrokenPipe" not in stderr), stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes in read-only folders")
def test_report_in_a_read_only_folder(tmp_path, stores):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        done = script("report", "nope", "--storage", stores["storage"], cwd=folder)
    finally:
        folder.chmod(0o755)
    assert done.returncode == 2
    assert error_lines(done.stderr) and "cannot write" in error_lines(done.stderr)[0]
    assert "Traceback" not in done.stderr
