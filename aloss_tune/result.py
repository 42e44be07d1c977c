"""`TuneResult`: what a study produced, the same shape from every backend and from `--workers N`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aloss_tune._urls import redact_url


@dataclass
class TuneResult:
    """What a study produced on this worker (the best trial is over the whole study)."""

    study_name: str
    backend: str
    best_params: dict[str, Any]
    best_value: float | None
    best_trial: int | None
    best_loss_config: dict[str, Any] | None
    objective: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)
    storage: str | None = None
    parent_run_id: str | None = None
    experiment_id: str | None = None  # the MLflow experiment holding the study's runs
    tracking_uri: str | None = None
    study: Any = None  # the optuna.Study or the KerasTuner tuner
    best_model_uri: str | None = None  # models:/<model_id> of the best trial's model (log_model=True)
    registered_model: str | None = None  # <name>/<version> in the Model Registry (register=...)

    @property
    def best_loss(self) -> Any:
        """The best trial's loss (a `keras.losses.Loss`), rebuilt from its config."""
        from aloss_tune.factories import loss_from_config

        if self.best_loss_config:
            return loss_from_config(self.best_loss_config)
        return loss_from_config(self.best_params)


def make_result(*, study_name: str, backend: str, best: Mapping[str, Any] | None, objective: Mapping[str, str],
                counts: Mapping[str, int], storage: str | None, tracker: Any = None,
                tracking_uri: str | None = None, parent_run_id: str | None = None,
                experiment_id: str | None = None, study: Any = None) -> TuneResult:
    """The one way a `TuneResult` is made: ``best`` is a backend's best-trial summary (``{number, value,
    params, loss_config}`` or ``None``); URLs are stored with their passwords redacted; the run ids come from
    ``tracker`` when one is given."""
    best = best or {}
    logged = None
    if tracker is not None:
        parent_run_id = getattr(tracker, "parent_run_id", None)
        experiment_id = getattr(tracker, "experiment_id", None)
        logged = getattr(tracker, "best_model", None)
    return TuneResult(
        study_name=study_name, backend=backend, best_params=dict(best.get("params") or {}),
        best_value=best.get("value"), best_trial=best.get("number"), best_loss_config=best.get("loss_config"),
        objective={"metric": objective["metric"], "direction": objective["direction"]}, counts=dict(counts),
        storage=None if storage is None else redact_url(storage), parent_run_id=parent_run_id,
        experiment_id=experiment_id, tracking_uri=None if tracking_uri is None else redact_url(tracking_uri),
        study=study, best_model_uri=getattr(logged, "uri", None),
        registered_model=getattr(logged, "registered", None),
    )
