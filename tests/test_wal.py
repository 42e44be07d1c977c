"""SQLite stores in WAL mode while written, back to SQLite's default journal at rest; the pruner asked only where
it may prune; MLflow's experiment checked before a study without importing MLflow."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from aloss_tune.backends.pruning import FamilyMedianPruner, asks_at

WRITE = """
import json, sys
from aloss_tune.backends.optuna import StorageOptions, open_storage
storage = open_storage(StorageOptions(url=sys.argv[1]))
with storage.engine.connect() as connection:
    mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    sync = connection.exec_driver_sql("PRAGMA synchronous").scalar()
print(json.dumps({"mode": mode, "synchronous": sync}))
"""


def pragmas_and_files(folder: Path, url: str) -> tuple[dict, str, list[str]]:
    done = subprocess.run([sys.executable, "-c", WRITE, url], capture_output=True, text=True, timeout=300,
                          cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(folder / "optuna.db") as db:
        at_rest = db.execute("PRAGMA journal_mode").fetchone()[0]
    return json.loads(done.stdout.splitlines()[-1]), at_rest, sorted(p.name for p in folder.iterdir())


def test_a_storage_is_written_in_wal_mode_and_left_as_an_ordinary_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    while_open, at_rest, files = pragmas_and_files(tmp_path, url)
    assert while_open == {"mode": "wal", "synchronous": 1}  # 1: NORMAL (the default is 2: FULL)
    assert at_rest == "delete" and files == ["optuna.db"]  # no -wal, -shm or lock file left


def test_a_store_another_process_holds_open_stays_in_wal_mode_until_that_one_is_done(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    pragmas_and_files(tmp_path, url)
    reader = sqlite3.connect(tmp_path / "optuna.db")
    try:
        reader.execute("PRAGMA journal_mode=WAL")  # a worker, or a dashboard reading the study, holds it open
        assert reader.execute("SELECT count(*) FROM studies").fetchone() == (0,)
        while_open, at_rest, _ = pragmas_and_files(tmp_path, url)
        assert while_open["mode"] == "wal" and at_rest == "wal"  # not switched under the other process's feet
        assert reader.execute("SELECT count(*) FROM studies").fetchone() == (0,)  # still readable
    finally:
        reader.close()


def test_other_databases_are_left_alone(tmp_path):
    from aloss_tune._sqlite import use_wal

    use_wal(f"sqlite:///{tmp_path / 'mine.db'}")
    other = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'other.db'}")
    with other.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
    other.engine.dispose()


def test_the_pruner_is_asked_only_where_it_may_prune():
    pruner = FamilyMedianPruner(n_warmup_steps=3, interval_steps=2)
    assert [step for step in range(10) if asks_at(pruner, step)] == [3, 5, 7, 9]
    assert [step for step in range(4) if asks_at(FamilyMedianPruner(n_warmup_steps=0), step)] == [0, 1, 2, 3]
    assert not any(asks_at(optuna.pruners.NopPruner(), step) for step in range(5))
    assert all(asks_at(optuna.pruners.HyperbandPruner(), step) for step in range(5))  # its own rungs


CHECK = """
import sys
from aloss_tune.errors import UsageError
from aloss_tune.tracking import TrackingSettings, check_experiment
settings = TrackingSettings(tracking_uri=sys.argv[1])
check_experiment(settings, "alive")
try:
    check_experiment(settings, "gone")
except UsageError as exc:
    print(exc)
print("mlflow" in sys.modules)
"""


def test_the_experiment_is_checked_without_importing_mlflow(tmp_path, mlflow_db_template):
    import shutil

    from mlflow.tracking import MlflowClient

    shutil.copyfile(mlflow_db_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("alive")
    client.delete_experiment(client.create_experiment("gone"))
    done = subprocess.run([sys.executable, "-c", CHECK, uri], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["MLflow experiment 'gone' is deleted; restore it or choose another name.",
                                        "False"]


@pytest.mark.parametrize("epochs", [1, 7])
def test_every_epoch_reaches_mlflow_in_batches(stores, epochs, monkeypatch):
    from mlflow.tracking import MlflowClient

    from aloss_tune import tracking

    calls = []
    monkeypatch.setattr(tracking, "EPOCH_BATCH_S", 3600.0)  # one batch for the first epoch, one at the end
    tracker = tracking.StudyTracker(tracking.TrackingSettings(tracking_uri=stores["tracking_uri"]), "batched",
                                    backend="optuna")
    tracker.start(background=True)
    run = tracker.start_trial(0, {"loss": "mse"}, seed=0)
    original = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", lambda *a, **k: calls.append(k) or original(*a, **k))
    for epoch in range(epochs):
        run.log_epoch(epoch, {"loss": 10.0 - epoch, "val_mae": 5.0 - epoch})
    run.finish("complete", objective=1.0)
    client = MlflowClient(stores["tracking_uri"])
    history = client.get_metric_history(run.run_id, "val_mae")
    assert [(m.step, m.value) for m in history] == [(e, 5.0 - e) for e in range(epochs)]
    metric_calls = [c for c in calls if c.get("metrics")]
    assert len(metric_calls) == min(epochs, 2) + 1  # first epoch, the rest together, the final objective
    tracker.close()
