"""The KerasTuner backend: the space as a HyperModel, and studies run end to end through the CLI.

The end-to-end tests run the real ``aloss-tune`` entry point in subprocesses on tiny budgets (2-3 epochs,
2-4 trials of a small MLP) and read the results back from a real MLflow SQLite store with `MlflowClient`,
from the KerasTuner project directory, and through ``aloss-tune best``. All studies share one MLflow store
(created once, so that the distributed processes never race to create its tables).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import pytest
import yaml
from helpers.processes import study_counts
from mlflow.tracking import MlflowClient

import aloss_tune
from aloss_tune.backends import keras_tuner as kt_backend
from aloss_tune.distributions import Categorical, Float
from aloss_tune.errors import StudyFailed, UsageError
from aloss_tune.runner import prepare
from aloss_tune.space import SearchSpace

HERE = Path(__file__).parent
REPORT_FIGURES = ("optimization_history.png", "objective_by_loss.png", "param_importances.png",
                  "parallel_coordinates.png", "loss_shape.png")
ALOSS_TUNE = str(Path(sys.executable).with_name("aloss-tune"))

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning",  # KerasTuner's Bayesian oracle (scikit-learn GP)
)


def base_space(study: str, **changes: Any) -> dict[str, Any]:
    """A tiny regression study: 2 epochs of a small MLP on the built-in contaminated data."""
    space: dict[str, Any] = {
        "study": study,
        "data": "contaminated_regression",
        "model": {
            "builder": "kt_test_models:counting_mlp",
            "params": {"units": {"type": "int", "low": 4, "high": 16, "log": True}},
        },
        "optimizer": {"name": "adam",
                      "learning_rate": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
        "objective": {"metric": "val_mae", "direction": "minimize"},
        "training": {"epochs": 2, "batch_size": 64},
        "loss": {"choices": ["mse", "huber"],
                 "penalty": {"l2": {"type": "float", "low": 1.0e-6, "high": 1.0e-3, "log": True}}},
        "search": {"tuner": "random", "n_trials": 3, "seed": 1},
    }
    for key, value in changes.items():
        space[key] = {**space[key], **value} if isinstance(value, dict) and key != "loss" else value
    return space


# ------------------------------------------------------------------------------------------- fixtures
class Store:
    """One MLflow store and KerasTuner project root for the module's studies, and a CLI runner."""

    def __init__(self, root: Path, mlflow_db: Path):
        self.root = root
        shutil.copyfile(mlflow_db, root / "mlflow.db")  # tables made before any worker starts
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.projects = root / "kt"
        self.client = MlflowClient(self.uri)

    def write_space(self, space: dict[str, Any]) -> Path:
        path = self.root / f"{space['study']}.yaml"
        path.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KERASTUNER_", "ALOSS_TEST_", "MLFLOW_TRACKING_URI"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        env.update(extra)
        return env

    def tune_args(self, space: Path, *extra: str) -> list[str]:
        return [ALOSS_TUNE, "tune", str(space), "--backend", "keras-tuner", "--tracking-uri", self.uri,
                "--directory", str(self.projects), "--quiet", *extra]

    def run(self, args: list[str], *, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, env=self.env(**env), cwd=self.root,
                              timeout=timeout)

    def runs(self, study: str) -> tuple[Any, list[Any]]:
        """The study's parent run and its child runs, oldest first."""
        experiment = self.client.get_experiment_by_name(study)
        assert experiment is not None, f"no MLflow experiment {study!r}"
        runs = self.client.search_runs([experiment.experiment_id], max_results=1000,
                                       order_by=["attributes.start_time ASC"])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1, [r.info.run_name for r in parents]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        assert len(children) == len(runs) - 1
        return parents[0], children

    def history(self, run: Any, metric: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run.info.run_id, metric)]

    def artifact(self, run: Any, name: str) -> str:
        folder = self.root / "downloads" / run.info.run_id
        local = self.client.download_artifacts(run.info.run_id, name, str(folder))
        return Path(local).read_text(encoding="utf-8")


def trial_key(run: Any) -> str:
    """``trial-<n>`` of a trial's run (its name also says the loss: ``trial-<n> <loss>``)."""
    return f"trial-{run.data.tags['aloss_tune.trial']}"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


def logged_params(run: Any) -> set[str]:
    return set(run.data.params) - {"seed", "backend"}


