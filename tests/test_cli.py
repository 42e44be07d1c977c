"""The main job through the real entry point: tune, resume, best; bad input exits 2 with one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from aloss_tune.cli import main

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SPACE = {
    "study": "e2e",
    "data": "helpers.user_side:tiny_regression",
    "model": {"builder": "helpers.user_side:build",
              "params": {"units": 8, "mode": {"type": "categorical", "choices": ["ok", "fail"]}}},
    "objective": {"metric": "val_mae", "direction": "minimize"},
    "training": {"epochs": 3, "batch_size": 64},
    "loss": {"choices": ["mse", "huber"], "params": {"huber": {"delta": 1.0}}},
    "search": {"sampler": "grid", "pruner": "none", "n_trials": 4, "seed": 3},
}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    exe = Path(sys.executable).parent / "aloss-tune"
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study through the CLI (4 grid trials, 2 of them failing on purpose; its best model logged and
    registered), then a resume."""
    tmp = tmp_path_factory.mktemp("e2e")
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    stores = ["--storage", f"sqlite:///{tmp / 'optuna.db'}", "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    first = cli("tune", str(space), *stores, "--register", "e2e-model", cwd=tmp)
    second = cli("tune", str(space), *stores, "--n-trials", "1", cwd=tmp)
    return {"tmp": tmp, "space": space, "stores": stores, "first": first, "second": second}


def mlflow_runs(tmp: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_tune_runs_the_study_and_reports(study):
    first = study["first"]
    assert first.returncode == 0, first.stderr[-2000:]
    # The huber trial (delta 1 on outlier-heavy targets) ends no better than predicting the training median:
    # dead, and counted so on the console as in the report.
    assert "study 'e2e' (optuna): 1 complete, 1 dead, 0 pruned, 2 failed" in first.stdout
    assert "best trial" in first.stdout and "loss:" in first.stdout
    # No terminal: one line per finished trial on stderr instead of a progress bar.
    lines = [line for line in first.stderr.splitlines() if line.startswith("trial ")]
    assert sorted((int(line.split()[1]), line.split()[2]) for line in lines)[0][0] == 0
    assert sorted(line.split()[2] for line in lines) == ["complete", "dead", "failed", "failed"], first.stderr
    assert all("loss=" in line for line in lines) and all("best=" in line for line in lines if "complete" in line)
    # MLflow created its store (a new file) without a word: no table-creation INFO lines.
    assert "Creating initial MLflow database tables" not in first.stderr
    assert [line for line in first.stderr.splitlines() if " INFO " in line] == []


def test_the_console_the_report_and_mlflow_count_trials_the_same_way(study):
    from aloss_tune.backends.optuna import study_record
    from aloss_tune.report._study import read_study

    loaded = optuna.load_study(study_name="e2e", storage=f"sqlite:///{study['tmp'] / 'optuna.db'}")
    counts = read_study(study_record(loaded)).counts
    assert counts == {"complete": 1, "dead": 2, "pruned": 0, "failed": 2}  # the resume added one more dead trial
    summary = f"{counts['complete']} complete, {counts['dead']} dead, 0 pruned, {counts['failed']} failed"
    assert f"study 'e2e' (optuna): {summary}" in study["second"].stdout
    client, runs = mlflow_runs(study["tmp"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["aloss_tune.state"] == summary
    states = sorted(r.data.tags["aloss_tune.state"] for r in runs if r.info.run_id != parent.info.run_id)
    assert states == ["complete", "dead", "dead", "failed", "failed"]
    page = Path(client.download_artifacts(parent.info.run_id, "summary.md", str(study["tmp"] / "dl"))).read_text()
    assert f"- Trials: 5 ({summary})" in page and "**Dead trials: 2** of 5" in page


def test_tune_logs_and_registers_the_best_model_when_asked(study):
    import re

    first, second = study["first"], study["second"]
    lines = [line for line in first.stdout.splitlines() if line.startswith("model:")]
    assert len(lines) == 1 and re.fullmatch(r"model:  models:/m-[0-9a-f]+ \(registered as e2e-model/1\)",
                                            lines[0]), first.stdout
    uri = lines[0].split()[1]
    client, runs = mlflow_runs(study["tmp"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["aloss_tune.best_model"] == uri
    version = client.get_model_version("e2e-model", "1")
    assert version.source == uri
    best = next(r for r in runs if r.info.run_id == version.run_id)
    assert best.data.tags["aloss_tune.trial"] == parent.data.tags["aloss_tune.best_trial"]
    assert "model:" not in second.stdout  # the resumed run was not asked to log it


def test_optuna_storage_holds_the_study(study):
    loaded = optuna.load_study(study_name="e2e", storage=f"sqlite:///{study['tmp'] / 'optuna.db'}")
    trials = loaded.get_trials()
    assert len(trials) == 5  # 4, then one more on resume
    assert len({t.number for t in trials}) == 5
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("deliberate failure" in t.user_attrs["aloss_tune.error"] for t in failed)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.user_attrs["aloss_tune.params"]["loss"] in ("mse", "huber") for t in done)


def test_mlflow_layout(study):
    client, runs = mlflow_runs(study["tmp"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "a resumed study reuses its parent run"
    parent = parents[0]
    assert parent.data.tags["aloss_tune.study"] == "e2e"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    loaded = optuna.load_study(study_name="e2e", storage=f"sqlite:///{study['tmp'] / 'optuna.db'}")
    names = {t.number: f"trial-{t.number} {t.user_attrs['aloss_tune.params']['loss']}" for t in loaded.get_trials()}
    assert sorted(r.info.run_name for r in children) == sorted(names.values()) and len(names) == 5
    for trial in loaded.get_trials():
        run = next(r for r in children if r.info.run_name == names[trial.number])
        params = trial.user_attrs["aloss_tune.params"]
        for key, value in params.items():
            assert run.data.params[key] == str(value)
        assert run.data.params["seed"] == str(3 + trial.number)
        assert run.data.params["backend"] == "optuna"
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            history = client.get_metric_history(run.info.run_id, "val_mae")
            assert [m.step for m in history] == [0, 1, 2]
            assert [m.value for m in history] == pytest.approx(trial.user_attrs["aloss_tune.history"]["val_mae"])
            assert run.data.metrics["objective"] == pytest.approx(trial.value)
            artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
            assert "loss_config.json" in artifacts
        else:
            assert run.info.status == "FAILED"
            assert "deliberate failure" in run.data.tags["aloss_tune.error"]
            assert "error.txt" in [a.path for a in client.list_artifacts(run.info.run_id)]
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"space.yaml", "best_loss_config.json", "best_params.json"} <= parent_artifacts
    assert parent.info.status == "FINISHED"


def test_best_rebuilds_the_same_loss(study, capfd):
    import aloss_tune

    tmp = study["tmp"]
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    loaded = optuna.load_study(study_name="e2e", storage=storage)
    best = loaded.best_trial
    expected = best.user_attrs["aloss_tune.loss_config"]["keras"]["config"]

    out = cli("best", "e2e", "--storage", storage, cwd=tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    exported = json.loads(out.stdout)
    assert exported["trial"] == best.number
    assert aloss_tune.load_loss(exported).get_config() == expected

    out = cli("best", "e2e", "--storage", storage, "--format", "python", cwd=tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    used = run_snippet(out.stdout)  # the snippet a user pastes, as it is, in a fresh process
    assert used["loss"] == expected
    assert used["optimizer_class"] == "Adam" and used["model_params"]["model.mode"] == "ok"
    assert math.isfinite(used["fitted"])

    assert aloss_tune.load_best_loss("e2e", storage=storage).get_config() == expected
    client, runs = mlflow_runs(tmp)
    run = next(r for r in runs if r.data.tags.get("aloss_tune.trial") == str(best.number))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert aloss_tune.load_loss(f"runs:/{run.info.run_id}", tracking_uri=uri).get_config() == expected
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert aloss_tune.load_loss(f"runs:/{parent.info.run_id}", tracking_uri=uri).get_config() == expected
    assert "Downloading artifacts" not in capfd.readouterr().err  # no progress bars from MLflow
    snippets = []
    for source in (run, parent):
        out = cli("best", f"runs:/{source.info.run_id}", "--tracking-uri", uri, "--format", "python", cwd=tmp)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stderr == ""  # nothing but the snippet (on stdout)
        snippets.append(out.stdout)
    for used in run_snippets(snippets):
        assert used["loss"] == expected and used["model_params"]["model.units"] == 8


SNIPPET_CHECK = """
import json
import numpy as np
x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
config = loss.get_config()  # as built, before a fit sets what it learns
model = compile_with_best_loss(keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]))
history = model.fit(x, x[:, :1], epochs=1, verbose=0)
print(json.dumps({"loss": config, "optimizer": optimizer.get_config(),
                  "optimizer_class": type(optimizer).__name__,
                  "model_params": globals().get("model_params"), "fitted": history.history["loss"][-1]},
                 default=str))
"""


def run_snippet(code: str) -> dict:
    """Run ``best --format python``'s output unchanged in a fresh interpreter, then use it on a model."""
    done = subprocess.run([sys.executable, "-c", code + "\n" + SNIPPET_CHECK], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_snippets(codes: list[str]) -> list[dict]:
    """`run_snippet` for several snippets in one fresh interpreter (one TensorFlow import), each in a namespace
    of its own, so a snippet still gets only what it imports itself."""
    program = "import json, sys\nfor code in json.loads(sys.argv[1]):\n    exec(code, {'__name__': '__main__'})\n"
    done = subprocess.run([sys.executable, "-c", program, json.dumps([c + "\n" + SNIPPET_CHECK for c in codes])],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    used = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"loss": ')]
    assert len(used) == len(codes), done.stdout[-2000:]
    return used


def test_python_snippet_of_a_learned_loss_attaches_it_and_keeps_the_learning_rate():
    import aloss_tune
    from aloss_tune.best import python_snippet

    params = {"loss": "adaptive_barron", "loss.alpha_lo": 0.5, "loss.l2": 1e-4,
              "optimizer.learning_rate": 0.0031, "model.units": 8, "model.fancy": False}
    code = python_snippet(params, optimizer="rmsprop", title="best trial 3")
    assert "aloss_tune.attach(model, loss)" in code and "False" in code and "false" not in code
    used = run_snippet(code)
    assert used["optimizer_class"] == "RMSprop"
    assert used["optimizer"]["learning_rate"] == pytest.approx(0.0031)
    assert used["loss"] == json.loads(json.dumps(aloss_tune.build_loss(params).get_config(), default=str))
    assert used["model_params"] == {"model.units": 8, "model.fancy": False}
    assert math.isfinite(used["fitted"])


def test_entry_point_usage_error_is_one_line(tmp_path):
    out = cli("tune", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "nope.yaml: cannot read the space file" in out.stderr
    assert not list(tmp_path.iterdir())


def _write(tmp: Path, raw) -> str:
    path = tmp / "space.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return str(path)


def _space(**changes):
    raw = json.loads(json.dumps(SPACE))
    raw.update(changes)
    return raw


BAD = [
    ("syntax", lambda t: ["tune", _write(t, "study: s\nloss: [mse\n")], r"space\.yaml: invalid YAML at line 3"),
    ("unknown loss", lambda t: ["tune", _write(t, _space(loss=["mse", "nope"]))], r"loss\.choices\[1\]: .*'nope'"),
    ("unknown key", lambda t: ["tune", _write(t, _space(trainig={"epochs": 2}))], r"trainig: unknown key"),
    ("low > high", lambda t: ["tune", _write(t, _space(loss={"choices": ["huber"], "params": {"huber": {
        "delta": {"type": "float", "low": 2.0, "high": 1.0}}}}))], r"loss\.params\.huber\.delta\.low: `low <= high`"),
    ("step with log", lambda t: ["tune", _write(t, _space(loss={"choices": ["huber"], "params": {"huber": {
        "delta": {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}}}}))],
     r"loss\.params\.huber\.delta\.step: `step` and `log` cannot be used together"),
    ("val_loss", lambda t: ["tune", _write(t, _space(objective={"metric": "val_loss"}))],
     r"objective\.metric: 'val_loss' cannot rank trials whose loss varies"),
    ("bad import", lambda t: ["tune", _write(t, _space(model={"builder": "helpers.user_side:nope"}))],
     r"model: module 'helpers\.user_side' has no attribute 'nope'"),
    ("bad module", lambda t: ["tune", _write(t, _space(data="no_such_module_xyz:load"))],
     r"data: cannot import module 'no_such_module_xyz'"),
    ("loss for another task", lambda t: ["tune", _write(t, _space(loss=["mse", "bce"], search={"n_trials": 1}))],
     r"loss\.choices\[1\]: 'bce' is for binary data"),
    ("unreachable storage", lambda t: ["tune", _write(t, _space()), "--storage",
                                       "postgresql+psycopg2://alice:s3cret@127.0.0.1:9/optuna"],
     r"cannot open the Optuna storage postgresql\+psycopg2://alice:\*\*\*@127\.0\.0\.1:9/optuna"),
    ("unreachable tracking", lambda t: ["tune", _write(t, _space()), "--tracking-uri", "http://127.0.0.1:9"],
     r"cannot reach the MLflow tracking server http://127\.0\.0\.1:9"),
    ("bad flag", lambda t: ["tune", _write(t, _space()), "--n-trials", "0"], r"--n-trials: must be an integer >= 1"),
    ("retries without heartbeat", lambda t: ["tune", _write(t, _space()), "--retries", "2"],
     r"--retries needs --heartbeat"),
    ("bad registered model name", lambda t: ["tune", _write(t, _space()), "--register", "team/best"],
     r"register: 'team/best' is not a valid registered model name: names cannot contain '/' or ':'\.$"),
    ("model without tracking", lambda t: ["tune", _write(t, _space()), "--log-model", "--no-tracking"],
     r"--log-model and --register log the best model to MLflow; drop --no-tracking\.$"),
    ("unknown study", lambda t: ["best", "nope", "--storage", f"sqlite:///{t / 'empty.db'}"],
     r"no study named 'nope'"),
]


@pytest.mark.parametrize("case, argv, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(HERE))
    args = argv(tmp_path)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("aloss-tune: error: ") and err.count("\n") == 1, err
    assert __import__("re").search(message, err), err
    assert "s3cret" not in err
    written = {p.name for p in tmp_path.iterdir()} - {"space.yaml"}
    if case == "unknown study":
        written.discard("empty.db")  # opening a storage to look for the study creates an empty one
    assert not written, f"bad input must not write a store, but wrote {written}"


@pytest.mark.parametrize("args", [["--help"], ["tune", "--help"], ["--version"], ["tune"]])
def test_help_and_usage_errors_do_not_import_keras(args):
    code = ("import sys\n"
            f"sys.argv = ['aloss-tune', *{args!r}]\n"
            "from aloss_tune.cli import main\n"
            "try:\n"
            "    code = main(sys.argv[1:])\n"
            "except SystemExit as exc:\n"
            "    code = exc.code\n"
            "print('keras' in sys.modules, 'tensorflow' in sys.modules, code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == f"False False {2 if args == ['tune'] else 0}", done.stderr


def test_the_library_import_still_registers_the_losses():
    code = ("import sys, aloss_tune, keras\n"
            "print(keras.saving.get_registered_object('aloss_tune>RobustLoss') is not None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr


USER_MODULE = '''
import numpy as np
import keras


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype("float32")
    y = (x.sum(axis=1) + rng.normal(size=80)).astype("float32")
    return x[:60], y[:60], x[60:], y[60:]


def build(params):
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(params.get("model.units", 4)),
                             keras.layers.Dense(1)])
'''


def test_validate_finds_a_users_module_in_the_working_directory_and_says_what_it_checked(tmp_path):
    (tmp_path / "my_project.py").write_text(USER_MODULE)
    space = {"study": "mine", "data": "my_project:data", "model": {"builder": "my_project:build",
             "params": {"units": {"type": "int", "low": 2, "high": 8}}}, "loss": ["mse", "huber"]}
    path = _write(tmp_path, space)
    bare = cli("validate", path, cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr
    assert "not checked without --data: that the data loads" in bare.stdout
    full = cli("validate", path, "--data", cwd=tmp_path)  # my_project is only in the working directory
    assert full.returncode == 0, full.stderr
    assert "not checked" not in full.stdout and "objective: minimize val_mae" in full.stdout
    assert "loss.huber.delta" in full.stdout


def test_the_readme_synopsis_lists_every_command_and_flag():
    import argparse

    from aloss_tune.cli import build_parser

    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Command line", 1)[1].split("```", 2)[1]
    synopsis: dict[str, str] = {}
    command = None
    for line in block.splitlines():
        if line.startswith("aloss-tune "):
            word = line.split()[1]
            command = "" if word.startswith("[") else word  # "": the options before the command
        if command is not None:
            synopsis[command] = synopsis.get(command, "") + " " + line
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(synopsis) == {"", *sub.choices}
    top = {max(a.option_strings, key=len) for a in parser._actions if a.option_strings and a.dest != "help"}
    assert top <= set(synopsis[""].replace("[", " ").replace("]", " ").split())
    for name, command_parser in sub.choices.items():
        flags = {max(a.option_strings, key=len) for a in command_parser._actions
                 if a.option_strings and a.dest != "help"}
        missing = sorted(f for f in flags if f not in synopsis[name].replace("[", " ").replace("]", " ").split())
        assert not missing, f"README synopsis of `{name}` lacks {missing}"


def test_losses_lists_each_parameter_with_the_condition_it_is_sampled_under(capsys):
    assert main(["losses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    q = next(line for line in lines if line.split()[:1] == ["q"] and "only when" in line)
    assert q.endswith("search uniform [0.1, 0.9]  (only when active is gce, ngce)")
    assert any(line.startswith("active_passive  [binary, multiclass]") for line in lines)
    assert main(["losses", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["active_passive"]["params"]["min_prob"]["when"] == {"passive": ["nnce"]}
    assert listed["gce"]["params"]["q"]["when"] is None


def test_validate_lists_each_loss_once_marks_relative_ranges_and_summarises_the_data(tmp_path, capsys,
                                                                                     monkeypatch):
    import numpy as np

    from helpers.user_side import tiny_regression

    monkeypatch.syspath_prepend(str(HERE))
    barron = {"scale": {"type": "float", "low": 1.0, "high": 3.0}}
    path = _write(tmp_path, _space(loss={"choices": ["mse", "huber", "barron"], "params": {"barron": barron}},
                                   search={"sampler": "random", "n_trials": 2}))
    assert main(["validate", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "mse" in line] == ["  losses: mse, huber, barron"]
    shown = {line.split(":")[0].strip(): line for line in lines if line.startswith("  loss.")}
    assert shown["loss.huber.delta"].endswith("(relative)")  # a factory default: in target spreads
    assert not shown["loss.barron.scale"].endswith("(relative)")  # written in the space: absolute
    assert not shown["loss.barron.alpha"].endswith("(relative)")

    assert main(["validate", path, "--data"]) == 0
    lines = capsys.readouterr().out.splitlines()
    x, y, xv, yv = tiny_regression()
    spread = 1.4826 * np.median(np.abs(y - np.median(y)))
    assert f"  data: {len(x)} train, {len(xv)} validation rows of 4 features; regression, target median " \
           f"{np.median(y):.4g}, robust spread {spread:.4g}" in lines
    assert not any(line.endswith("(relative)") for line in lines)


def test_validate_summarises_classification_data(tmp_path, capsys, monkeypatch):
    import numpy as np

    from aloss_tune.datasets import as_dataset
    from helpers.user_side import tiny_multiclass

    monkeypatch.syspath_prepend(str(HERE))
    path = _write(tmp_path, {"study": "c", "data": "imbalanced_classification", "loss": ["bce", "focal"],
                             "model": {"builder": "mlp", "params": {"units": 4, "layers": 1}}})
    assert main(["validate", path, "--data"]) == 0
    data = as_dataset("imbalanced_classification")
    rates = f"{100 * np.mean(data.y_train):.1f} % train, {100 * np.mean(data.y_val):.1f} % validation"
    assert f"  data: {len(data.x_train)} train, {len(data.x_val)} validation, {len(data.x_test)} test rows of " \
           f"{data.x_train.shape[1]} features; binary, positives {rates}" in capsys.readouterr().out.splitlines()
    path = _write(tmp_path, {"study": "m", "data": "helpers.user_side:tiny_multiclass", "loss": ["cce"],
                             "model": {"builder": "mlp", "params": {"units": 4, "layers": 1}}})
    assert main(["validate", path, "--data"]) == 0
    x, y, xv, _ = tiny_multiclass()
    assert f"  data: {len(x)} train, {len(xv)} validation rows of 4 features; multiclass, {y.shape[1]} classes" \
        in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("command", ["validate", "tune"])
def test_independent_errors_of_a_space_are_reported_together_one_a_line(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = _space(trainig={"epochs": 2}, search={"sampler": "nope"},
                 loss={"choices": ["huber"], "params": {"huber": {"delta": {"type": "float", "low": 2.0,
                                                                             "high": 1.0}}}},
                 model={"builder": "mlp", "params": {"units": 0}})
    path = _write(tmp_path, raw)
    assert main([command, path]) == 2
    lines = capsys.readouterr().err.splitlines()
    expected = [r"trainig: unknown key; allowed keys: study, ",
                r"model\.params\.units: must be an integer >= 1, but got 0\.",
                r"loss\.params\.huber\.delta\.low: `low <= high` must hold",
                r"search\.sampler: must be one of tpe, random, cmaes, grid, but got 'nope'\."]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert __import__("re").match(rf"aloss-tune: error: {__import__('re').escape(path)}: {pattern}", line), line
    assert {p.name for p in tmp_path.iterdir()} == {"space.yaml"}


MLP_CHECK = """
import json
model = {call}
model.fit(data.x_train, data.y_train, epochs=1, verbose=0)
mlp = aloss_tune.export(model)  # the MLP itself (the penalised loss attached it)
print(json.dumps({{"units": [mlp.get_layer(f"dense_{{i}}").units for i in range(model_params["model.layers"])],
                  "activation": mlp.get_layer("dense_0").get_config()["activation"], "attached": model is not mlp,
                  "loss": model.loss.get_config(), "optimizer": type(model.optimizer).__name__,
                  "learning_rate": float(model.optimizer.learning_rate)}}))
"""


def test_the_python_snippet_aligns_its_literals_and_rebuilds_the_built_in_mlp(tmp_path):
    import optuna

    from aloss_tune.backends.optuna import best_summary
    from aloss_tune.best import python_snippet

    params = {"loss": "dynamic_alpha", "loss.alpha_formula": "outlier_damping", "loss.strength": 1.2345678,
              "loss.temperature": 0.123456789, "loss.l2": 1e-4, "model.units": 12, "model.layers": 2,
              "model.dropout": 0.125, "model.activation": "tanh", "optimizer.learning_rate": 0.00123456789,
              "optimizer.weight_decay": 0.0001234567}
    # What `aloss-tune best` gives the snippet: the study's space says which builder and data it used.
    study = optuna.create_study()
    study.set_user_attr("aloss_tune.space", {"model": {"builder": "mlp", "params": {}},
                                             "data": "helpers.user_side:tiny_regression",
                                             "optimizer": {"name": "adamw"}})
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"aloss_tune.params": params}))
    summary = best_summary(study)
    code = python_snippet(summary["params"], optimizer=summary["optimizer"], model=summary["model"],
                          data=summary["data"])
    lines = code.splitlines()
    for prefix in ("loss = aloss_tune.build_loss({", "optimizer = keras.optimizers.get({"):  # both wrap
        start = next(i for i, line in enumerate(lines) if line.startswith(prefix))
        assert lines[start + 1].startswith(" " * len(prefix) + "'"), (prefix, lines[start + 1])  # under the first key
        assert not lines[start + 1].startswith(" " * (len(prefix) + 1)), lines[start + 1]
    assert lines[-1] == "# model = build_best_model(aloss_tune.datasets.as_dataset('helpers.user_side:tiny_regression'))"

    call = lines[-1].removeprefix("# model = ")
    check = code + "\ndata = " + call.removeprefix("build_best_model(")[:-1] + "\n" + MLP_CHECK.format(call=call)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["units"] == [12, 12] and out["activation"] == "tanh" and out["attached"]
    import aloss_tune

    expected = aloss_tune.build_loss({k: v for k, v in params.items() if k.startswith("loss")}).get_config()
    assert out["loss"] == json.loads(json.dumps(expected))
    assert out["optimizer"] == "AdamW" and out["learning_rate"] == pytest.approx(0.00123456789)
