"""The examples run as written, from a clean folder: the study, then the reuse of its best loss."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, cwd: Path, *args: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_own_model_then_reuse_best_loss(tmp_path):
    for script in ("own_model.py", "reuse_best_loss.py"):
        shutil.copy(EXAMPLES / script, tmp_path)
    tuned = run("own_model.py", tmp_path, "--quick")
    assert re.search(r"best trial \d+: val_mae = \d+\.\d{4}", tuned)
    assert (tmp_path / "examples.db").exists() and (tmp_path / "mlflow.db").exists()
    best_config = re.search(r"best loss:\s+(\{.*\})", tuned).group(1)

    reused = run("reuse_best_loss.py", tmp_path)
    assert re.search(r"best loss:\s+(\{.*\})", reused).group(1) == best_config  # the same loss, exactly
    before, after = re.search(r"before saving (\S+), after reloading (\S+)", reused).groups()
    assert before == after


@pytest.mark.slow
def test_label_noise_example_reuses_the_best_loss_on_its_own_model(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, str(EXAMPLES / "label_noise.py"), "--quick"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import optuna

    study = optuna.load_study(study_name="label_noise", storage=f"sqlite:///{tmp_path / 'aloss_tune.db'}")
    best_config = study.best_trial.user_attrs["aloss_tune.loss_config"]["keras"]["config"]
    printed = re.search(r"best loss: (\{.*\})", out.stdout).group(1)
    assert printed == str({k: v for k, v in best_config.items()})  # the study's best loss, exactly
    assert re.search(r"clean-test accuracy of the CNN: best loss 0\.\d{3}, cross-entropy 0\.\d{3}", out.stdout)
    assert "predictions identical" in out.stdout
