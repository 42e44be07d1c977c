"""Constants and JSON files shared by the KerasTuner backend's modules."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aloss_tune._schema import DEFAULT_KT_DIRECTORY
from aloss_tune.lifecycle import MAX_CONSECUTIVE_FAILURES, SAME_CONFIG_ERROR_STOP  # noqa: F401 - re-exported

DEFAULT_DIRECTORY = DEFAULT_KT_DIRECTORY
STUDY_FILE = "aloss_tune.json"
STUDY_ID_FILE = "aloss_tune.study_id"  # the study's id, written once (its MLflow parent run is found by it)
LOCK_FILE = "aloss_tune.lock"  # held by the process searching the project
TRIAL_FILE = "aloss_tune.json"
EXECUTION_SEED_STRIDE = 1_000_003
HYPERBAND_FACTOR = 3

_log = logging.getLogger("aloss_tune.keras_tuner")


# ---------------------------------------------------------------------------------------------- helpers
def _summary(number: int, value: Any, params: Mapping[str, Any],
             config: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"number": number, "value": None if value is None else float(value), "params": dict(params),
            "loss_config": None if config is None else dict(config)}


def _write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` atomically (a distributed chief and worker may write the same study file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
