"""The quality suite (`benchmarks/quality.py`) runs end to end in its quick mode: one seed, one problem of each
kind, every arm, its table, targets, JSON and figure (the figures it reports are measured by the full run)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_mode_runs_one_problem_of_each_kind_against_every_standard_arm(tmp_path):
    out = tmp_path / "quality.json"
    figure = tmp_path / "quality.png"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", "--problems", "diabetes",
         "mnist1d-sym0.6", "imbalanced-2pct", "--trials", "2", "--epochs", "2", "--workdir", str(tmp_path),
         "--json", str(out), "--figure", str(figure)],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    arms = {(r["problem"], r["arm"]) for r in report["results"]}
    assert arms == {("diabetes", "aloss-tune"), ("diabetes", "tuned MSE"), ("diabetes", "tuned Keras Huber"),
                    ("mnist1d-sym0.6", "aloss-tune"), ("mnist1d-sym0.6", "tuned CE"),
                    ("mnist1d-sym0.6", "tuned label-smoothing CE"), ("imbalanced-2pct", "aloss-tune"),
                    ("imbalanced-2pct", "tuned BCE"), ("imbalanced-2pct", "tuned class-weighted BCE")}
    for result in report["results"]:
        assert result["seed"] == 0 and result["trials"] == 2, result
        assert result["complete"] + result["dead"] + result["pruned"] + result["failed"] == 2, result
        assert result["test"] is not None and math.isfinite(result["test"]), result
        assert result["seconds"] > 0
        if result["problem"] == "diabetes":
            assert result["test"] > 0  # a clean-test RMSE
        else:
            assert 0 <= result["test"] <= 1  # an accuracy or a PR-AUC
    # the table and the target checks, one per standard arm, and the wall-time ratios
    checks = report["checks"]
    assert any(c.startswith("diabetes: clean-test RMSE") and "tuned Keras Huber" in c for c in checks)
    assert any(c.startswith("mnist1d-sym0.6: clean-test accuracy") and "tuned label-smoothing CE" in c
               for c in checks)
    assert any(c.startswith("imbalanced-2pct: test PR-AUC") for c in checks)
    assert sum("wall time" in c for c in checks) == 3
    assert "| imbalanced-2pct | tuned class-weighted BCE | test PR-AUC" in done.stdout
    assert figure.stat().st_size > 10_000
