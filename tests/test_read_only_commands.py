"""The read-only commands (``losses``, ``best``, ``report``, ``validate``) load no tensor library.

Each runs through the CLI's entry point in a fresh interpreter, against one tiny study made once for the module,
and reports which heavy modules it imported: none of TensorFlow, JAX, Keras; MLflow only where the command talks
to MLflow (``best runs:/...``). Their output is checked too, so that a command that skips its work cannot pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aloss_tune

HEAVY = ("tensorflow", "jax", "keras", "torch", "mlflow", "sklearn")
TENSORS = {"tensorflow", "jax", "keras", "torch"}
RUN = """
import json, sys
sys.argv = ["aloss-tune", *{args!r}]
from aloss_tune.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "imported": [m for m in {heavy!r} if m in sys.modules]}}))
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> dict:
    """A tracked 2-trial study of one epoch, its space file and its stores, in a folder of its own."""
    folder = tmp_path_factory.mktemp("read_only")
    shutil.copyfile(mlflow_db_template, folder / "mlflow.db")
    space = folder / "space.yaml"
    space.write_text("study: ro\ndata: contaminated_regression\nmodel: {builder: mlp, params: {units: 8, layers: 1}}\n"
                     "training: {epochs: 1, batch_size: 64}\nloss: [barron, huber]\n"
                     "search: {sampler: random, pruner: none, n_trials: 2, seed: 0}\n", encoding="utf-8")
    storage, tracking = f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow's artifacts (./mlruns) land there too
        result = aloss_tune.tune(str(space), storage=storage, tracking_uri=tracking, progress=False)
    run_id = result.study.trials[0].user_attrs["aloss_tune.mlflow_run_id"]
    return {"folder": folder, "space": space, "storage": storage, "tracking": tracking, "result": result,
            "run": run_id}


def cli(study: dict, *args: str) -> tuple[list[str], str]:
    """(heavy modules imported, stdout before the last line) of ``aloss-tune ARGS`` in a fresh interpreter."""
    code = RUN.format(args=list(args), heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=study["folder"],
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    *output, last = done.stdout.splitlines()
    status = json.loads(last)
    assert status["code"] == 0, done.stderr[-3000:]
    return status["imported"], "\n".join(output)


def test_losses_lists_every_factory_without_keras(study):
    imported, out = cli(study, "losses", "--format", "json")
    assert imported == []
    listed = json.loads(out)
    assert set(listed) == set(aloss_tune.list_losses())
    # The alpha formulas' parameters come from their registry, each under the formula that reads it.
    assert listed["dynamic_alpha"]["params"]["power"]["when"] == {"alpha_formula": ["inverse_rms"]}
    assert listed["dynamic_alpha"]["params"]["power"]["domain"] == "in [0, 2]"


def test_best_as_json_and_as_python_without_keras(study):
    best = study["result"]
    imported, out = cli(study, "best", "ro", "--storage", study["storage"])
    assert imported == []
    config = json.loads(out)
    assert config["trial"] == best.best_trial and config["params"]["loss"] == best.best_params["loss"]
    assert config["keras"]["registered_name"].startswith("aloss_tune>")  # the serialization the study stored
    imported, code = cli(study, "best", "ro", "--storage", study["storage"], "--format", "python")
    assert imported == []
    assert "loss = aloss_tune.build_loss(" in code and "def build_best_model(" in code
    compile(code, "best.py", "exec")


def test_best_of_an_mlflow_run_imports_mlflow_but_no_tensor_library(study):
    imported, out = cli(study, "best", f"runs:/{study['run']}", "--tracking-uri", study["tracking"])
    assert imported == ["mlflow"]
    first = study["result"].study.trials[0].user_attrs["aloss_tune.params"]
    assert json.loads(out)["params"] == {k: v for k, v in first.items() if k.startswith("loss")}


def test_report_draws_every_figure_without_keras_or_scikit_learn(study):
    out = study["folder"] / "report"
    imported, text = cli(study, "report", "ro", "--storage", study["storage"], "--out", str(out))
    assert imported == []
    assert str(out / "summary.md") in text
    for name in ("optimization_history.png", "objective_by_loss.png", "param_importances.png",
                 "parallel_coordinates.png", "loss_shape.png"):
        assert (out / name).stat().st_size > 10_000, name
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "could not" not in summary  # the importances and the loss shape were computed, not skipped


def test_validate_without_data_loads_no_keras(study):
    imported, out = cli(study, "validate", str(study["space"]))
    assert imported == []
    assert "valid" in out and "loss.barron.scale: log-uniform [0.01, 1] (relative)" in out


def test_the_library_import_still_loads_keras_and_registers_the_losses(study):
    code = ("import sys, aloss_tune, keras\n"
            "print('aloss_tune.losses' in sys.modules, keras.saving.get_registered_object('aloss_tune>Huber') "
            "is not None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["True", "True"], done.stderr[-2000:]
