"""The ``aloss-tune report`` command (argument parsing only; the work is in `write_report`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def add_cli(subparsers: Any) -> None:
    """Add ``report STUDY [--backend optuna|keras-tuner] [--storage URL] [--directory DIR] [--out DIR]
    [--format md|html]`` to the CLI's subcommands."""
    p = subparsers.add_parser(
        "report", help="write a study's figures, trials table and one-page summary (no MLflow needed)",
        description="Write the study's figures (PNG), trials.csv and a one-page summary (Markdown or HTML) "
                    "into a folder, from the Optuna storage or the KerasTuner project alone.",
    )
    p.add_argument("study", help="study name")
    p.add_argument("--backend", choices=("optuna", "keras-tuner"), default="optuna",
                   help="where the study lives: the Optuna storage (default) or a KerasTuner project")
    p.add_argument("--storage",
                   help="Optuna storage URL (default: $ALOSS_TUNE_STORAGE or sqlite:///aloss_tune.db)")
    p.add_argument("--directory", help="KerasTuner project root (default: kt_projects)")
    p.add_argument("--out", help="output folder (default: ./<study>_report)")
    p.add_argument("--format", choices=("md", "html"), default="md",
                   help="summary page format: md (figures beside it) or html (one file, figures embedded)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from aloss_tune.report._artifacts import write_report

    out = Path(args.out) if args.out else Path(f"{args.study}_report")
    with _optuna_importance_alone():
        summary = write_report(args.study, out, fmt=args.format, storage=args.storage, backend=args.backend,
                               directory=args.directory)
    files = sorted(p.name for p in summary.parent.iterdir() if p.is_file())
    print(f"report of study {args.study!r}: {summary}")
    print(f"  files in {summary.parent}: {', '.join(files)}")
    return 0


@contextlib.contextmanager
def _optuna_importance_alone() -> Iterator[None]:
    """Import `optuna.importance` without scikit-learn, in this command's own process.

    The report ranks parameters with Optuna's default evaluator, PED-ANOVA, which needs only NumPy; but
    importing `optuna.importance` also imports its other evaluators, whose optional scikit-learn (with SciPy
    and pandas) takes longer to import than the rest of the report takes to write. Optuna defers a missing
    optional dependency to the evaluator that needs it, so for the import scikit-learn is made unimportable
    (``sys.modules["sklearn"] = None``), then restored. Only the ``report`` command does this: it exits when
    the report is written, so nothing else in the process could want Optuna's fANOVA evaluator.
    """
    if "optuna.importance" in sys.modules or "sklearn" in sys.modules:
        yield
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        import optuna.importance  # noqa: F401
    finally:
        del sys.modules["sklearn"]
    yield
