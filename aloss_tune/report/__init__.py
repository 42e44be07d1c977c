"""Study reports: figures, a trials table and a one-page summary, for MLflow and for people without it.

::

    aloss-tune report robust_regression --format html --out report/
    aloss-tune report robust_regression --backend keras-tuner --directory kt_projects

    from aloss_tune import report
    report.write_report("robust_regression", "report/", storage="sqlite:///aloss_tune.db")
    report.write_report("robust_regression", "report/", backend="keras-tuner")

A report reads backend-neutral records only: the `aloss_tune.backends.base.StudyRecord` that either backend
reads out of its own storage through the `Backend` interface (``records``), so an Optuna study and a
KerasTuner project get the same report, and nothing here knows either backend. A study writes the same
artifacts on its MLflow parent run when it ends (`study_artifacts_dir`). Importing this package is cheap:
optuna, matplotlib and Keras load only when a report is written.
"""

from aloss_tune.report._artifacts import load_study, study_artifacts_dir, write_artifacts, write_report
from aloss_tune.report._cli import add_cli

__all__ = ["add_cli", "load_study", "study_artifacts_dir", "write_artifacts", "write_report"]
