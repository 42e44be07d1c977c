"""The names aloss-tune writes into the stores it shares with other tools, and its default settings.

Optuna trial and study attributes, MLflow tags and artifact names are read back by other workers, by
``aloss-tune best`` and ``report``, and by people in the MLflow UI: each is spelled once, here. This module
imports nothing, so every layer can use it.
"""

from __future__ import annotations

import os

# --------------------------------------------------------------------------------------------- defaults
ENV_STORAGE = "ALOSS_TUNE_STORAGE"
DEFAULT_STORAGE = "sqlite:///aloss_tune.db"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_KT_DIRECTORY = "kt_projects"


def default_storage() -> str:
    """The Optuna storage URL: ``$ALOSS_TUNE_STORAGE``, else the embedded SQLite file."""
    return os.environ.get(ENV_STORAGE, DEFAULT_STORAGE)


# ------------------------------------------------------------------------------ Optuna trial attributes
PARAMS_ATTR = "aloss_tune.params"  # the trial's flat params dict
CONFIG_ATTR = "aloss_tune.loss_config"  # {"params", "keras"}: the loss, rebuildable
HISTORY_ATTR = "aloss_tune.history"  # per-epoch metrics
ERROR_ATTR = "aloss_tune.error"  # last line of a failed trial's error
RUN_ATTR = "aloss_tune.mlflow_run_id"
SEED_ATTR = "aloss_tune.seed"
WORKER_ATTR = "aloss_tune.worker"
HEARTBEAT_ATTR = "aloss_tune.heartbeat"  # whether the trial's worker sent heartbeats
DEAD_ATTR = "aloss_tune.stopped_dead"  # {"epochs", "best", "baseline"}: stopped early as not learning

# ------------------------------------------------------------------------------ Optuna study attributes
SPACE_ATTR = "aloss_tune.space"  # SearchSpace.to_dict()
OBJECTIVE_ATTR = "aloss_tune.objective"  # {"metric", "direction"}
TARGET_SCALE_ATTR = "aloss_tune.target_scale"
BASELINE_ATTR = "aloss_tune.baseline"  # the objective of a predictor that ignores its inputs
STUDY_ID_ATTR = "aloss_tune.study_id"  # a random id given when the study is created: what identifies it

# ---------------------------------------------------------------------------------------- MLflow tags
STUDY_TAG = "aloss_tune.study"
STUDY_ID_TAG = "aloss_tune.study_id"  # on the parent run: the study's id (Optuna attribute, KerasTuner project)
BACKEND_TAG = "aloss_tune.backend"
STATE_TAG = "aloss_tune.state"  # a trial: complete | dead | pruned | failed; the study: its counts
LOSS_TAG = "aloss_tune.loss"  # a trial: its loss; the study: the best trial's loss
TRIAL_TAG = "aloss_tune.trial"
WORKER_TAG = "aloss_tune.worker"
RETRY_TAG = "aloss_tune.retry_of"
RECONCILED_TAG = "aloss_tune.reconciled"
CONTINUES_TAG = "aloss_tune.continues"  # a Hyperband trial continuing an earlier trial's run
ERROR_TAG = "aloss_tune.error"
BEST_TRIAL_TAG = "aloss_tune.best_trial"
BEST_LOSS_TAG = "aloss_tune.best_loss"
BEST_MODEL_TAG = "aloss_tune.best_model"  # models:/<model_id> of the best trial's logged model
BEST_MODEL_TRIAL_TAG = "aloss_tune.best_model_trial"
REGISTERED_MODEL_TAG = "aloss_tune.registered_model"  # <name>/<version> in the Model Registry
OBJECTIVE_TAG = "aloss_tune.objective"  # the best model's objective value

# ----------------------------------------------------------------------------------- MLflow artifacts
LOSS_CONFIG_ARTIFACT = "loss_config.json"
BEST_LOSS_CONFIG_ARTIFACT = "best_loss_config.json"
BEST_PARAMS_ARTIFACT = "best_params.json"
SPACE_ARTIFACT = "space.yaml"
ERROR_ARTIFACT = "error.txt"
BEST_MODEL_NAME = "best_model"  # the MLflow LoggedModel of a study's best trial
