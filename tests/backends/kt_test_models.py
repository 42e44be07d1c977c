"""User-side model builders for the KerasTuner end-to-end tests, addressed as ``kt_test_models:counting_mlp``.

The CLI runs in a subprocess, so the builder is steered through environment variables:

* ``ALOSS_TEST_BUILDS``: a file that gets one line per model built (over every process sharing it), so a
  test can tell how many trials actually trained;
* ``ALOSS_TEST_INTERRUPT_AT``: the build number (1-based) that raises ``KeyboardInterrupt``, as Ctrl-C would;
* ``ALOSS_TEST_NAN_AT``: the build number whose model predicts NaN, so the trial fails inside ``fit``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from aloss_tune.datasets import Dataset
from aloss_tune.models import mlp


def counting_mlp(params: Mapping[str, Any], data: Dataset) -> keras.Model:
    """The built-in MLP, counted, and interrupted or poisoned on the requested build."""
    number = 0
    log = os.environ.get("ALOSS_TEST_BUILDS")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{params.get('loss')}\n")
        number = len(Path(log).read_text(encoding="utf-8").splitlines())
    if str(number) == os.environ.get("ALOSS_TEST_INTERRUPT_AT"):
        raise KeyboardInterrupt
    model = mlp(params, data)
    if str(number) == os.environ.get("ALOSS_TEST_NAN_AT"):
        poisoned = keras.layers.Rescaling(scale=float("nan"), name="poison")(model.output)
        model = keras.Model(model.input, poisoned, name="poisoned_mlp")
    return model
