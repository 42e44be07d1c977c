"""Shared fixtures: quiet TensorFlow, temporary stores, tiny spaces."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # tests/helpers/ holds importable user-side builders for module:function paths
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store, made once (migrations take seconds each time)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def stores(tmp_path: Path, mlflow_db_template: Path) -> dict[str, str]:
    """A fresh Optuna storage URL and MLflow tracking URI (a copy of the empty template) in ``tmp_path``."""
    import shutil

    shutil.copyfile(mlflow_db_template, tmp_path / "mlflow.db")
    return {
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }


REPO = HERE.parent


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's MLflow or Optuna settings."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ALOSS_TUNE_STORAGE", raising=False)


@pytest.fixture
def mixed_float16() -> Iterator[None]:
    """Keras's global dtype policy set to ``mixed_float16`` for the test, restored after it."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


@pytest.fixture
def in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run the test in ``tmp_path`` (so default stores like ./mlflow.db land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
