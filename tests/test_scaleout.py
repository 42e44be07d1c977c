"""Scale-out on real engines: workers sharing a PostgreSQL study and an MLflow tracking server; lost workers.

The PostgreSQL and MLflow tests need the services `.ci/services.sh` starts (``ALOSS_TUNE_TEST_POSTGRES_URL``,
``ALOSS_TUNE_TEST_MLFLOW_URI``) and skip without them; the SQLite test at the end runs everywhere. Each study
gets a unique name, so the tests share the two servers without seeing each other's runs. Everything is read
back through the engines' own clients (`optuna.load_study`, `MlflowClient`).

    source .ci/services.sh && start_services && .venv/bin/pytest tests/test_scaleout.py -q; stop_services
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna
import pytest
from helpers.processes import cli_env, run_cli, start_cli, study_counts, wait_for
from helpers.spaces import write_space
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from aloss_tune.cli import main
from aloss_tune.tracking import StudyTracker, TrackingSettings

HERE = Path(__file__).resolve().parent
POSTGRES = os.environ.get("ALOSS_TUNE_TEST_POSTGRES_URL")
MLFLOW = os.environ.get("ALOSS_TUNE_TEST_MLFLOW_URI")
PASSWORD = (urlsplit(POSTGRES).password or "") if POSTGRES else ""

_SKIP_WITHOUT_SERVICES = pytest.mark.skipif(
    not (POSTGRES and MLFLOW),
    reason="needs ALOSS_TUNE_TEST_POSTGRES_URL and ALOSS_TUNE_TEST_MLFLOW_URI (see .ci/services.sh)",
)
COMPLETE, RUNNING, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                           optuna.trial.TrialState.FAIL)
RUN_ATTR = "aloss_tune.mlflow_run_id"


# ------------------------------------------------------------------------------------------------ helpers
def on_services(test: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a test that runs against the PostgreSQL and MLflow servers (skipped without them)."""
    for mark in (pytest.mark.postgres, pytest.mark.mlflow_server, pytest.mark.slow, _SKIP_WITHOUT_SERVICES):
        test = mark(test)
    return test


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def trials_of(study: str, url: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, or ``[]`` while it does not exist yet."""
    url = url or POSTGRES
    storage = _STORAGES.get(url) or _STORAGES.setdefault(url, optuna.storages.RDBStorage(url))
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    except KeyError:
        return []


def running_mid_training(study: str, before_epoch: int = 8) -> optuna.trial.FrozenTrial | None:
    """A running trial with its MLflow run and at least one epoch reported, once another one has completed.

    Only a trial that has reported fewer than ``before_epoch`` epochs (of the spaces' 20): one near its end
    could finish between this look and the kill that follows it."""
    trials = trials_of(study)
    if not any(t.state == COMPLETE for t in trials):
        return None
    for trial in trials:
        if (trial.state == RUNNING and trial.user_attrs.get(RUN_ATTR) and trial.intermediate_values
                and max(trial.intermediate_values) < before_epoch):
            return trial
    return None


def mlflow_runs(uri: str, study: str, view: int = ViewType.ACTIVE_ONLY) -> tuple[MlflowClient, list, list]:
    """``(client, parents, children)`` of the study's experiment."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], run_view_type=view, max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def assert_no_password(*texts: str) -> None:
    assert PASSWORD, "the test role must have a password"
    for text in texts:
        assert PASSWORD not in text


class MlflowServer:
    """A private ``mlflow server`` (its own process group) that a test may kill and start again."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = Path(sys.executable).parent / "mlflow"
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - kept open by the server process
        self.proc = subprocess.Popen(
            [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        log.close()

        def healthy() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    return True
            except OSError:
                return False

        wait_for(healthy, timeout=120, what="the MLflow server", every=0.5)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ------------------------------------------------------------------------------------------------ tests
@on_services
@pytest.mark.parametrize("workers", [3])
def test_worker_processes_share_one_study(tmp_path, workers):
    study = unique("share")
    space = write_space(tmp_path, study)
    out = run_cli("tune", space, "--workers", str(workers), "--n-trials", "12", "--storage", POSTGRES,
              "--tracking-uri", MLFLOW, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = study_counts(out.stdout, study)
    assert (counts["finished"], counts["pruned"], counts["failed"]) == (12, 0, 0)
    assert_no_password(out.stdout, out.stderr)

    trials = trials_of(study)
    assert sorted(t.number for t in trials) == list(range(12))
    assert all(t.state == COMPLETE for t in trials)
    assert len({t.user_attrs["aloss_tune.worker"] for t in trials}) == workers
    # Each worker draws from its own random stream: no params proposed twice (the first round, one trial per
    # loss at its start values, is queued once, whichever worker starts first).
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 12
    first = [t for t in trials if t.system_attrs.get("fixed_params")]
    assert sorted(t.params["loss"] for t in first) == ["huber", "mse"]  # the two losses' first round, once
    assert len({t.params["optimizer.learning_rate"] for t in trials}) == 11  # the round shares the middle rate

    client, parents, children = mlflow_runs(MLFLOW, study)
    assert len(parents) == 1, "workers starting together keep one parent run"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["storage"] == POSTGRES.replace(PASSWORD, "***")
    assert len(children) == 12
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.info.run_name.split()[0] for r in children) == sorted(f"trial-{i}" for i in range(12))
    assert {r.info.run_id for r in children} == {t.user_attrs[RUN_ATTR] for t in trials}
    assert all(r.info.status == "FINISHED" for r in children)

    # No password anywhere: runs (the duplicate parents deleted in the race included), artifacts, study.
    _, every_parent, every_child = mlflow_runs(MLFLOW, study, ViewType.ALL)
    assert_no_password(*(str(r.data.params) + str(r.data.tags) for r in every_parent + every_child))
    folder = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path / "artifacts")))
    texts = [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix != ".png"]
    assert texts
    assert_no_password(*texts)
    study_attrs = optuna.load_study(study_name=study, storage=_STORAGES[POSTGRES]).user_attrs
    assert_no_password(str([t.user_attrs for t in trials]), str(study_attrs))


@on_services
def test_a_worker_killed_mid_trial_then_the_study_resumed(tmp_path):
    study = unique("kill")
    space = write_space(tmp_path, study, epochs=30)
    stores = ["--storage", POSTGRES, "--tracking-uri", MLFLOW, "--heartbeat", "2"]  # grace: 4 s
    worker = start_cli("tune", space, *stores, "--n-trials", "20", cwd=tmp_path)
    try:
        victim = wait_for(lambda: running_mid_training(study), timeout=120, what="a trial in training")
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.communicate()
    client = MlflowClient(MLFLOW)
    before = {t.number: t for t in trials_of(study) if t.state.is_finished()}
    assert before and all(t.state == COMPLETE for t in before.values())
    assert trials_of(study)[victim.number].state == RUNNING  # nobody has noticed yet
    victim_run = victim.user_attrs[RUN_ATTR]
    assert client.get_run(victim_run).info.status == "RUNNING"

    time.sleep(5)  # past the grace period
    out = run_cli("tune", space, *stores, "--retries", "1", "--n-trials", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"trial {victim.number}: worker lost (no heartbeat); queued for retry 1 of 1" in out.stderr
    assert_no_password(out.stdout, out.stderr)

    trials = trials_of(study)
    assert len({t.number for t in trials}) == len(trials) == len(before) + 2  # + the lost trial and its retry
    for number, old in before.items():  # finished trials are untouched
        assert (trials[number].state, trials[number].value) == (COMPLETE, old.value)
    assert trials[victim.number].state == FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == COMPLETE
    assert retries[0].params == victim.params
    assert all(t.state == COMPLETE for t in trials if t.number != victim.number)

    _, parents, children = mlflow_runs(MLFLOW, study)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(trials)
    assert not [r.info.run_name for r in children if r.info.status == "RUNNING"]
    lost = client.get_run(victim_run)
    assert lost.info.status == "FAILED"
    assert lost.data.tags["aloss_tune.state"] == "failed"
    assert "worker lost (no heartbeat)" in lost.data.tags["aloss_tune.error"]
    assert "aloss_tune.reconciled" in lost.data.tags
    assert "error.txt" in [a.path for a in client.list_artifacts(victim_run)]
    retry_run = client.get_run(retries[0].user_attrs[RUN_ATTR])
    assert retry_run.data.tags["aloss_tune.retry_of"] == str(victim.number)
    assert retry_run.info.status == "FINISHED"


@on_services
def test_a_live_worker_fails_and_retries_the_trial_of_a_dead_one(tmp_path):
    study = unique("live")
    space = write_space(tmp_path, study, epochs=20)
    command = start_cli("tune", space, "--workers", "2", "--n-trials", "8", "--storage", POSTGRES,
                        "--tracking-uri", MLFLOW, "--heartbeat", "2", "--retries", "1", cwd=tmp_path)
    try:
        victim = wait_for(lambda: running_mid_training(study), timeout=120, what="a trial in training")
        os.kill(int(victim.user_attrs["aloss_tune.worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        stdout, stderr = command.communicate(timeout=240)
    finally:
        command.kill()
        command.communicate()
    assert command.returncode == 0, stderr[-3000:]
    assert "ended by signal SIGKILL" in stderr
    assert f"trial {victim.number}: worker lost (no heartbeat); queued for retry 1 of 1" in stderr

    trials = trials_of(study)
    assert trials[victim.number].state == FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state == COMPLETE
    assert [t.number for t in trials if t.state == FAIL] == [victim.number]
    client, parents, children = mlflow_runs(MLFLOW, study)
    assert len(parents) == 1
    assert len(children) == len(trials)
    assert client.get_run(victim.user_attrs[RUN_ATTR]).info.status == "FAILED"
    assert not [r.info.run_name for r in children if r.info.status == "RUNNING"]


@on_services
def test_tracking_server_lost_mid_study(tmp_path):
    study = unique("lost")
    epochs = 20
    space = write_space(tmp_path, study, epochs=epochs)
    server = MlflowServer(tmp_path / "private-mlflow")
    server.start()
    try:
        stores = ["--storage", POSTGRES, "--tracking-uri", server.uri]
        worker = start_cli("tune", space, *stores, "--n-trials", "2", cwd=tmp_path)
        try:
            victim = wait_for(lambda: running_mid_training(study), timeout=120, what="a trial in training")
            server.stop(signal.SIGKILL)
            stdout, stderr = worker.communicate(timeout=240)
        finally:
            worker.kill()
            worker.communicate()
        # Training went on; one warning; every trial is in the Optuna storage.
        assert worker.returncode == 0, stderr[-3000:]
        assert stderr.count("MLflow tracking at") == 1 and "training goes on without tracking" in stderr
        assert "Retrying" not in stderr
        trials = trials_of(study)
        assert [t.state for t in trials] == [COMPLETE] * 2

        # What the server stored before it went away is intact.
        server.start()
        client, parents, children = mlflow_runs(server.uri, study)
        assert len(parents) == 1
        done = [t for t in trials if t.number < victim.number]
        for trial in done:
            run = client.get_run(trial.user_attrs[RUN_ATTR])
            assert run.info.status == "FINISHED"
            assert run.data.metrics["objective"] == pytest.approx(trial.value)
            history = client.get_metric_history(run.info.run_id, "val_mae")
            assert [m.step for m in history] == list(range(epochs))
            assert "loss_config.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
        lost_run = victim.user_attrs[RUN_ATTR]
        assert client.get_run(lost_run).info.status == "RUNNING"
        assert client.get_metric_history(lost_run, "val_mae")  # its first epochs were stored

        # The next run on the study ends the run its trial's worker could not end, as Optuna recorded it.
        out = run_cli("tune", space, *stores, "--n-trials", "1", cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        ended = client.get_run(lost_run)
        assert ended.info.status == "FINISHED"
        assert ended.data.metrics["objective"] == pytest.approx(trials[victim.number].value)
        assert "aloss_tune.reconciled" in ended.data.tags
        _, parents, children = mlflow_runs(server.uri, study)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert not [r.info.run_name for r in children if r.info.status == "RUNNING"]
    finally:
        server.stop()


def fresh_database() -> str:
    """The test server's PostgreSQL URL on a new, empty schema: to Optuna as good as a fresh database (its
    tables and their types are created in the first schema of the search path)."""
    import sqlalchemy

    schema = f"fresh_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(POSTGRES, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return f"{POSTGRES}?options=-csearch_path%3D{schema}"


@on_services
def test_workers_opening_a_fresh_database_together_create_its_tables_once():
    """Six connections at one instant on an empty database, three times: every one opens the storage."""
    from aloss_tune.backends.optuna import StorageOptions, open_storage

    for _ in range(3):
        url = fresh_database()
        start = threading.Barrier(6)

        def open_together(_: int, url: str = url, start: threading.Barrier = start) -> str:
            start.wait()
            return type(open_storage(StorageOptions(url=url))).__name__

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(open_together, range(6))) == ["RDBStorage"] * 6


_TUNE_AT = """
import sys, time
import optuna
from aloss_tune.cli import main

start = float(sys.argv[1])
create = optuna.storages.RDBStorage.__init__


def create_at_start(self, *args, **kwargs):  # every process opens the storage at the same instant
    time.sleep(max(0.0, start - time.time()))
    create(self, *args, **kwargs)


optuna.storages.RDBStorage.__init__ = create_at_start
sys.exit(main(sys.argv[2:]))
"""


@on_services
def test_commands_started_together_on_a_fresh_database(tmp_path):
    """Four `aloss-tune tune` commands on an empty database, each opening the storage at one instant: all of
    them run their trial, and both stores hold exactly those trials."""
    study = unique("fresh")
    space = write_space(tmp_path, study, epochs=1)
    url = fresh_database()
    start = time.time() + 40  # every process has checked its inputs by then
    argv = ["tune", space, "--storage", url, "--tracking-uri", MLFLOW, "--n-trials", "1", "--quiet"]
    procs = [subprocess.Popen([sys.executable, "-c", _TUNE_AT, str(start), *argv], cwd=tmp_path, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=400) for p in procs]
    for proc, (_, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    trials = trials_of(study, url)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == COMPLETE for t in trials)
    _, parents, children = mlflow_runs(MLFLOW, study)
    assert len(parents) == 1 and len(children) == 4
    assert {r.info.run_id for r in children} == {t.user_attrs[RUN_ATTR] for t in trials}
    assert all(r.info.status == "FINISHED" for r in children)


@on_services
def test_workers_opening_a_study_together_keep_one_parent():
    study = unique("race")
    settings = TrackingSettings(tracking_uri=MLFLOW)
    start = threading.Barrier(4)

    def open_parent(_: int) -> str:
        tracker = StudyTracker(settings, study, backend="optuna")
        start.wait()
        return tracker.open()

    with ThreadPoolExecutor(4) as pool:
        chosen = set(pool.map(open_parent, range(4)))
    _, parents, _ = mlflow_runs(MLFLOW, study)
    assert len(chosen) == 1
    assert [p.info.run_id for p in parents] == list(chosen)


def _bad_password(url: str) -> str:
    return url.replace(f":{PASSWORD}@", ":wrong-pw@")


UNREACHABLE = [
    ("storage: wrong password", lambda: ["--storage", _bad_password(POSTGRES), "--tracking-uri", MLFLOW],
     r"cannot open the Optuna storage postgresql\+psycopg2://aloss:\*\*\*@127\.0\.0\.1:\d+/optuna: "
     r".*password"),
    ("storage: no such database",
     lambda: ["--storage", POSTGRES.rsplit("/", 1)[0] + "/nope", "--tracking-uri", MLFLOW],
     r"cannot open the Optuna storage .*aloss:\*\*\*@.*nope"),
    ("tracking: not a tracking server", lambda: ["--storage", POSTGRES, "--tracking-uri",
                                                 "http://127.0.0.1:" + str(urlsplit(POSTGRES).port)],
     r"cannot reach the MLflow tracking server http://127\.0\.0\.1:\d+"),
    ("tracking: nothing listening", lambda: ["--storage", POSTGRES, "--tracking-uri", "http://u:pw@127.0.0.1:9"],
     r"cannot reach the MLflow tracking server http://u:\*\*\*@127\.0\.0\.1:9"),
]


@on_services
@pytest.mark.parametrize("case, stores, message", UNREACHABLE, ids=[u[0] for u in UNREACHABLE])
@pytest.mark.parametrize("workers", ["1", "3"])
def test_unreachable_engines_stop_before_training(case, stores, message, workers, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(HERE))
    study = unique("unreachable")
    code = main(["tune", write_space(tmp_path, study), "--workers", workers, *stores()])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("aloss-tune: error: ") and err.count("\n") == 1, err
    assert __import__("re").search(message, err), err
    assert_no_password(err)
    assert "wrong-pw" not in err
    assert trials_of(study) == []


@pytest.mark.slow
def test_worker_processes_on_sqlite(tmp_path, monkeypatch, capfd):
    """Without any server: two local worker processes share a SQLite study and a SQLite tracking store."""
    from aloss_tune.workers import run_workers

    monkeypatch.chdir(tmp_path)
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tmp_path, "local")
    result = run_workers(space, 2, n_trials=2, storage=storage, tracking_uri=tracking)
    assert result.counts["complete"] + result.counts["dead"] == 2 and result.counts["failed"] == 0
    trials = trials_of("local", storage)
    assert sorted(t.number for t in trials) == [0, 1]
    assert len({t.user_attrs["aloss_tune.worker"] for t in trials}) == 2
    assert result.best_value == min(t.value for t in trials)
    # Each worker wrote the line of each trial it finished as it finished it, as one process does.
    lines = sorted(line for line in capfd.readouterr().err.splitlines() if line.startswith("trial "))
    assert len(lines) == 2
    baseline = optuna.load_study(study_name="local", storage=storage).user_attrs["aloss_tune.baseline"]
    for line, trial in zip(lines, sorted(trials, key=lambda t: t.number), strict=True):
        state = "complete" if trial.value < baseline else "dead"  # dead: no better than the median predictor
        assert line.startswith(f"trial {trial.number} {state:<8}  loss={trial.user_attrs['aloss_tune.params']['loss']}"
                               f"  val_mae={trial.value:.6g}  best="), line
    _, parents, children = mlflow_runs(tracking, "local")
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    assert sorted(r.info.run_name.split()[0] for r in children) == ["trial-0", "trial-1"]
    assert all(r.info.status == "FINISHED" for r in children)


@pytest.mark.slow
def test_a_preempted_worker_ends_its_trial_and_run(tmp_path):
    """SIGTERM (preemption) stops a worker as Ctrl-C does: its trial fails and its run ends at once."""
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tmp_path, "preempted", epochs=30)
    worker = start_cli("tune", space, "--storage", storage, "--tracking-uri", tracking, "--n-trials", "5",
                       cwd=tmp_path)
    try:
        def in_training() -> optuna.trial.FrozenTrial | None:
            trials = trials_of("preempted", storage)
            running = [t for t in trials if t.state == RUNNING and t.intermediate_values]
            return running[0] if running and any(t.state == COMPLETE for t in trials) else None

        victim = wait_for(in_training, timeout=120, what="a trial in training")
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
        worker.communicate()
    assert worker.returncode == 130, stderr[-3000:]
    assert "aloss-tune: interrupted" in stderr
    trials = trials_of("preempted", storage)
    assert trials[victim.number].state == FAIL
    assert all(t.state == COMPLETE for t in trials if t.number != victim.number)
    client, parents, children = mlflow_runs(tracking, "preempted")
    assert parents[0].info.status == "KILLED"
    run = client.get_run(victim.user_attrs[RUN_ATTR])
    assert run.info.status == "FAILED" and run.data.tags["aloss_tune.state"] == "failed"
    assert not [r.info.run_name for r in children if r.info.status == "RUNNING"]


def test_workers_that_failed_every_trial(caplog):
    """The command fails when no worker finished a trial; a worker that failed all of its own is a warning."""
    from types import SimpleNamespace

    from aloss_tune.errors import StudyFailed
    from aloss_tune.workers import _check_outcome

    procs = [SimpleNamespace(pid=100 + i, exitcode=0) for i in range(2)]
    message = "all 2 trials of this run failed; the most common error (every one): ValueError: x"
    failed = [{"index": i, "ok": False, "kind": "StudyFailed", "message": message} for i in range(2)]
    with pytest.raises(StudyFailed) as info:
        _check_outcome(procs, dict(enumerate(failed)))
    assert str(info.value) == message
    _check_outcome(procs, {0: {"index": 0, "ok": True}, 1: failed[1]})
    assert f"worker 1: {message}" in caplog.text