def expected_keys(space: dict[str, Any], loss: str) -> set[str]:
    spec = SearchSpace.from_dict(space)
    keys = {"loss", *(f"loss.{k}" for k in spec.loss_space(loss)), *(f"loss.{k}" for k in spec.penalty)}
    keys |= {f"model.{k}" for k in spec.model_params}
    return keys | {f"optimizer.{k}" for k in spec.optimizer_params}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Store:
    return Store(tmp_path_factory.mktemp("kt_store"), mlflow_db_template)


@pytest.fixture(scope="module")
def random_study(store: Store) -> dict[str, Any]:
    """A random search of 3 trials, interrupted (Ctrl-C) while building its third trial's model, then resumed.

    Each run first builds one model to check the space (build 1 of the first run, build 5 of the second).
    """
    space = base_space("kt_random")
    path = store.write_space(space)
    builds = store.root / "kt_random.builds"
    first = store.run(store.tune_args(path), ALOSS_TEST_BUILDS=str(builds), ALOSS_TEST_INTERRUPT_AT="4")
    project = store.projects / "kt_random"
    records_after_first = {p.parent.name: p.read_text() for p in project.glob("trial_*/aloss_tune.json")}
    builds_after_first = builds.read_text().splitlines()
    second = store.run(store.tune_args(path), ALOSS_TEST_BUILDS=str(builds))
    return {"space": space, "path": path, "first": first, "second": second, "project": project,
            "records_after_first": records_after_first, "builds_after_first": builds_after_first,
            "builds": builds.read_text().splitlines()}


