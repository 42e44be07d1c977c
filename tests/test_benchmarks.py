"""``benchmarks/gpu.sh`` runs end to end on a CPU, so that the command written for a GPU machine cannot rot.

One run at 2^20 elements, one timed round (the figures themselves are not checked, only that every row is
measured and every ratio printed is computed from the table it belongs to).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aloss_tune
from aloss_tune.factories import get_factory

ROOT = Path(__file__).resolve().parents[1]
FLOOR = "floor: read 2, write 1"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<ms>[\d.]+) \| (?P<cpu>[\d.]+) \| (?P<floor>[\d.]+) \|")
CHECK = re.compile(
    r"^\| (?P<name>[^|]+?) / (?P<ref>[^|]+?) \| (?P<ratio>[\d.]+) \| (?P<target>[\d.]+) \| (?P<verdict>met|missed) \|"
)


def sections(text: str) -> dict[str, str]:
    """The output of each backend, by backend name."""
    parts = re.split(r"^=== (\w+), 2\^\d+ elements$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.fixture(scope="module")
def output() -> tuple[str, str]:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [bash, str(ROOT / "benchmarks" / "gpu.sh"), "--size", "20", "--repeats", "1"],
        capture_output=True, text=True, env=env, timeout=900, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout, done.stderr


def test_gpu_script_measures_every_loss_on_both_backends_against_the_floor(output):
    stdout, stderr = output
    by_backend = sections(stdout)
    assert set(by_backend) == {"jax", "tensorflow"}
    # Every factory with usable defaults that needs no model (the script says which it skipped, and why).
    factories = [
        name for name in aloss_tune.list_losses()
        if not get_factory(name).adaptive and f"# skipped factory {name}:" not in stderr
    ]
    assert {"huber", "focal", "barron", "bce"} <= set(factories)
    for backend, text in by_backend.items():
        if text.strip().startswith(f"skipped: {backend} cannot be imported"):
            continue
        assert f"backend {backend} (XLA)" in text and "1,048,576 float32 elements (2^20)" in text
        rows = {m["name"]: m for m in map(ROW.match, text.splitlines()) if m}
        floor = float(rows[FLOOR]["ms"])
        names = [f"factory {name}" for name in factories]
        names += [name for name in rows if name.startswith("RobustLoss(")] + [
            "general_loss, learned alpha+scale",
            "adaptive (NLL, learned alpha+scale)",
        ]
        assert len([n for n in names if n.startswith("RobustLoss(")]) == 8
        checks = {(m["name"], m["ref"]): m for m in map(CHECK.match, text.splitlines()) if m}
        for name in names:
            assert name in rows, (backend, name)
            # Each ratio against the floor is the row's time over the floor's, up to the rounding of the printed
            # times (2 decimals of milliseconds: about 1 % of a 0.5 ms floor at 2^20 elements).
            ratio = float(rows[name]["ms"]) / floor
            assert float(rows[name]["floor"]) == pytest.approx(ratio, rel=0.03, abs=0.01), (backend, name)
            check = checks[(name, "floor")]
            target = 1.5 if "learned" in name else 1.2
            assert float(check["target"]) == target and float(check["ratio"]) == float(rows[name]["floor"])
            if abs(ratio - target) > 0.01:  # the verdict is taken before rounding
                assert check["verdict"] == ("met" if ratio <= target else "missed"), (backend, name)
        # A factory against Keras's own loss and against the bare formula.
        for name, keras_name in (("huber", "Huber"), ("focal", "focal"), ("bce", "BCE")):
            assert (f"factory {name}", f"keras {keras_name}") in checks
            assert (f"factory {name}", f"bare {name}") in checks
        assert ("general_loss, learned alpha+scale", "RobustLoss(alpha=1.5)") in checks


def test_gpu_script_skips_a_backend_that_cannot_be_imported(tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    # An interpreter for which neither backend imports: both are skipped, each with its line, and nothing fails.
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I -c 'raise ImportError(\"no such module\")' \"$@\"\n")
    fake.chmod(0o755)
    done = subprocess.run(
        [bash, str(ROOT / "benchmarks" / "gpu.sh"), "--size", "20"],
        capture_output=True, text=True, env={**os.environ, "PYTHON": str(fake)}, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    by_backend = sections(done.stdout)
    for backend in ("jax", "tensorflow"):
        line = f"skipped: {backend} cannot be imported here (ImportError: no such module)"
        assert by_backend[backend].strip() == line
