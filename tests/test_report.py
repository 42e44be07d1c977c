"""Study reports: figures, trials table and summary, on the MLflow parent run and from the CLI."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import aloss_tune
from aloss_tune.backends.keras_tuner import project_record
from aloss_tune.backends.optuna import study_record
from aloss_tune.report import study_artifacts_dir, write_artifacts, write_report
from aloss_tune.report._plots import PIXELS
from aloss_tune.report._shape import build_shape_loss, loss_shape
from aloss_tune.report._study import read_study

FIGURES = ("optimization_history.png", "objective_by_loss.png", "param_importances.png",
           "parallel_coordinates.png", "loss_shape.png")
LEARNED = "learned_params.png"
ALOSS_TUNE = Path(sys.executable).with_name("aloss-tune")


# ------------------------------------------------------------------------------------------------ helpers
def assert_figure(data: bytes | Path, *, min_drawn: float = 0.01) -> None:
    """A PNG of the standard size with a real drawing on it (not blank); a message figure has less ink."""
    from matplotlib.image import imread

    image = imread(io.BytesIO(data) if isinstance(data, bytes) else data, format="png")
    assert (image.shape[1], image.shape[0]) == PIXELS
    rgb = image[..., :3]
    drawn = np.mean(np.any(rgb < 0.9, axis=-1))  # share of pixels that are not (near) white
    assert drawn > min_drawn, f"the figure is blank ({drawn:.2%} drawn)"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # lines, text, colors: not a flat fill


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


REGRESSION = ("mse", "huber", "adaptive_barron")
CLASSIFICATION = ("bce", "focal", "class_bce")


def synthetic_study(task: str = "regression", n: int = 12, *, name: str | None = None) -> optuna.Study:
    """An in-memory study shaped like one aloss-tune wrote: user attrs, per-epoch histories, learned alpha
    and scale for the adaptive trials, one dead trial (trial 1), one pruned and one failed (the last two)."""
    rng = np.random.default_rng(0)
    regression = task == "regression"
    losses = REGRESSION if regression else CLASSIFICATION
    metric, baseline, scale = ("val_mae", 60.0, 50.0) if regression else ("val_pr_auc", 0.08, 1.0)
    study = optuna.create_study(study_name=name or f"synthetic_{task}",
                                direction="minimize" if regression else "maximize")
    study.set_user_attr("aloss_tune.objective", {"metric": metric, "direction": study.direction.name.lower()})
    study.set_user_attr("aloss_tune.baseline", baseline)
    study.set_user_attr("aloss_tune.target_scale", scale)
    study.set_user_attr("aloss_tune.space", {"loss": {"choices": list(losses)}})
    own = {"huber": ("delta", FloatDistribution(2.5, 250.0, log=True)),
           "focal": ("gamma", FloatDistribution(0, 5)),
           "class_bce": ("pos_weight", FloatDistribution(0.5, 50.0, log=True))}
    for i in range(n):
        loss = losses[i % 3]
        params: dict = {"loss": loss}
        dists: dict = {"loss": CategoricalDistribution(losses)}
        flat: dict = {"loss": loss}
        if loss in own:
            key, dist = own[loss]
            value = float(rng.uniform(dist.low, dist.high))
            params[f"loss.{loss}.{key}"], dists[f"loss.{loss}.{key}"] = value, dist
            flat[f"loss.{key}"] = value
        units = int(rng.integers(16, 129))
        params["model.units"], dists["model.units"] = units, IntDistribution(16, 128)
        flat["model.units"] = units
        end = 40 + 10 * rng.random() if regression else 0.5 + rng.random() / 3
        curve = list(np.linspace(70 if regression else 0.1, end, 5))
        history = {"loss": curve, "mae" if regression else "pr_auc": curve, metric: curve}
        if loss == "adaptive_barron":
            history["alpha"] = list(np.linspace(1.0, rng.uniform(0.1, 1.9), 5))
            history["scale"] = list(np.linspace(50.0, rng.uniform(5.0, 40.0), 5))
        value = curve[-1]
        if i == 1:  # no better than the baseline: dead
            value = baseline + (5.0 if regression else -0.01)
            history[metric] = [value] * 5
        state = optuna.trial.TrialState.COMPLETE
        attrs = {"aloss_tune.params": flat, "aloss_tune.history": history, "aloss_tune.seed": i}
        if i == n - 2:
            state, value = optuna.trial.TrialState.PRUNED, curve[1]
        if i == n - 1:
            state, value = optuna.trial.TrialState.FAIL, None
            attrs = {"aloss_tune.params": flat, "aloss_tune.error": "TrialFailed: the training loss is nan"}
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params=params, distributions=dists, user_attrs=attrs,
            intermediate_values={} if value is None else dict(enumerate(history[metric])),
        ))
    return study


# ----------------------------------------------------------------------------------------- synthetic studies
def test_regression_study_writes_every_artifact(tmp_path):
    study = synthetic_study("regression")
    written = write_artifacts(study_record(study), tmp_path)
    assert set(written) >= {*FIGURES, LEARNED, "trials.csv", "summary.md", "summary.html"}
    for name in (*FIGURES, LEARNED):
        assert_figure(tmp_path / name)
    rows = csv_rows((tmp_path / "trials.csv").read_text())
    assert len(rows) == len(study.trials) == 12
    assert [r["state"] for r in rows].count("failed") == 1
    assert [r["number"] for r in rows if r["dead"] == "True"] == ["1"]
    assert {r["loss"] for r in rows} == set(REGRESSION)
    adaptive = [r for r in rows if r["loss"] == "adaptive_barron" and r["state"] == "complete"]
    assert adaptive and all(r["learned.alpha"] and r["learned.scale"] for r in adaptive)
    summary = (tmp_path / "summary.md").read_text()
    # Counted as everywhere else: the dead trial is neither complete nor pruned.
    assert "- Trials: 12 (9 complete, 1 dead, 1 pruned, 1 failed)" in summary
    assert "**Dead trials: 1** of 12" in summary
    assert [r["state"] for r in rows].count("dead") == 1 and [r["state"] for r in rows].count("complete") == 9
    assert "| huber | 4 |" in summary  # the per-family table
    for name in (*FIGURES, LEARNED):
        assert f"({name})" in summary
    page = (tmp_path / "summary.html").read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES) + 1  # the page stands alone


def test_classification_study_plots_loss_against_the_true_class_probability(tmp_path):
    study = synthetic_study("binary")
    written = write_artifacts(study_record(study), tmp_path, formats=("md",))
    assert LEARNED not in written  # nothing learned: no trajectory figure, and the summary says why
    assert "No trial learned loss parameters" in (tmp_path / "summary.md").read_text()
    for name in FIGURES:
        assert_figure(tmp_path / name)
    data = read_study(study_record(study))
    assert data.task == "binary" and data.counts["dead"] == 1
    shape = loss_shape(data)
    assert 0 < shape.x.min() < shape.x.max() < 1
    best, reference = shape.curves
    assert reference.label == "bce" and set(best.rho) == {"y=1", "y=0"}
    # Cross-entropy: -log p_t, and its push on the logit is 1 - p_t.
    np.testing.assert_allclose(reference.rho["y=1"], -np.log(shape.x), rtol=1e-3)
    np.testing.assert_allclose(reference.psi["y=0"], 1 - shape.x, atol=2e-3)


def test_regression_shapes_match_closed_forms():
    data = read_study(study_record(synthetic_study("regression", n=4)))  # trial 1 is huber; make it the one drawn
    row = next(t for t in data.trials if t.loss == "huber")
    delta = row.params["loss.delta"]
    shape = loss_shape(data, row)
    x, spread = shape.x, data.target_scale
    assert x.min() == pytest.approx(-5 * spread) and x.max() == pytest.approx(5 * spread)
    huber, mse, mae = shape.curves
    assert (mse.label, mae.label) == ("mse", "mae") and not huber.reference
    away = np.abs(np.abs(x) - delta) > 0.02 * spread  # not at the kink
    np.testing.assert_allclose(huber.psi[""][away], np.clip(x / delta, -1, 1)[away], atol=1e-3)
    np.testing.assert_allclose(mse.psi[""], x / x.max(), atol=1e-3)
    np.testing.assert_allclose(mse.rho[""], (x / x.max()) ** 2, atol=1e-4)
    off_zero = np.abs(x) > 0.01 * spread
    np.testing.assert_allclose(mae.psi[""][off_zero], np.sign(x)[off_zero], atol=1e-3)


@pytest.mark.skipif(not {"barron", "adaptive_barron"} <= set(aloss_tune.list_losses()),
                    reason="the barron and adaptive_barron factories are not registered in this build")
def test_adaptive_loss_is_drawn_at_its_learned_values():
    data = read_study(study_record(synthetic_study("regression", n=4)))
    row = next(t for t in data.trials if t.loss == "adaptive_barron")
    loss, label, note = build_shape_loss(row)
    final = row.final_learned
    expected = aloss_tune.build_loss({"loss": "barron", "loss.alpha": final["alpha"],
                                      "loss.scale": final["scale"]})
    assert note is None and "learned alpha=" in label
    assert loss.get_config() == expected.get_config()


# The inputs the loss-shape figure evaluates a loss on: residuals (regression), then the probability of the
# true class as probabilities and as logits, for binary labels 0 and 1 and for a 2-class one-hot label.
P_GRID = np.linspace(0.002, 0.998, 60)
Z_GRID = np.log(P_GRID) - np.log1p(-P_GRID)
SHAPE_CASES = {
    "regression": [{"loss": "mse"}, {"loss": "mae"}, {"loss": "huber", "loss.delta": 2.0},
                   {"loss": "error_mse", "loss.clip_min": 0.5, "loss.clip_max": 3.0},
                   *({"loss": "barron", "loss.alpha": a, "loss.scale": 1.7}
                     for a in (2.0, 1.0, 0.0, -2.0, 1.5, 0.3, 4.0, -np.inf, np.inf)),
                   *({"loss": "dynamic_alpha", "loss.base": b, "loss.alpha_formula": f}
                     for b in ("mse", "mae") for f in ("constant", "sigmoid_snr", "inverse_rms", "outlier_damping"))],
    "binary": [{"loss": "bce"}, {"loss": "confidence_bce", "loss.clip_min": 1.5, "loss.clip_max": 20.0},
               {"loss": "class_bce", "loss.pos_weight": 3.0, "loss.neg_weight": 0.5},
               {"loss": "focal", "loss.gamma": 0.7, "loss.alpha": 0.6}, {"loss": "poly1", "loss.epsilon": 2.0},
               {"loss": "gce", "loss.q": 0.7}, {"loss": "sce"}, {"loss": "bootstrap", "loss.target": "hard"},
               *({"loss": "active_passive", "loss.active": a, "loss.passive": p, "loss.q": 0.3}
                 for a in ("ce", "nce", "gce", "ngce", "focal", "nfocal") for p in ("mae", "rce", "nnce")),
               {"loss": "dynamic_alpha", "loss.base": "bce", "loss.alpha_formula": "sigmoid_snr"}],
    "multiclass": [{"loss": "cce"}, {"loss": "class_cce", "loss.class_weights": [2.0, 0.5]},
                   {"loss": "poly1", "loss.mode": "categorical", "loss.epsilon": -0.5}, {"loss": "gce", "loss.q": 0.0},
                   {"loss": "sce", "loss.alpha": 2.0}, {"loss": "bootstrap"},
                   {"loss": "active_passive", "loss.active": "nfocal", "loss.passive": "nnce"},
                   {"loss": "dynamic_alpha", "loss.base": "cce", "loss.alpha_formula": "outlier_damping"}],
}


def shape_inputs(task: str, from_logits: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    if task == "regression":
        x = np.linspace(-15.0, 15.0, 61).reshape(-1, 1)
        return [(np.zeros_like(x), x)]
    grid = (Z_GRID if from_logits else P_GRID).reshape(-1, 1)
    if task == "binary":
        return [(np.full_like(grid, label), grid) for label in (0.0, 1.0)]
    other = np.zeros_like(grid) if from_logits else 1.0 - grid
    return [(np.tile([1.0, 0.0], (len(grid), 1)), np.hstack([grid, other]))]


@pytest.mark.parametrize(
    ("task", "params", "from_logits"),
    [(t, p, logits) for t, cases in SHAPE_CASES.items() for p in cases
     for logits in ((False,) if t == "regression" else (False, True))],
    ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())) if isinstance(v, dict) else str(v))
def test_the_shape_figure_evaluates_each_built_in_loss_in_numpy_as_keras_does(task, params, from_logits):
    from aloss_tune.report._closed_forms import closed_form
    from aloss_tune.report._shape import per_sample

    params = {**params, **({"loss.from_logits": True} if from_logits else {})}
    numpy_form, loss = closed_form(params), aloss_tune.build_loss(params)
    assert numpy_form is not None
    for y_true, y_pred in shape_inputs(task, from_logits):
        expected = per_sample(loss, y_true, y_pred)  # float32 Keras
        np.testing.assert_allclose(numpy_form(y_true, y_pred), expected, rtol=1e-4, atol=1e-6)


def test_every_built_in_factory_but_the_learned_one_has_a_closed_form():
    from aloss_tune.report._closed_forms import closed_form

    without = [name for name in aloss_tune.list_losses() if closed_form({"loss": name}) is None]
    assert without == ["adaptive_barron"]  # drawn as barron at its learned values, in closed form too


def test_a_loss_without_a_closed_form_is_drawn_from_the_loss_itself():
    import dataclasses

    from aloss_tune import _alpha_formulas
    from aloss_tune.losses import FormulaParam, dynamic
    from aloss_tune.report._shape import shape_function

    saved = dict(dynamic._FORMULAS)
    try:
        aloss_tune.losses.register_alpha_formula("halved", params={"k": FormulaParam(0.5)})(lambda e, k: k)
        row = read_study(study_record(synthetic_study("regression", n=4))).trials[0]
        row = dataclasses.replace(row, params={"loss": "dynamic_alpha", "loss.alpha_formula": "halved"})
        fn, label, note = shape_function(row)
        x = np.linspace(-2.0, 2.0, 5).reshape(-1, 1)
        np.testing.assert_allclose(fn(np.zeros_like(x), x), 0.5 * x[:, 0] ** 2, rtol=1e-6)  # k * MSE
        assert "alpha_formula=halved" in label and note is None
        assert not _alpha_formulas.is_builtin("halved") and _alpha_formulas.is_builtin("constant")
    finally:
        dynamic._FORMULAS.clear()
        dynamic._FORMULAS.update(saved)
        from aloss_tune import _factories_basic
        from aloss_tune.factories import register_loss_factory

        register_loss_factory(_factories_basic.dynamic_alpha_factory(), overwrite=True)


@pytest.mark.parametrize("n", [0, 1])
def test_studies_without_enough_trials_still_get_every_core_figure(tmp_path, n):
    study = optuna.create_study(study_name=f"small{n}")
    for _ in range(n):
        study.add_trial(optuna.trial.create_trial(
            value=1.0, params={"model.units": 8}, distributions={"model.units": IntDistribution(4, 16)},
            user_attrs={"aloss_tune.params": {"loss": "mse", "model.units": 8}}))
    written = write_artifacts(study_record(study), tmp_path)
    for name in FIGURES:
        assert_figure(written[name], min_drawn=0.002)  # a message saying what is missing
    assert len(csv_rows((tmp_path / "trials.csv").read_text())) == n
    summary = (tmp_path / "summary.md").read_text()
    assert ("No complete trial yet." in summary) == (n == 0)


def test_artifacts_never_raise_into_the_study(tmp_path, caplog):
    # A best loss this process cannot rebuild: the shape figure says so, everything else is written.
    study = optuna.create_study(study_name="unknown_loss")
    study.set_user_attr("aloss_tune.objective", {"metric": "val_mae", "direction": "minimize"})
    attrs = {"aloss_tune.params": {"loss": "not_registered_here"}}
    study.add_trial(optuna.trial.create_trial(value=1.0, params={}, distributions={}, user_attrs=attrs))
    folder = study_artifacts_dir(study_record(study))
    assert folder is not None
    assert_figure(folder / "loss_shape.png")
    assert "could not be evaluated here" in (folder / "summary.md").read_text()
    # Not even a study: a warning, no exception.
    with caplog.at_level("WARNING", logger="aloss_tune.report"):
        assert study_artifacts_dir(object()) is None
    assert "could not write" in caplog.text


# --------------------------------------------------------------------------------------------- end to end
def tiny_space(name: str) -> dict:
    robust = [n for n in ("barron", "adaptive_barron") if n in aloss_tune.list_losses()]
    return {
        "study": name,
        "data": "contaminated_regression",
        "model": {"builder": "mlp", "params": {"units": {"type": "int", "low": 8, "high": 32}, "layers": 1}},
        "training": {"epochs": 2, "batch_size": 64},
        "loss": {"choices": ["huber", *robust] if robust else ["mse", "huber"]},
        "search": {"sampler": "random", "pruner": "none", "n_trials": 3, "seed": 0},
    }


def parent_artifacts(client, run_id: str, tmp_path: Path) -> dict[str, bytes]:
    names = [a.path for a in client.list_artifacts(run_id)]
    out = {}
    for name in names:
        if name.endswith((".png", ".csv", ".md")):
            out[name] = Path(client.download_artifacts(run_id, name, str(tmp_path))).read_bytes()
    return out


@pytest.mark.slow
def test_finished_study_has_every_artifact_on_its_parent_run_and_resuming_refreshes_them(stores, in_tmp):
    from mlflow.tracking import MlflowClient

    result = aloss_tune.tune(tiny_space("report_e2e"), **stores)
    client = MlflowClient(stores["tracking_uri"])
    parent = result.parent_run_id
    got = parent_artifacts(client, parent, in_tmp / "first")
    adaptive = any(t.user_attrs.get("aloss_tune.params", {}).get("loss") == "adaptive_barron"
                   for t in result.study.trials)
    expected = {*FIGURES, "trials.csv", "summary.md", *((LEARNED,) if adaptive else ())}
    assert expected <= set(got)
    for name in expected:
        if name.endswith(".png"):
            assert_figure(got[name])
    assert len(csv_rows(got["trials.csv"].decode())) == len(result.study.trials) == 3

    # Resume: one more trial, and the parent's table and figures are rewritten over the whole study.
    again = aloss_tune.tune(tiny_space("report_e2e"), n_trials=1, **stores)
    assert again.parent_run_id == parent
    refreshed = parent_artifacts(client, parent, in_tmp / "second")
    assert len(csv_rows(refreshed["trials.csv"].decode())) == 4
    assert refreshed["optimization_history.png"] != got["optimization_history.png"]

    # The report command, from the Optuna storage alone, through the real entry point.
    out = in_tmp / "report"
    command = [str(ALOSS_TUNE), "report", "report_e2e", "--storage", stores["storage"], "--out", str(out),
               "--format", "html"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(out / "summary.html") in done.stdout
    for name in FIGURES:
        assert_figure(out / name)
    assert len(csv_rows((out / "trials.csv").read_text())) == 4
    page = (out / "summary.html").read_text()
    assert "Study <code>report_e2e</code>" in page and "data:image/png;base64," in page
    # Markdown from Python, and a study name that does not exist.
    assert write_report("report_e2e", in_tmp / "md", storage=stores["storage"]).name == "summary.md"
    with pytest.raises(aloss_tune.UsageError, match="no study named 'nope'.*report_e2e"):
        write_report("nope", in_tmp / "x", storage=stores["storage"])


def test_report_command_usage_errors_are_one_line(tmp_path, capsys):
    from aloss_tune.cli import build_parser, main

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    code = main(["report", "missing", "--storage", storage, "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aloss-tune: error: no study named 'missing'")
    args = build_parser().parse_args(["report", "s"])
    assert (args.format, args.out, args.storage) == ("md", None, None)


# --------------------------------------------------------------------------------- KerasTuner projects
def _range(dist) -> dict:
    """aloss-tune's dict form of an Optuna distribution (what a KerasTuner project's study record holds)."""
    if isinstance(dist, CategoricalDistribution):
        return {"type": "categorical", "choices": list(dist.choices)}
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    return {"type": kind, "low": dist.low, "high": dist.high, "log": dist.log}


def keras_tuner_project(study: optuna.Study, root: Path) -> Path:
    """The KerasTuner project aloss-tune would have written for ``study``'s complete and failed trials:
    the study record, and per trial KerasTuner's ``trial.json`` beside aloss-tune's ``aloss_tune.json``."""
    import json

    project = root / study.study_name
    project.mkdir(parents=True)
    dists = {name: _range(d) for t in study.trials for name, d in t.distributions.items()}
    attrs = study.user_attrs
    (project / "aloss_tune.json").write_text(json.dumps({
        "study": study.study_name, "backend": "keras-tuner", "tuner": "random",
        "objective": attrs["aloss_tune.objective"], "seed": 0, "search_params": dists,
        "target_scale": attrs["aloss_tune.target_scale"],
        "losses": attrs["aloss_tune.space"]["loss"]["choices"], "task": "regression",
        "baseline": attrs["aloss_tune.baseline"],
    }))
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            continue  # KerasTuner does not prune
        folder = project / f"trial_{t.number}"
        folder.mkdir()
        complete = t.state == optuna.trial.TrialState.COMPLETE
        (folder / "trial.json").write_text(json.dumps({
            "trial_id": str(t.number), "status": "COMPLETED" if complete else "FAILED",
            "score": t.value, "hyperparameters": {"values": dict(t.params)},
        }))
        record = {"number": t.number, "trial_id": str(t.number),
                  "state": "complete" if complete else "failed", "params": t.user_attrs["aloss_tune.params"],
                  "seed": t.number, "history": t.user_attrs.get("aloss_tune.history"),
                  "mlflow_run_id": f"run{t.number}"}
        if complete:
            record["value"] = t.value
        else:
            record["error"] = t.user_attrs["aloss_tune.error"]
        (folder / "aloss_tune.json").write_text(json.dumps(record))
    return project


def test_a_keras_tuner_project_reads_as_the_same_records_as_an_optuna_study(tmp_path):
    study = synthetic_study("regression", name="kt_like")
    project = keras_tuner_project(study, tmp_path / "kt")
    from_optuna, from_kt = read_study(study_record(study)), read_study(project_record(project))
    settings = ("name", "metric", "direction", "baseline", "target_scale", "task", "losses")
    assert [getattr(from_kt, k) for k in settings] == [getattr(from_optuna, k) for k in settings]
    expected = [t for t in from_optuna.trials if t.state != "pruned"]
    assert [t.number for t in from_kt.trials] == [t.number for t in expected] == list(range(10)) + [11]
    for kt_row, row in zip(from_kt.trials, expected, strict=True):
        assert (kt_row.state, kt_row.value, kt_row.loss, dict(kt_row.params), kt_row.dead) == (
            row.state, row.value, row.loss, dict(row.params), row.dead)
        # The searched names and their ranges, rebuilt from the flat params: what importances need.
        assert dict(kt_row.search_params) == dict(row.search_params)
        assert dict(kt_row.distributions) == dict(row.distributions)
        assert {k: list(v) for k, v in kt_row.learned.items()} == {k: list(v) for k, v in row.learned.items()}
    assert from_kt.best.number == from_optuna.best.number

    written = write_artifacts(project_record(project), tmp_path / "out")
    assert set(written) >= {*FIGURES, LEARNED, "trials.csv", "summary.md", "summary.html"}
    for name in (*FIGURES, LEARNED):
        assert_figure(written[name])
    rows = csv_rows(written["trials.csv"].read_text())
    assert [r["mlflow_run_id"] for r in rows] == [f"run{t.number}" for t in expected]
    assert "**Dead trials: 1** of 11" in written["summary.md"].read_text()


def test_report_finds_a_keras_tuner_project_and_the_optuna_storage_points_to_it(tmp_path, in_tmp):
    study = synthetic_study("regression", n=6, name="kt_named")
    keras_tuner_project(study, tmp_path / "kt_projects")  # the default project root, in the working folder
    summary = write_report("kt_named", tmp_path / "r", backend="keras-tuner")
    assert summary == tmp_path / "r" / "summary.md" and (tmp_path / "r" / "trials.csv").exists()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(aloss_tune.UsageError) as caught:
        write_report("kt_named", tmp_path / "x", storage=storage)
    assert str(caught.value) == ("study 'kt_named' is a KerasTuner project in kt_projects: "
                                 "add --backend keras-tuner.")
    with pytest.raises(aloss_tune.UsageError, match="no KerasTuner project of aloss-tune's at elsewhere"):
        write_report("kt_named", tmp_path / "x", backend="keras-tuner", directory="elsewhere")


# ------------------------------------------------------------------------------------------- figure layout
def drawn_figure(monkeypatch, draw) -> object:
    """The matplotlib figure ``draw(path)`` saves, drawn (text extents known)."""
    from aloss_tune.report import _plots

    figures = []
    monkeypatch.setattr(_plots, "save", lambda fig, path: figures.append(fig) or path)
    draw(Path("unused.png"))
    (fig,) = figures
    fig.canvas.draw()
    return fig


def test_parallel_coordinates_labels_never_overlap(monkeypatch):
    # The bundled robust-regression space: 17 searched names, long ones, and a categorical with long choices
    # on an inner axis (the alpha formula of dynamic_alpha), drawn on the 9 most important axes.
    from aloss_tune.backends.optuna import OptunaSuggester
    from aloss_tune.report import _plots
    from aloss_tune.space import SearchSpace

    space = SearchSpace.from_yaml(Path(__file__).parents[1] / "search_spaces" / "robust_regression.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="robust", sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("aloss_tune.objective", {"metric": "val_mae", "direction": "minimize"})
    rng = np.random.default_rng(0)

    def objective(trial):
        trial.set_user_attr("aloss_tune.params", space.sample(OptunaSuggester(trial), 12.0))
        return float(rng.uniform(5, 9))

    study.optimize(objective, n_trials=40)
    data = read_study(study_record(study))
    names = sorted({n for t in data.trials for n in t.distributions})
    first = ["loss", "loss.dynamic_alpha.alpha_formula", "optimizer.learning_rate",
             "loss.error_mse.clip_max", "loss.adaptive_barron.scale_init"]
    importances = {n: (10.0 - first.index(n) if n in first else 1.0) for n in names}
    fig = drawn_figure(monkeypatch, lambda p: _plots.plot_parallel(data, importances, p))
    ax = fig.axes[0]
    # The loss, the params every trial has, then each family's own params side by side, important first.
    # The loss, the params every trial has and the objective, then each family's own params, important first.
    shown = [t.get_text() for t in ax.get_xticklabels()]
    families = [label for label in shown if "." in label and label.split(".")[0] in space.losses]
    assert shown[:2] == ["loss", "optimizer.learning_rate"] and "val_mae" in shown
    assert families[:3] == ["dynamic_alpha.alpha_formula", "error_mse.clip_max", "adaptive_barron.scale_init"]
    assert shown == [label for label in shown if label not in families] + families
    assert shown[len(shown) - len(families) - 1] == "val_mae"
    labels = [t for t in [*ax.get_xticklabels(), *ax.texts] if t.get_text()]
    masks = label_ink(fig, labels)
    for i, mask in enumerate(masks):
        assert mask.any(), f"{labels[i].get_text()!r} is not drawn inside the figure"
        for j in range(i):
            assert not (mask & masks[j]).any(), (labels[i].get_text(), labels[j].get_text())


def label_ink(fig, labels) -> list:
    """Per label, the pixels it draws (where the figure differs from the figure without any label): rotated
    labels have no rectangular extent to compare, so their ink is."""
    def pixels() -> np.ndarray:
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)

    fig.set_layout_engine("none")  # keep the layout as drawn: hiding a label must not move the axes
    for label in labels:
        label.set_visible(False)
    bare = pixels()
    masks = []
    for label in labels:
        label.set_visible(True)
        masks.append(np.abs(pixels() - bare).max(axis=-1) > 40)
        label.set_visible(False)
    return masks


def test_regression_loss_shape_is_drawn_in_spreads_of_the_target(monkeypatch):
    from aloss_tune.report import _plots

    data = read_study(study_record(synthetic_study("regression", n=4)))  # target spread 50
    row = next(t for t in data.trials if t.loss == "huber")
    fig = drawn_figure(monkeypatch, lambda p: _plots.plot_loss_shape(data, loss_shape(data, row), p))
    ax_rho = fig.axes[0]
    curve = ax_rho.get_lines()[0].get_xdata()
    assert curve.min() == pytest.approx(-5) and curve.max() == pytest.approx(5)
    dashed = sorted(float(line.get_xdata()[0]) for line in ax_rho.get_lines() if line.get_linestyle() == "--"
                    and len(set(line.get_xdata())) == 1)
    assert dashed == [-1.0, 1.0]  # one spread either side
    assert ax_rho.get_xlabel() == "residual y_pred - y_true, in robust spreads of the target (50)"
    for ax in fig.axes[:2]:  # the axis titles fit in the figure
        box = ax.xaxis.label.get_window_extent(fig.canvas.get_renderer())
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1


def test_parallel_coordinates_draw_only_the_params_a_trial_has(monkeypatch):
    # confidence_bce searches nothing of its own here: its trials' lines must never cross the axes of
    # class_bce's and focal's params (where a line running through would read as pos_weight=20, alpha=0.95).
    from aloss_tune.report import _plots

    losses = ("confidence_bce", "class_bce", "focal")
    study = optuna.create_study(study_name="families", direction="maximize")
    study.set_user_attr("aloss_tune.objective", {"metric": "val_pr_auc", "direction": "maximize"})
    own = {"class_bce": {"loss.class_bce.pos_weight": (20.0, FloatDistribution(0.5, 50.0, log=True))},
           "focal": {"loss.focal.alpha": (0.95, FloatDistribution(0.05, 0.95)),
                     "loss.focal.gamma": (4.0, FloatDistribution(0.0, 5.0))}}
    for i in range(9):
        loss = losses[i % 3]
        params = {"loss": loss, "model.units": 8 + i, **{k: v for k, (v, _) in own.get(loss, {}).items()}}
        dists = {"loss": CategoricalDistribution(losses), "model.units": IntDistribution(8, 64),
                 **{k: d for k, (_, d) in own.get(loss, {}).items()}}
        study.add_trial(optuna.trial.create_trial(
            value=0.5 + i / 40, params=params, distributions=dists,
            user_attrs={"aloss_tune.params": {"loss": loss, "model.units": 8 + i}}))
    data = read_study(study_record(study))
    importances = {"loss.class_bce.pos_weight": 0.4, "loss.focal.alpha": 0.3, "loss.focal.gamma": 0.2,
                   "model.units": 0.05, "loss": 0.05}
    fig = drawn_figure(monkeypatch, lambda p: _plots.plot_parallel(data, importances, p))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    positions = [float(x) for x in ax.get_xticks()]
    pieces: dict[int, list[list[str]]] = {}  # per trial, the axes each of its drawn pieces runs through
    for i, line in enumerate(ax.get_lines()):
        if line.get_marker() != "o":
            continue  # the axes themselves
        if line.get_gid() is None:
            line.set_gid(f"trial-{100 + i}")  # a trial's line drawn without its name: checked all the same
        if line.get_gid().startswith("trial-"):
            axes_of_line = [labels[positions.index(float(x))] for x in line.get_xdata()]
            pieces.setdefault(int(line.get_gid().removeprefix("trial-")), []).append(axes_of_line)
    for parts in pieces.values():  # each piece joins neighbouring axes only: it never crosses another axis
        for part in parts:
            first = labels.index(part[0])
            assert part == labels[first:first + len(part)], (part, labels)
    assert labels == ["loss", "model.units", "val_pr_auc", "class_bce.pos_weight", "focal.alpha", "focal.gamma"]
    assert sorted(pieces) == list(range(9))
    for number, parts in pieces.items():
        # Every trial: one piece through the loss, its units and its objective; a class_bce or focal trial
        # one more through its own params; a confidence_bce trial nothing on the axes it does not have.
        loss = losses[number % 3]
        assert parts == [["loss", "model.units", "val_pr_auc"],
                         *([[name.split(".", 1)[1] for name in own[loss]]] if loss in own else [])], number


def test_value_axes_zoom_on_the_trials_and_note_the_baseline(monkeypatch):
    # PR-AUC: the baseline (the positive rate, 0.08) and the dead trial (0.07) lie far below the trials that
    # learned (0.5 to 0.83): the axis shows those, the baseline is a note, the dead trial a marker at the edge.
    from aloss_tune.report import _plots

    data = read_study(study_record(synthetic_study("binary")))
    (dead,) = [t.value for t in data.trials if t.dead]
    assert dead == pytest.approx(0.07) and data.baseline == 0.08
    for draw, states in ((_plots.plot_history, ("complete", "pruned")), (_plots.plot_by_family, ("complete",))):
        live = [t.value for t in data.trials if t.state in states and t.value is not None and not t.dead]
        assert min(live) > 0.25  # the pruned trial's last value is the lowest
        fig = drawn_figure(monkeypatch, lambda p, draw=draw: draw(data, p))
        ax = fig.axes[0]
        low, high = ax.get_ylim()
        assert 0.2 < low <= min(live) and high >= max(live), (draw.__name__, low, high)
        notes = [t.get_text() for t in ax.texts if "baseline" in t.get_text()]
        assert notes == ["\u25bc baseline (a constant prediction): 0.08, below the axis"], draw.__name__
        assert not [line for line in ax.get_lines() if list(line.get_ydata()) == [0.08, 0.08]]  # no line
        edge = [line for line in ax.get_lines() if line.get_marker() == "v"]
        assert [float(line.get_ydata()[0]) for line in edge] == [low]  # the dead trial, at the bottom edge
    # A baseline within the trials' range is a dashed line, as before.
    regression = read_study(study_record(synthetic_study("regression")))
    fig = drawn_figure(monkeypatch, lambda p: _plots.plot_history(regression, p))
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() == "--"] == [[60.0, 60.0]]
    assert not [t for t in ax.texts if "baseline" in t.get_text()]
