"""Running the real ``aloss-tune`` command (and other interpreters) in subprocesses, and waiting on them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent


def cli_env() -> dict[str, str]:
    """The environment of a subprocess: tests/ importable (helpers), quiet TensorFlow, no developer stores."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ALOSS_TUNE_STORAGE", None)
    return env


def exe() -> str:
    """The installed ``aloss-tune`` entry point beside this interpreter."""
    return str(Path(sys.executable).parent / "aloss-tune")


def run_cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``aloss-tune ARGS`` through the real entry point, to the end."""
    return subprocess.run([exe(), *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str, cwd: Path, **popen: Any) -> subprocess.Popen:
    """``aloss-tune ARGS`` started in the background (stdout and stderr piped)."""
    return subprocess.Popen([exe(), *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def study_counts(stdout: str, study: str) -> dict[str, int]:
    """The counts of ``study 'NAME' (optuna): 3 complete, 1 dead, 0 pruned, 2 failed[, 2 running]`` in a
    command's output, plus ``finished``: complete and dead together (the trials that ran all their epochs,
    whether or not they beat the baseline)."""
    found = re.search(rf"study '{re.escape(study)}' \(\w[\w-]*\): (\d+) complete, (\d+) dead, (\d+) pruned, "
                      r"(\d+) failed(?:, (\d+) running)?$", stdout, re.MULTILINE)
    assert found, stdout
    complete, dead, pruned, failed, running = (int(g or 0) for g in found.groups())
    return {"complete": complete, "dead": dead, "pruned": pruned, "failed": failed, "running": running,
            "finished": complete + dead}
