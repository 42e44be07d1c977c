"""The trial lifecycle both backends share: seed, start the trial's run, train, end the run.

A backend decides *which* trial runs and *when* it is over (Optuna asks its sampler and pruner; KerasTuner
its oracle); what happens to one trial is the same on both and is written here once:

* trial ``n`` of a study seeded ``s`` trains with seed ``s + n`` (`training_seed`);
* a worker stops after `MAX_CONSECUTIVE_FAILURES` failed trials in a row;
* its MLflow run starts before training with the flat params, tagged when it retries or continues an
  earlier trial (`start_run`);
* a configuration error is reported once, located in the space file (`located`);
* an interrupt (Ctrl-C, SIGTERM, SystemExit) never leaves the run RUNNING (`finish_interrupted`).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from aloss_tune import runner
from aloss_tune._schema import CONTINUES_TAG, RETRY_TAG
from aloss_tune.space import SearchSpace

MAX_CONSECUTIVE_FAILURES = 5  # a worker stops after this many failed trials in a row
SAME_CONFIG_ERROR_STOP = 3  # ... and after this many, all its trials so far, refused by one ConfigError


def training_seed(study_seed: int, number: int) -> int:
    """The training seed of trial ``number`` (weights, dropout, shuffling)."""
    return study_seed + number


def start_run(tracker: Any, number: int, params: Mapping[str, Any], seed: int, *, retry_of: Any = None,
              continues: str | None = None) -> Any:
    """Start the trial's MLflow run (a `aloss_tune.tracking.TrialRun`), or ``None`` when tracking is off."""
    if tracker is None:
        return None
    tags = {}
    if retry_of is not None:
        tags[RETRY_TAG] = str(retry_of)
    if continues is not None:
        tags[CONTINUES_TAG] = continues
    return tracker.start_trial(number, dict(params), seed=seed, tags=tags or None)


def located(exc: BaseException, space: SearchSpace) -> str:
    """A configuration error's one-line message, prefixed once with the space file it refers to."""
    return runner.located(str(exc), f"{space.source}: " if space.source else "")


def finish_interrupted(run: Any) -> None:
    """End ``run`` as failed after an interrupt (Ctrl-C, SIGTERM, SystemExit), with the traceback: an
    interrupted trial never leaves its run RUNNING. Call it from the ``except`` block."""
    if run is not None:
        run.finish("failed", error="interrupted\n" + traceback.format_exc())
