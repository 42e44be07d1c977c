"""The trial lifecycle both backends share: seed, start the trial's run, train, end the run.

A backend decides *which* trial runs and *when* it is over (Optuna asks its sampler and pruner; KerasTuner
its oracle); what happens to one trial is the same on both and is written here once:

* trial ``n`` of a study seeded ``s`` trains with seed ``s + n`` (`training_seed`);
* a worker stops after `MAX_CONSECUTIVE_FAILURES` failed trials in a row;
* its MLflow run starts before training with the flat params, tagged when it retries or continues an
  earlier trial (`start_run`);
* a configuration error is reported once, located in the space file (`located`);
* an interrupt (Ctrl-C, SIGTERM, SystemExit) never leaves the run RUNNING (`finish_interrupted`);
* a worker whose every trial failed ends with `StudyFailed` naming the most common error (`check_outcomes`).
"""

from __future__ import annotations

import re
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from aloss_tune._schema import CONTINUES_TAG, RETRY_TAG
from aloss_tune.errors import StudyFailed
from aloss_tune.errors import located as _located
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
    return _located(str(exc), f"{space.source}: " if space.source else "")


def finish_interrupted(run: Any) -> None:
    """End ``run`` as failed after an interrupt (Ctrl-C, SIGTERM, SystemExit), with the traceback: an
    interrupted trial never leaves its run RUNNING. Call it from the ``except`` block."""
    if run is not None:
        run.finish("failed", error="interrupted\n" + traceback.format_exc())


def check_outcomes(failures: Sequence[str | None], ran: int) -> None:
    """`StudyFailed` when this worker ran trials and every one failed: a run without a single finished trial has
    no result, and its exit status must say so. ``failures`` holds the error of each failed trial (its last
    line, ``Type: message``); the most common one is named."""
    if ran == 0 or len(failures) < ran:
        return
    errors = Counter(error_line(e) for e in failures)
    error, count = errors.most_common(1)[0]
    if ran == 1:
        raise StudyFailed(f"the only trial of this run failed: {error}")
    share = "every one" if count == ran else f"{count} of them"
    raise StudyFailed(f"all {ran} trials of this run failed; the most common error ({share}): {error}")


def error_line(error: str | None) -> str:
    """``aloss_tune.errors.TrialFailed: ...`` (a traceback's last line) as ``TrialFailed: ...``, one line."""
    text = " ".join((error or "unknown error").split())
    text = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )", "", text)
    return text if len(text) <= 300 else text[:297] + "..."
