"""The KerasTuner backend: a space becomes a `HyperModel`; a KerasTuner oracle chooses every trial.

The same YAML space runs here and on Optuna, with the same flat params, the same MLflow layout and the same
best-loss import, so switching is one flag (``aloss-tune tune SPACE --backend keras-tuner``).

Search space
    `SpaceHyperModel` declares the space once, through the very `SearchSpace.sample` code the Optuna
    backend runs, with a `KerasTunerSuggester`: the loss choice is a ``Choice`` named ``loss`` and each
    loss's parameters are declared under ``hp.conditional_scope("loss", [name])``, so they exist (and get
    values) only when that loss is chosen. Hyperparameter names are the Optuna backend's qualified names
    (``loss.huber.delta``, ``loss.l2``, ``model.units``); a trial's flat params dict
    (``{"loss": "huber", "loss.delta": 1.2, ...}``) has exactly the keys and meanings Optuna produces.
    Log ranges map to ``sampling="log"`` and never carry a step (KerasTuner reads a step under log sampling
    as a multiplier); linear steps keep Optuna's meaning (``low + k * step``, ``high`` included: a stepped
    float is declared as an ordered ``Choice`` of its grid). Categorical choices that KerasTuner cannot hold
    as such (booleans, ``null``, mixed types) are stored as JSON labels and decoded.

Tuners
    ``search.tuner`` (or ``--tuner``): ``random``, ``bayesian`` or ``hyperband``, all run by one `SpaceTuner`
    over the matching KerasTuner oracle. ``search.n_trials`` is the oracle's ``max_trials``: the project's
    *total*, so rerunning the same command resumes an interrupted search and runs only the missing trials
    (finished trials are never redone; a trial cut short is retried). Hyperband's own schedule may stop
    sooner; its ``max_epochs`` is ``training.epochs`` (factor 3, one iteration), and a trial that continues an
    earlier one starts from that trial's best checkpoint at the bracket's ``initial_epoch``.
    ``search.seed`` seeds the oracle (as ``seed + 1``: KerasTuner reads 0 as "no seed") and each trial's Keras
    run (``seed + trial number``, as on Optuna). ``search.executions_per_trial`` trains each trial that many
    times (execution ``k`` seeded ``seed + number + k * 1_000_003``); the objective is their mean.

Project directory
    ``<directory>/<study>`` (default ``kt_projects/<study>``): KerasTuner's own files (``oracle.json``,
    ``trial_<id>/trial.json``, best-epoch checkpoints) plus ``aloss_tune.json`` (the study: tuner, objective,
    searched ranges) and ``trial_<id>/aloss_tune.json`` (the trial's flat params, seed, loss config, history,
    value, error and MLflow run id). `best_summary` reads them; a project is reopened only with the tuner,
    objective and ranges it was created with.

Tracking
    Identical to the Optuna backend (`aloss_tune.tracking`): a parent run per study found again by tag, a
    ``trial-<n> <loss>`` child run per trial with params logged when it starts (a retried trial gets a new
    run tagged ``aloss_tune.retry_of``; a run its dead worker left RUNNING is ended FAILED; a Hyperband
    trial that continues an earlier one is tagged ``aloss_tune.continues`` with that trial's run id, or its
    trial id when its run is unknown), one batch of metrics per epoch
    (learned ``alpha``/``scale`` included; executions after the first are logged as
    ``execution_<k>/<metric>``), ``loss_config.json``, and its status: complete -> FINISHED,
    failed -> FAILED with ``error.txt``. KerasTuner swallows every exception raised while a trial trains
    and only marks the trial failed; `SpaceTuner.on_trial_end` puts the traceback it kept into MLflow, so a
    failure is visible with its reason. Hyperband never prunes: a trial of an early-stopped bracket has
    completed its budget and is FINISHED. After five failed trials in a row a worker stops, as on Optuna.
    When the search ends, the parent run gets the same report as an Optuna study (figures, ``trials.csv``,
    summary; `aloss_tune.report`), read from the project directory; ``aloss-tune report STUDY --backend
    keras-tuner`` writes it again from there.

Distributed search (KerasTuner's chief/worker mode)
    Start the same command in several processes with ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``
    and ``KERASTUNER_TUNER_ID`` set: ``chief`` serves the oracle over gRPC (it trains nothing and logs the
    study's best to the parent run when every worker is done); every other id is a worker that asks the
    chief for trials and logs them. Give all processes the same ``--directory`` on a shared file system
    (Hyperband continues trials from checkpoints and `best_summary` reads every trial's record there).
    ``search.timeout`` and the five-failures stop apply only outside this mode: the chief waits for every
    worker to ask for a trial it cannot have, so a worker must not leave early. See
    ``examples/distributed_keras_tuner.md``.
"""

from aloss_tune.backends.keras_tuner._common import (
    DEFAULT_DIRECTORY,
    EXECUTION_SEED_STRIDE,
    HYPERBAND_FACTOR,
    MAX_CONSECUTIVE_FAILURES,
    SAME_CONFIG_ERROR_STOP,
    STUDY_FILE,
    TRIAL_FILE,
)
from aloss_tune.backends.keras_tuner._space import (
    MAX_GRID,
    KerasTunerSuggester,
    SpaceHyperModel,
    choice_labels,
    float_grid,
    make_oracle,
)
from aloss_tune.backends.keras_tuner._study import (
    _DropLines as _DropLines,
)
from aloss_tune.backends.keras_tuner._study import (
    best_summary,
    check_directory,
    distributed_role,
    existing_project,
    make_tuner,
    project_dir,
    project_record,
    tune,
)
from aloss_tune.backends.keras_tuner._tuner import SpaceTuner

__all__ = [
    "DEFAULT_DIRECTORY", "EXECUTION_SEED_STRIDE", "HYPERBAND_FACTOR", "MAX_CONSECUTIVE_FAILURES", "MAX_GRID",
    "SAME_CONFIG_ERROR_STOP", "STUDY_FILE", "TRIAL_FILE", "KerasTunerSuggester", "SpaceHyperModel", "SpaceTuner",
    "best_summary", "check_directory", "choice_labels", "distributed_role", "existing_project", "float_grid",
    "make_oracle", "make_tuner", "project_dir", "project_record", "tune",
]
