"""Wall time of the read-only commands (``losses``, ``best``, ``report``, ``validate``), each in a fresh process.

A tiny study is made once (3 trials of 2 epochs, tracked in MLflow; about a minute), then every command runs
``--repeats`` times, in turns (one run of each command, and of each checkout given with ``--tree``, per
round), so that the machine's other work falls on all of them alike. It prints each command's median and
range, and the load average before and after.

    python benchmarks/cli_startup.py [--repeats 5] [--dir DIR] [--tree PATH ...]

``--dir`` keeps the study's stores in DIR (made there if missing, reused if present); ``--tree`` times the
``aloss_tune`` package of other checkouts too (put first on ``PYTHONPATH``), e.g. the code before a change.

Target: each command <= 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 1.5
SPACE = """\
study: tiny
data: contaminated_regression
model: {builder: mlp, params: {units: 8, layers: 1}}
training: {epochs: 2, batch_size: 64}
loss: [mse, huber, barron]
search: {n_trials: 3, seed: 0}
"""


def command_line() -> list[str]:
    """The ``aloss-tune`` console script of this interpreter (as a user runs it), or an equivalent."""
    script = Path(sys.executable).with_name("aloss-tune")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'aloss-tune'; from aloss_tune.cli import main; "
                                  "sys.exit(main())"]


def run(tree: Path, folder: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    done = subprocess.run([*command_line(), *args], cwd=folder, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"aloss-tune {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def make_study(folder: Path) -> None:
    (folder / "tiny.yaml").write_text(SPACE, encoding="utf-8")
    if (folder / "aloss_tune.db").exists():
        return
    print(f"making the study in {folder} ...", flush=True)
    run(REPO, folder, ["tune", "tiny.yaml", "--quiet"])


def trial_run(folder: Path) -> str:
    """The MLflow run id of the study's first trial."""
    with sqlite3.connect(folder / "mlflow.db") as db:
        row = db.execute("SELECT run_uuid FROM runs WHERE name LIKE 'trial-0%'").fetchone()
    return str(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="keep (or reuse) the study's stores here")
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="also time the aloss_tune package of this checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = (args.dir or Path(tmp)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        make_study(folder)
        commands = {
            "--help": ["--help"],
            "losses": ["losses"],
            "best": ["best", "tiny"],
            "best --format python": ["best", "tiny", "--format", "python"],
            "best runs:/": ["best", f"runs:/{trial_run(folder)}"],
            "report": ["report", "tiny", "--out", str(folder / "report")],
            "validate": ["validate", "tiny.yaml"],
        }
        trees = [REPO, *(t.resolve() for t in args.tree)]
        times: dict[tuple[str, Path], list[float]] = {(c, t): [] for c in commands for t in trees}
        load = os.getloadavg()
        for _ in range(args.repeats):
            for name, argv in commands.items():
                for tree in trees:
                    times[name, tree].append(run(tree, folder, argv))
        after = os.getloadavg()
    print(f"\nmedian (min-max) wall seconds of {args.repeats} runs each, in turns; {os.cpu_count()} CPUs, load "
          f"average {load[0]:.1f} before, {after[0]:.1f} after")
    print(f"{'command':<22}" + "".join(f"{str(t):>34}" for t in trees))
    for name in commands:
        cells = []
        for tree in trees:
            values = times[name, tree]
            cells.append(f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"{name:<22}" + "".join(f"{c:>34}" for c in cells))
    worst = max(statistics.median(times[name, REPO]) for name in commands)
    print(f"\nslowest command of {REPO}: {worst:.2f} s (target <= {TARGET_S} s: "
          f"{'met' if worst <= TARGET_S else 'missed'})")


if __name__ == "__main__":
    main()