# --------------------------------------------------------------------------------- the space as hp
def test_declared_space_is_conditional_with_log_sampling_and_no_step() -> None:
    space = SearchSpace.from_dict(base_space(
        "declare", model={"params": {"units": {"type": "int", "low": 4, "high": 16, "log": True},
                                     "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1}}}))
    hp = kt.HyperParameters()
    kt_backend.SpaceHyperModel(space, target_scale=2.0).declare_hyperparameters(hp)
    declared = {p.name: p for p in hp.space}
    assert set(declared) == set(space.search_params(target_scale=2.0))
    assert declared["loss"].values == ["mse", "huber"]
    delta = declared["loss.huber.delta"]
    assert [(c.name, c.values) for c in delta.conditions] == [("loss", ["huber"])]
    assert delta.sampling == "log" and delta.step is None
    assert delta.min_value == space.loss_space("huber", 2.0)["delta"].low  # relative range, scaled
    for name in ("loss.l2", "optimizer.learning_rate", "model.units"):
        assert declared[name].sampling == "log" and declared[name].step is None, name
        assert not declared[name].conditions
    assert declared["model.dropout"].values == [0.0, 0.1, 0.2, 0.3]  # Optuna's grid, top value included


def test_params_of_a_trial_have_only_the_chosen_losses_keys() -> None:
    space = SearchSpace.from_dict(base_space("params"))
    model = kt_backend.SpaceHyperModel(space)
    hp = kt.HyperParameters()
    model.declare_hyperparameters(hp)
    for loss in ("mse", "huber"):
        values = hp.copy()
        values.values = {"loss": loss}
        values.ensure_active_values()  # what the oracle does: values only for active parameters
        params = model.params(values)
        assert set(params) == expected_keys(base_space("params"), loss)
        assert ("loss.huber.delta" in values.values) == (loss == "huber")


def test_a_single_loss_needs_no_choice_and_no_scope() -> None:
    space = SearchSpace.from_dict(base_space("single", loss={"choices": ["huber"]}))
    hp = kt.HyperParameters()
    kt_backend.SpaceHyperModel(space).declare_hyperparameters(hp)
    names = {p.name: p for p in hp.space}
    assert "loss" not in names and not names["loss.huber.delta"].conditions
    assert kt_backend.SpaceHyperModel(space).params(hp)["loss"] == "huber"


def test_categoricals_kerastuner_cannot_hold_round_trip_as_labels() -> None:
    dist = Categorical([True, False, None, 1, "a"])
    labels = kt_backend.choice_labels(dist)
    assert labels == ["true", "false", "null", "1", '"a"']
    hp = kt.HyperParameters()
    suggester = kt_backend.KerasTunerSuggester(hp)
    for label, value in zip(labels, dist.choices):
        hp.values["x"] = label
        got = suggester.suggest("x", dist)
        assert got == value and type(got) is type(value)
    assert kt_backend.choice_labels(Categorical(["relu", "tanh"])) == ["relu", "tanh"]
    assert kt_backend.float_grid(Float(0.0, 0.3, step=0.1)) == [0.0, 0.1, 0.2, 0.3]


def test_a_project_resumes_only_with_the_same_tuner_and_ranges(tmp_path: Path) -> None:
    space = SearchSpace.from_dict(base_space("resume_check", model={"builder": "mlp"}))
    ctx = prepare(space)
    kt_backend.make_tuner(space, ctx, directory=tmp_path)
    kt_backend.make_tuner(space, ctx, directory=tmp_path)  # same space: resumes
    with pytest.raises(UsageError, match="another tuner"):
        kt_backend.make_tuner(space.with_overrides(tuner="hyperband"), ctx, directory=tmp_path)
    other = SearchSpace.from_dict(base_space("resume_check", model={"builder": "mlp"},
                                             loss={"choices": ["mse", "mae"]}))
    with pytest.raises(UsageError, match=r"another loss list \(\[\"mse\", \"huber\"\]\)"):
        kt_backend.make_tuner(other, prepare(other), directory=tmp_path)
    one = SearchSpace.from_dict(base_space("resume_check", model={"builder": "mlp"}, loss={"choices": ["mse"]}))
    kt_backend.make_tuner(one, prepare(one), directory=tmp_path / "single")
    mae = SearchSpace.from_dict(base_space("resume_check", model={"builder": "mlp"}, loss={"choices": ["mae"]}))
    with pytest.raises(UsageError, match="another loss list"):  # no range tells mse from mae: the list does
        kt_backend.make_tuner(mae, prepare(mae), directory=tmp_path / "single")
    rmse = SearchSpace.from_dict(base_space("resume_check", model={"builder": "mlp"},
                                            objective={"metric": "val_rmse"}))
    with pytest.raises(UsageError, match="another objective"):
        kt_backend.make_tuner(rmse, prepare(rmse), directory=tmp_path)


def test_distributed_echo_filter_drops_only_bare_loss_names() -> None:
    out = io.StringIO()
    sink = kt_backend._DropLines(out, {"huber", "mse"})
    sink.write("huber\nmse\nbest: huber\n")
    sink.write("hub")
    sink.write("er\npartial")
    sink.write_pending()
    assert out.getvalue() == "best: huber\npartial"


def test_python_api_averages_executions_and_keras_tuner_reloads_the_best_model(
        tmp_path: Path, stores: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    space = base_space("kt_api", model={"builder": "mlp"}, training={"epochs": 1},
                       loss={"choices": ["adaptive_barron"]},
                       search={"n_trials": 1, "executions_per_trial": 2})
    uri = stores["tracking_uri"]
    result = aloss_tune.tune(space, backend="keras-tuner", tracking_uri=uri, directory=tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    assert lines == [f"trial 0 complete  loss=adaptive_barron  val_mae={result.best_value:.6g}  "
                     f"best={result.best_value:.6g} (trial 0)"]  # no terminal: one line per trial
    assert result.backend == "keras-tuner" and result.counts == {"complete": 1, "dead": 0, "pruned": 0, "failed": 0}
    assert result.best_params["loss"] == "adaptive_barron"
    assert isinstance(result.best_loss, keras.losses.Loss)

    record = json.loads((tmp_path / "kt_api" / "trial_0" / "aloss_tune.json").read_text())
    first, second = record["execution_values"]
    assert first != second and result.best_value == pytest.approx((first + second) / 2)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("kt_api").experiment_id],
                                filter_string="tags.`aloss_tune.trial` = '0'")
    assert run.data.metrics["objective"] == pytest.approx(result.best_value)
    assert run.data.metrics["val_mae"] == pytest.approx(first)  # the first execution under plain names
    assert run.data.metrics["execution_1/val_mae"] == pytest.approx(second)

    tuner = result.study
    model = tuner.get_best_models(1)[0]  # rebuilt by the HyperModel, best-epoch weights restored
    assert aloss_tune.learned_values(model).keys() == {"alpha", "scale"}
    best_hp = tuner.get_best_hyperparameters(1)[0].values
    assert best_hp["loss.adaptive_barron.scale_init"] == result.best_params["loss.scale_init"]
    assert best_hp["optimizer.learning_rate"] == result.best_params["optimizer.learning_rate"]


class BrokenBuilder:
    """A user's model builder with a bug that the model built before training does not hit: every trial fails.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params: dict[str, Any], data: Any) -> keras.Model:
        self.calls += 1
        if self.calls == 1:  # the check before training
            from aloss_tune.models import mlp

            return mlp(params, data)
        raise RuntimeError("deliberate failure in the model builder")


def test_a_worker_stops_after_five_failed_trials_in_a_row(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    space = base_space("kt_failing", training={"epochs": 1}, search={"n_trials": 8})
    with pytest.raises(StudyFailed) as info:
        aloss_tune.tune(space, backend="keras-tuner", build_model=BrokenBuilder(), tracking=False,
                        directory=tmp_path)
    assert str(info.value) == ("all 5 trials of this run failed; the most common error (every one): "
                               "RuntimeError: deliberate failure in the model builder")
    assert "5 trials failed in a row" in caplog.text
    assert len(list((tmp_path / "kt_failing").glob("trial_*/trial.json"))) == 5
    record = json.loads((tmp_path / "kt_failing" / "trial_4" / "aloss_tune.json").read_text())
    assert record["state"] == "failed"
    assert record["error"] == "RuntimeError: deliberate failure in the model builder"
    with pytest.raises(UsageError, match="no finished trial"):
        kt_backend.best_summary("kt_failing", directory=tmp_path)


def test_a_trial_that_is_not_learning_is_stopped_and_scored_as_a_bad_trial(
        tmp_path: Path, stores: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # KerasTuner has no pruned state its oracles learn from: the stopped trial is COMPLETED with its best value
    # so far as its score (no better than the baseline), recorded as dead, and never the study's best.
    space = base_space("kt_dead", data="helpers.user_side:tiny_regression",
                       model={"builder": "helpers.user_side:stuck_or_mlp", "params": {"mode": "stuck"}},
                       optimizer={"name": "adam", "learning_rate": 0.05}, loss={"choices": ["mse"]},
                       training={"epochs": 6, "stop_dead": 2}, search={"n_trials": 1})
    result = aloss_tune.tune(space, backend="keras-tuner", tracking_uri=stores["tracking_uri"], directory=tmp_path)
    assert result.counts == {"complete": 0, "dead": 1, "pruned": 0, "failed": 0} and result.best_trial is None
    record = json.loads((tmp_path / "kt_dead" / "trial_0" / "aloss_tune.json").read_text())
    assert record["state"] == "dead" and record["stopped_dead"]["epochs"] == 2
    assert len(record["history"]["val_mae"]) == 2 and record["value"] == min(record["history"]["val_mae"])
    assert record["value"] > record["stopped_dead"]["baseline"]
    (trial,) = result.study.oracle.trials.values()
    assert trial.status == "COMPLETED" and trial.score == pytest.approx(record["value"])
    client = MlflowClient(stores["tracking_uri"])
    run = client.get_run(record["mlflow_run_id"])
    assert (run.info.status, run.data.tags["aloss_tune.state"]) == ("KILLED", "dead")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    assert lines == [f"trial 0 dead      loss=mse  val_mae={record['value']:.6g}"]
    with pytest.raises(UsageError, match="no finished trial"):
        kt_backend.best_summary("kt_dead", directory=tmp_path)


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_random_search_logs_parent_children_params_histories_and_statuses(
        store: Store, random_study: dict[str, Any]) -> None:
    assert random_study["first"].returncode == 130, random_study["first"].stderr[-3000:]
    out = ok(random_study["second"])
    # 2 epochs on the contaminated data: a trial may end no better than the median predictor (dead).
    counts = study_counts(out, "kt_random")
    assert (counts["finished"], counts["pruned"], counts["failed"]) == (3, 0, 0)
    assert f"aloss-tune best kt_random --backend keras-tuner --directory {store.projects}" in out
    parent, children = store.runs("kt_random")
    assert parent.info.status == "FINISHED" and parent.data.tags["aloss_tune.backend"] == "keras-tuner"
    assert parent.data.tags["aloss_tune.best_trial"] in {"0", "1", "2"}
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(trial_key(c) for c in finished) == ["trial-0", "trial-1", "trial-2"]
    for child in finished:
        loss = child.data.params["loss"]
        assert child.info.run_name == f"{trial_key(child)} {loss}"
        assert child.data.tags["aloss_tune.state"] in ("complete", "dead")
        assert logged_params(child) == expected_keys(random_study["space"], loss)
        assert child.data.params["backend"] == "keras-tuner"
        assert child.data.params["seed"] == str(1 + int(child.data.tags["aloss_tune.trial"]))
        assert [step for step, _ in store.history(child, "val_mae")] == [0, 1]
        assert [step for step, _ in store.history(child, "loss")] == [0, 1]
        best_epoch = min(v for _, v in store.history(child, "val_mae"))
        assert best_epoch == pytest.approx(child.data.metrics["objective"])
        config = json.loads(store.artifact(child, "loss_config.json"))
        assert config["params"]["loss"] == loss and config["keras"]["class_name"]
    # The same report as an Optuna study's on the parent run: figures, trials table, summary.
    names = {a.path for a in store.client.list_artifacts(parent.info.run_id)}
    assert {*REPORT_FIGURES, "trials.csv", "summary.md", "summary.html"} <= names
    rows = list(csv.DictReader(io.StringIO(store.artifact(parent, "trials.csv"))))
    assert sorted(r["number"] for r in rows) == ["0", "1", "2"]
    by_number = {int(trial_key(c).split("-")[1]): c for c in finished}
    for row in rows:
        run = by_number[int(row["number"])]
        assert row["mlflow_run_id"] == run.info.run_id and row["loss"] == run.data.params["loss"]
        assert row["state"] == run.data.tags["aloss_tune.state"]  # counted alike in the table and in MLflow
        assert float(row["val_mae"]) == pytest.approx(run.data.metrics["objective"])
    assert "Study `kt_random`" in store.artifact(parent, "summary.md")


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_redoing_finished_trials(store: Store,
                                                                       random_study: dict[str, Any]) -> None:
    # Build 4 (trial 2) was interrupted; the resumed search built its check model and that trial's only.
    assert len(random_study["builds_after_first"]) == 4
    assert len(random_study["builds"]) == 6
    project = random_study["project"]
    for name, text in random_study["records_after_first"].items():
        if name != "trial_2":
            assert (project / name / "aloss_tune.json").read_text() == text  # finished trials untouched
    _, children = store.runs("kt_random")
    by_name: dict[str, list[Any]] = {}
    for child in children:
        by_name.setdefault(trial_key(child), []).append(child)
    assert {k: len(v) for k, v in by_name.items()} == {"trial-0": 1, "trial-1": 1, "trial-2": 2}
    interrupted, retried = by_name["trial-2"]
    assert interrupted.info.status == "FAILED" and retried.info.status == "FINISHED"
    assert store.artifact(interrupted, "error.txt").startswith("interrupted")
    assert interrupted.data.params == retried.data.params  # the same trial, retried
    assert retried.data.tags["aloss_tune.retry_of"] == "2"
    assert "aloss_tune.retry_of" not in interrupted.data.tags
    statuses = {json.loads(p.read_text())["status"] for p in project.glob("trial_*/trial.json")}
    assert statuses == {"COMPLETED"}


def cli_main(*args: str) -> str:
    """The CLI's own entry function, in this process (saves a subprocess start where one is not the point)."""
    from aloss_tune.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    assert code == 0, out.getvalue()
    return out.getvalue()


@pytest.mark.slow
def test_a_second_process_on_a_project_being_searched_is_refused(store: Store,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from aloss_tune.cli import main

    monkeypatch.syspath_prepend(str(HERE))
    path = store.write_space(base_space("kt_locked", training={"epochs": 10}, search={"n_trials": 3}))
    project = store.projects / "kt_locked"
    first = subprocess.Popen(store.tune_args(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=store.env(), cwd=store.root)
    try:
        deadline = time.monotonic() + 240
        while not list(project.glob("trial_*/aloss_tune.json")) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.2)
        assert main(["tune", str(path), "--backend", "keras-tuner", "--tracking-uri", store.uri, "--directory",
                     str(store.projects), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == (f"aloss-tune: error: KerasTuner project {project} is being searched by process "
                       f"{socket.gethostname()}:{first.pid}; a project takes one search at a time: wait for it, "
                       "use another study name or --directory, or share the search with KerasTuner's chief/worker "
                       "mode (examples/distributed_keras_tuner.md).\n")
        stdout, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, stderr[-3000:]
    parent, children = store.runs("kt_locked")  # the refused process logged nothing
    assert sorted(trial_key(c) for c in children) == ["trial-0", "trial-1", "trial-2"]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert sorted(p.parent.name for p in project.glob("trial_*/trial.json")) == ["trial_0", "trial_1", "trial_2"]


@pytest.mark.slow
def test_same_yaml_on_optuna_logs_the_same_params_keys(store: Store, random_study: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))  # the space's builder is kt_test_models:counting_mlp
    cli_main("tune", str(random_study["path"]), "--backend", "optuna", "--study", "kt_random_optuna",
             "--n-trials", "2", "--quiet", "--storage", f"sqlite:///{store.root / 'optuna.db'}",
             "--tracking-uri", store.uri)
    _, optuna_children = store.runs("kt_random_optuna")
    _, kt_children = store.runs("kt_random")
    keys: dict[str, dict[str, set[str]]] = {"optuna": {}, "keras-tuner": {}}
    for child in [*optuna_children, *kt_children]:
        loss = child.data.params["loss"]
        assert logged_params(child) == expected_keys(random_study["space"], loss)
        keys[child.data.params["backend"]].setdefault(loss, set()).update(child.data.params)
    for loss in set(keys["optuna"]) & set(keys["keras-tuner"]):
        assert keys["optuna"][loss] == keys["keras-tuner"][loss]
    assert {c.info.status for c in optuna_children} == {"FINISHED"}


@pytest.mark.slow
def test_bayesian_failed_trial_is_visible_and_the_best_loss_reloads_exactly(store: Store) -> None:
    space = base_space("kt_bayes", loss={"choices": ["adaptive_barron"]},
                       search={"tuner": "bayesian", "n_trials": 3, "seed": 0})
    path = store.write_space(space)
    out = ok(store.run(store.tune_args(path), ALOSS_TEST_BUILDS=str(store.root / "bayes.builds"),
                       ALOSS_TEST_NAN_AT="3"))  # trial 1 (build 1 is the check before training)
    counts = study_counts(out, "kt_bayes")
    assert (counts["finished"], counts["pruned"], counts["failed"]) == (2, 0, 1)

    parent, children = store.runs("kt_bayes")
    states = {trial_key(c): (c.info.status, c.data.tags["aloss_tune.state"]) for c in children}
    assert states["trial-1"] == ("FAILED", "failed")
    assert {states["trial-0"], states["trial-2"]} <= {("FINISHED", "complete"), ("FINISHED", "dead")}
    failed = next(c for c in children if c.info.status == "FAILED")
    # A failed trial keeps its loss config: its loss rebuilds from its run.
    assert json.loads(store.artifact(failed, "loss_config.json"))["params"]["loss"] == "adaptive_barron"
    rebuilt = aloss_tune.load_loss(f"runs:/{failed.info.run_id}", tracking_uri=store.uri)
    assert type(rebuilt).__name__ == type(aloss_tune.build_loss({"loss": "adaptive_barron"})).__name__
    assert "the training loss is nan at epoch 0" in store.artifact(failed, "error.txt")
    assert "TrialFailed" in failed.data.tags["aloss_tune.error"]
    assert logged_params(failed) == expected_keys(space, "adaptive_barron")  # logged before it failed
    assert [step for step, _ in store.history(failed, "loss")] == [0]
    for child in children:
        if child.info.status == "FINISHED":
            for learned in ("alpha", "scale"):  # the adaptive loss's learned parameters, per epoch
                assert [step for step, _ in store.history(child, learned)] == [0, 1]

    best_number = int(parent.data.tags["aloss_tune.best_trial"])
    best_run = next(c for c in children if trial_key(c) == f"trial-{best_number}")
    logged_config = json.loads(store.artifact(best_run, "loss_config.json"))
    shown = json.loads(cli_main("best", "kt_bayes", "--backend", "keras-tuner",
                                "--directory", str(store.projects)))
    assert shown["keras"] == logged_config["keras"] and shown["params"] == logged_config["params"]
    assert shown["trial"] == best_number
    assert shown["value"] == pytest.approx(parent.data.metrics["best_objective"])

    loss = aloss_tune.load_best_loss("kt_bayes", backend="keras-tuner", directory=str(store.projects))
    assert keras.saving.serialize_keras_object(loss) == logged_config["keras"]
    from_mlflow = kt_backend.best_summary("kt_bayes", directory=store.root / "elsewhere",
                                          tracking_uri=store.uri)
    from_directory = kt_backend.best_summary("kt_bayes", directory=store.projects)
    assert from_mlflow["number"] == from_directory["number"] == shown["trial"]
    assert from_mlflow["params"] == from_directory["params"]
    assert from_mlflow["loss_config"] == from_directory["loss_config"] == logged_config


@pytest.mark.slow
def test_hyperband_continues_its_best_trials_from_their_checkpoints(store: Store) -> None:
    # max_epochs 3, factor 3: three 1-epoch trials, then the best continues for epochs 1-2.
    space = base_space("kt_hyperband", model={"builder": "mlp"}, training={"epochs": 3},
                       search={"tuner": "hyperband", "n_trials": 4, "seed": 0})
    out = ok(store.run(store.tune_args(store.write_space(space))))
    counts = study_counts(out, "kt_hyperband")
    assert (counts["finished"], counts["pruned"], counts["failed"]) == (4, 0, 0)
    parent, children = store.runs("kt_hyperband")
    runs = {trial_key(c): c for c in children}
    assert sorted(runs) == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert {c.info.status for c in children} == {"FINISHED"}  # no pruning in Hyperband
    for name in ("trial-0", "trial-1", "trial-2"):
        assert [s for s, _ in store.history(runs[name], "val_mae")] == [0]
    assert [s for s, _ in store.history(runs["trial-3"], "val_mae")] == [1, 2]
    record = json.loads((store.projects / "kt_hyperband" / "trial_3" / "aloss_tune.json").read_text())
    source = record["schedule"]["continues"]
    assert record["schedule"] == {"epochs": 3, "initial_epoch": 1, "continues": source}
    assert runs["trial-3"].data.params == {**runs[f"trial-{int(source)}"].data.params,
                                            "seed": runs["trial-3"].data.params["seed"]}
    best_first_round = min(runs[n].data.metrics["objective"] for n in ("trial-0", "trial-1", "trial-2"))
    assert runs[f"trial-{int(source)}"].data.metrics["objective"] == best_first_round
    # The continuation is linked to the run it continues.
    assert runs["trial-3"].data.tags["aloss_tune.continues"] == runs[f"trial-{int(source)}"].info.run_id
    assert all("aloss_tune.continues" not in runs[n].data.tags for n in ("trial-0", "trial-1", "trial-2"))

    # `aloss-tune report` reads the KerasTuner project; the Optuna storage points to it.
    out = store.root / "kt_hyperband_report"
    done = ok(store.run([ALOSS_TUNE, "report", "kt_hyperband", "--backend", "keras-tuner", "--directory",
                         str(store.projects), "--out", str(out)]))
    assert str(out / "summary.md") in done
    rows = list(csv.DictReader(io.StringIO((out / "trials.csv").read_text(encoding="utf-8"))))
    assert [(r["number"], r["state"], r["mlflow_run_id"]) for r in rows] == [
        (str(n), runs[f"trial-{n}"].data.tags["aloss_tune.state"], runs[f"trial-{n}"].info.run_id)
        for n in range(4)]
    assert {*REPORT_FIGURES, "summary.md"} <= {p.name for p in out.iterdir()}
    assert (store.artifact(parent, "trials.csv").splitlines()[1:]
            == (out / "trials.csv").read_text(encoding="utf-8").splitlines()[1:])
    missed = store.run([ALOSS_TUNE, "report", "kt_hyperband", "--storage",
                        f"sqlite:///{store.root / 'empty_optuna.db'}", "--directory", str(store.projects)])
    assert missed.returncode == 2
    assert missed.stderr.strip() == (
        f"aloss-tune: error: study 'kt_hyperband' is a KerasTuner project in {store.projects}: "
        f"add --backend keras-tuner --directory {store.projects}.")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_distributed_chief_and_worker_on_one_machine(store: Store) -> None:
    space = base_space("kt_dist", model={"builder": "mlp"}, search={"tuner": "random", "n_trials": 2})
    args = store.tune_args(store.write_space(space))
    distributed = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(_free_port())}
    chief = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=store.root,
                             env=store.env(KERASTUNER_TUNER_ID="chief", **distributed))
    try:
        worker = store.run(args, timeout=300, KERASTUNER_TUNER_ID="tuner0", **distributed)
        chief_out, chief_err = chief.communicate(timeout=120)
    finally:
        if chief.poll() is None:
            chief.kill()
            chief.communicate()
    assert chief.returncode == 0, chief_err[-3000:]
    worker_out = ok(worker)
    for text in (chief_out, worker_out):  # the study's trials; the trials this worker ran
        counts = study_counts(text, "kt_dist")
        assert (counts["finished"], counts["pruned"], counts["failed"]) == (2, 0, 0)
    for text in (chief_out, worker_out):  # KerasTuner's stray print of condition values is filtered
        assert not {"mse", "huber"} & set(text.splitlines())
    parent, children = store.runs("kt_dist")
    assert sorted((trial_key(c), c.info.status) for c in children) == [
        ("trial-0", "FINISHED"), ("trial-1", "FINISHED")]
    assert parent.data.tags["aloss_tune.best_trial"] in {"0", "1"}  # logged by the chief
    project = store.projects / "kt_dist"
    assert (project / "chief.json").exists() and (project / "tuner0.json").exists()
    best = kt_backend.best_summary("kt_dist", directory=store.projects)
    assert best["number"] == int(parent.data.tags["aloss_tune.best_trial"])


def test_alpha_formula_constants_are_declared_in_nested_scopes() -> None:
    space = SearchSpace.from_dict(base_space("formulas", loss={"choices": ["mse", "dynamic_alpha"]}))
    model = kt_backend.SpaceHyperModel(space)
    hp = kt.HyperParameters()
    model.declare_hyperparameters(hp)
    declared = {p.name: [(c.name, c.values) for c in p.conditions] for p in hp.space}
    assert declared["loss.dynamic_alpha.temperature"] == [
        ("loss", ["dynamic_alpha"]), ("loss.dynamic_alpha.alpha_formula", ["sigmoid_snr"])]
    assert declared["loss.dynamic_alpha.strength"] == [
        ("loss", ["dynamic_alpha"]), ("loss.dynamic_alpha.alpha_formula", ["outlier_damping"])]
    values = hp.copy()
    values.values = {"loss": "dynamic_alpha", "loss.dynamic_alpha.alpha_formula": "outlier_damping"}
    values.ensure_active_values()
    params = model.params(values)
    assert {k for k in params if k.startswith("loss")} == {"loss", "loss.alpha_formula", "loss.strength"}


def test_keras_tuner_starts_with_the_first_round(tmp_path):
    space = SearchSpace.from_dict({
        "study": "kt-first", "data": "contaminated_regression",
        "model": {"params": {"units": {"type": "int", "low": 4, "high": 16, "log": True}}},
        "optimizer": {"name": "adam", "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        "objective": {"metric": "val_mae", "direction": "minimize"},
        "training": {"epochs": 1, "batch_size": 128},
        "loss": ["mse", "barron"],
        "search": {"backend": "keras-tuner", "tuner": "bayesian", "n_trials": 3, "seed": 2},
    })
    result = aloss_tune.tune(space, directory=tmp_path, tracking=False, progress=False)
    hypermodel = result.study.hypermodel
    trials = [result.study.oracle.trials[t] for t in sorted(result.study.oracle.trials)]
    scale = prepare(space).target_scale
    params = [hypermodel.params(t.hyperparameters) for t in trials]
    expected = [{k.replace("loss.barron.", "loss."): v for k, v in r.items()}
                for r in space.first_round(scale)]
    assert params[:2] == expected
    assert len(params) == 3


def test_a_sub_loss_constant_is_declared_once_for_all_the_sub_losses_using_it() -> None:
    # KerasTuner keeps one value per name: a `q` declared twice (under active == gce and under active == ngce)
    # would lose its value whenever one of the two scopes is inactive.
    space = SearchSpace.from_dict(base_space(
        "sub_losses", data="imbalanced_classification", objective={"metric": "val_auc", "direction": "maximize"},
        loss={"choices": ["bce", "active_passive"], "params": {"active_passive": {
            "active": {"type": "categorical", "choices": ["nce", "gce", "ngce", "nfocal"]},
            "log_clip": {"type": "float", "low": -9.0, "high": -2.0}}}}))
    model = kt_backend.SpaceHyperModel(space)
    hp = kt.HyperParameters()
    model.declare_hyperparameters(hp)
    declared: dict[str, list[Any]] = {}
    for p in hp.space:
        declared.setdefault(p.name, []).append([(c.name, c.values) for c in p.conditions])
    in_loss = ("loss", ["active_passive"])
    assert declared["loss.active_passive.q"] == [[in_loss, ("loss.active_passive.active", ["gce", "ngce"])]]
    assert declared["loss.active_passive.gamma"] == [[in_loss, ("loss.active_passive.active", ["nfocal"])]]
    assert declared["loss.active_passive.log_clip"] == [[in_loss, ("loss.active_passive.passive", ["rce"])]]
    own = {"loss", "loss.active", "loss.passive", "loss.alpha", "loss.beta"}
    for active, passive, extra in [("ngce", "rce", {"loss.q", "loss.log_clip"}), ("gce", "mae", {"loss.q"}),
                                   ("nfocal", "nnce", {"loss.gamma"}), ("nce", "rce", {"loss.log_clip"})]:
        values = hp.copy()
        values.values = {"loss": "active_passive", "loss.active_passive.active": active,
                         "loss.active_passive.passive": passive}
        values.ensure_active_values()
        params = model.params(values)
        assert {k for k in params if k.startswith("loss")} == own | extra, (active, passive)
        assert (params["loss.active"], params["loss.passive"]) == (active, passive)
