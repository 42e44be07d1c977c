"""CI runs the loss tests on every backend the README names: its test command is the README's, exactly."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _readme_test_command() -> str:
    quick_start = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Quick start\n", 1)[1]
    block = quick_start.split("```bash\n", 1)[1].split("```", 1)[0]
    (line,) = [line for line in block.splitlines() if ".venv/bin/pytest" in line]
    return line


def _ci_test_command() -> str:
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    (line,) = [line for line in script.splitlines() if line.startswith(".venv/bin/pytest")]
    return line


def test_ci_runs_the_readme_test_command_with_the_loss_tests_on_every_backend():
    command = _ci_test_command()
    assert command == _readme_test_command()
    runs = command.split(" && ")
    assert runs[0] == ".venv/bin/pytest -q -n 2"  # everything, on TensorFlow (Keras's default backend here)
    for backend in ("jax", "torch"):
        assert f"KERAS_BACKEND={backend} .venv/bin/pytest -q -n 2 tests/losses" in runs[1:], backend


def test_torch_is_pinned_in_the_dev_extra():
    # An exact version, which pip takes from the CI machine's disk (the CPU build); a range would let it download
    # a CUDA build of several GB.
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dev = project["optional-dependencies"]["dev"]
    torch = [d for d in dev if re.match(r"torch\b", d)]
    assert len(torch) == 1 and re.fullmatch(r"torch==\d+(\.\d+)+", torch[0]), torch
