"""Built-in datasets and model builder: documented contamination, enough minority examples, no downloads."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from aloss_tune.datasets import as_dataset, contaminated_regression, imbalanced_classification
from aloss_tune.errors import ConfigError
from aloss_tune.models import mlp


def test_contaminated_regression_has_outliers_only_in_train_and_val():
    clean = contaminated_regression(outlier_fraction=0.0)
    dirty = contaminated_regression(outlier_fraction=0.2)
    np.testing.assert_array_equal(clean.y_test, dirty.y_test)  # test targets stay clean
    for split in ("train", "val"):
        shifted = getattr(dirty, f"y_{split}") - getattr(clean, f"y_{split}")
        n = len(shifted)
        assert np.count_nonzero(shifted) == round(0.2 * n) == dirty.info[f"outliers_{split}"]
        sd = np.std(clean.y_train)
        hit = shifted[shifted != 0]
        assert np.all(hit >= 4 * sd * 0.999) and np.all(hit <= 8 * sd * 1.001)
    assert dirty.x_train.shape[1] == 10 and len(dirty.y_train) + len(dirty.y_val) + len(dirty.y_test) == 442
    assert abs(float(dirty.x_train.mean())) < 1e-5  # standardised with training statistics


def test_robust_target_scale_ignores_outliers():
    clean = contaminated_regression(outlier_fraction=0.0)
    dirty = contaminated_regression(outlier_fraction=0.2)
    mad_inflation = dirty.target_scale / clean.target_scale
    std_inflation = np.std(dirty.y_train) / np.std(clean.y_train)
    assert std_inflation > 2.5
    assert mad_inflation < 1.5 < std_inflation / mad_inflation


def test_imbalanced_classification_keeps_hundreds_of_positives():
    data = imbalanced_classification()
    assert data.task == "binary"
    assert 0.06 < data.y_train.mean() < 0.12
    assert data.info["positives_val"] >= 80 and data.info["positives_test"] >= 80


def test_user_arrays_and_errors():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    data = as_dataset((x, y, x, y))
    assert data.task == "regression" and data.x_train.dtype == np.float32
    assert as_dataset((x, (y > 0).astype(int), x, (y > 0).astype(int))).task == "binary"
    with pytest.raises(ConfigError, match="x_train has 20 rows but y_train has 19"):
        as_dataset((x, y[:19], x, y))
    with pytest.raises(ConfigError, match=r"data: unknown dataset 'nope'; built-ins: contaminated_regression"):
        as_dataset("nope")
    with pytest.raises(ConfigError, match=r"data\.args\.bogus: unknown argument of contaminated_regression"):
        as_dataset("contaminated_regression", args={"bogus": 1})
    with pytest.raises(ConfigError, match=r"`outlier_fraction` must be in \[0, 0\.5\)"):
        contaminated_regression(outlier_fraction=0.7)


def test_mlp_predicts_in_target_units_and_validates_params():
    data = contaminated_regression()
    keras.utils.set_random_seed(0)  # an untrained network: its output depends on the initial weights
    model = mlp({"model.units": 8, "model.layers": 1}, data)
    pred = model.predict(data.x_val[:5], verbose=0)
    # An untrained network outputs ~0 on the standardised scale, i.e. ~ the target median in data units.
    assert np.all(np.abs(pred - data.target_center) < 3 * data.target_scale)
    with pytest.raises(ConfigError, match=r"mlp: `model\.dropout` must be in \[0, 1\), but got 1\.5"):
        mlp({"model.dropout": 1.5}, data)
    with pytest.raises(ConfigError, match=r"mlp: unknown parameter `model\.width`"):
        mlp({"model.width": 3}, data)


def test_the_readme_data_example_runs_as_written(tmp_path, monkeypatch):
    """README's `my_data.py` (a data function returning a Dataset, a (params, data) builder) is the code here."""
    import re
    from pathlib import Path

    import aloss_tune

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(# my_data\.py.*?)```", readme, re.S).group(1)
    (tmp_path / "my_data.py").write_text(code, encoding="utf-8")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    np.savetxt(tmp_path / "houses.csv", np.column_stack([x, x @ [1.0, -2.0, 0.5]]), delimiter=",")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    space = {"study": "houses", "data": {"name": "my_data:load", "args": {"path": "houses.csv"}},
             "model": {"builder": "my_data:build", "params": {"units": {"type": "int", "low": 4, "high": 16}}},
             "loss": ["mse", "huber"], "training": {"epochs": 1},
             "search": {"sampler": "random", "pruner": "none", "n_trials": 2}}
    result = aloss_tune.tune(space, tracking=False, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert result.counts == {"complete": 2, "pruned": 0, "failed": 0}
    data = as_dataset("my_data:load", args={"path": "houses.csv"})
    assert (data.name, data.task, data.x_train.shape, data.x_val.shape, data.n_outputs) == (
        "houses", "regression", (80, 3), (20, 3), 1)


def test_a_data_function_may_return_a_dict():
    from helpers.bad_inputs import as_dict, data

    got, expected = as_dataset("helpers.bad_inputs:as_dict"), data()
    assert as_dict().keys() == {"x_train", "y_train", "x_val", "y_val"}
    for array, want in zip((got.x_train, got.y_train, got.x_val, got.y_val), expected, strict=True):
        np.testing.assert_array_equal(array, want)
    assert got.x_test is None and got.task == "regression"
