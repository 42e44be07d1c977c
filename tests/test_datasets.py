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


# ------------------------------------------------------------------------------------ MNIST-1D, label noise
def test_mnist1d_is_generated_offline_balanced_and_one_hot(monkeypatch: pytest.MonkeyPatch):
    import requests

    def no_download(*args, **kwargs):
        raise AssertionError("mnist1d must be generated, never downloaded")

    monkeypatch.setattr(requests, "get", no_download)
    state = np.random.get_state()[1].copy()
    data = as_dataset("mnist1d", args={"n_samples": 500, "seed": 3})
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # the caller's global RNG is left alone
    assert data.task == "multiclass" and data.n_outputs == 10
    assert data.x_train.shape == (300, 40) and data.x_val.shape == (100, 40) and data.x_test.shape == (100, 40)
    for y in (data.y_train, data.y_val, data.y_test):
        assert set(np.unique(y)) == {0.0, 1.0} and np.all(y.sum(axis=1) == 1)
    np.testing.assert_array_equal(data.y_train.sum(axis=0), np.full(10, 30))  # stratified: 30 per class
    again = as_dataset("mnist1d", args={"n_samples": 500, "seed": 3})
    np.testing.assert_array_equal(again.x_train, data.x_train)


def _labels(y: np.ndarray) -> np.ndarray:
    return np.argmax(y, axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y)).astype(int)


@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "asymmetric"])
def test_label_noise_flips_train_and_val_at_the_rate_and_leaves_test_clean(kind: str):
    clean = as_dataset("mnist1d", args={"n_samples": 2000})
    noisy = as_dataset("mnist1d", args={"n_samples": 2000, "label_noise": {"kind": kind, "rate": 0.4, "seed": 1}})
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)
    np.testing.assert_array_equal(noisy.x_train, clean.x_train)
    for split in ("train", "val"):
        before, after = _labels(getattr(clean, f"y_{split}")), _labels(getattr(noisy, f"y_{split}"))
        flipped = before != after
        assert noisy.info[f"noise_{split}"] == pytest.approx(flipped.mean())
        if kind == "symmetric":
            assert abs(flipped.mean() - 0.4) < 0.06
            # every other class receives flips, about equally (about 53 each among 1,200 training labels)
            counts = np.bincount((after[flipped] - before[flipped]) % 10, minlength=10)
            assert counts[0] == 0 and counts[1:].min() > (0.5 if split == "train" else 0.2) * counts[1:].mean()
        elif kind == "pairflip":
            assert abs(flipped.mean() - 0.4) < 0.06
            np.testing.assert_array_equal(after[flipped], (before[flipped] + 1) % 10)
        else:  # only the digit confusions 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1, each at the rate
            expected = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
            assert set(before[flipped]) <= set(expected)
            for source, target in expected.items():
                mask = flipped & (before == source)
                assert np.all(after[mask] == target)
                assert abs(mask.sum() / (before == source).sum() - 0.4) < 0.15
    again = as_dataset("mnist1d", args={"n_samples": 2000, "label_noise": {"kind": kind, "rate": 0.4, "seed": 1}})
    np.testing.assert_array_equal(again.y_train, noisy.y_train)
    other = as_dataset("mnist1d", args={"n_samples": 2000, "label_noise": {"kind": kind, "rate": 0.4, "seed": 2}})
    assert not np.array_equal(other.y_train, noisy.y_train)


def test_label_noise_on_the_users_own_binary_data_and_a_custom_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    y = (x[:, 0] > 0).astype(float)
    noisy = as_dataset((x, y, x, y, x, y), args={"label_noise": {"kind": "symmetric", "rate": 0.2}})
    assert abs(np.mean(noisy.y_train != y) - 0.2) < 0.03 and np.array_equal(noisy.y_test, y.astype("float32"))
    assert noisy.y_train.shape == y.shape
    missed = as_dataset((x, y, x, y), args={"label_noise": {"kind": "asymmetric", "rate": 0.5}})
    assert np.all(missed.y_train[y == 0] == 0)  # default binary map: positives are missed, never invented
    assert abs(missed.y_train[y == 1].mean() - 0.5) < 0.05
    three = np.eye(3)[rng.integers(0, 3, 3000)]
    mapped = as_dataset((x[:3000], three, x[:3000], three),
                        args={"label_noise": {"kind": "asymmetric", "rate": 0.3, "map": {0: 2}}})
    moved = _labels(mapped.y_train) != _labels(three)
    assert set(_labels(three)[moved]) == {0} and set(_labels(mapped.y_train)[moved]) == {2}


@pytest.mark.parametrize(("noise", "match"), [
    ("sym", r"data\.args\.label_noise: must be a mapping"),
    ({"kind": "sym", "rate": 0.2}, r"data\.args\.label_noise\.kind: must be one of symmetric, asymmetric, pairflip, but got 'sym'"),
    ({"kind": "symmetric", "rate": 1.2}, r"data\.args\.label_noise\.rate: must be a number in \[0, 1\), but got 1\.2"),
    ({"kind": "symmetric", "rate": 0.2, "sead": 1}, r"data\.args\.label_noise\.sead: unknown key"),
    ({"kind": "pairflip", "rate": 0.2, "map": {1: 2}}, r"data\.args\.label_noise\.map: applies to kind asymmetric only"),
    ({"kind": "asymmetric", "rate": 0.2, "map": {1: 12}}, r"data\.args\.label_noise\.map: class 12 does not exist"),
])
def test_label_noise_errors_name_the_key(noise, match):
    with pytest.raises(ConfigError, match=match):
        as_dataset("mnist1d", args={"n_samples": 200, "label_noise": noise})


def test_label_noise_is_refused_on_regression_and_checked_when_the_space_loads():
    from aloss_tune.space import SearchSpace

    with pytest.raises(ConfigError, match=r"label noise applies to classification data, but "
                                          r"'contaminated_regression' is regression"):
        as_dataset("contaminated_regression", args={"label_noise": {"kind": "symmetric", "rate": 0.1}})
    with pytest.raises(ConfigError, match=r"space\.yaml: data\.args\.label_noise\.rate: must be a number"):
        SearchSpace.from_dict({"study": "s", "data": {"name": "mnist1d", "args": {
            "label_noise": {"kind": "symmetric", "rate": "high"}}}, "loss": ["cce"]}, source="space.yaml")


@pytest.mark.parametrize("noise", ["heavy_tailed", "proportional", "gross"])
def test_friedman_regression_has_noise_only_in_train_and_val(noise: str):
    from sklearn.datasets import make_friedman1

    data = as_dataset("friedman_regression", args={"n_samples": 600, "noise": noise, "seed": 4})
    _, f = make_friedman1(n_samples=600, n_features=10, noise=0.0, random_state=4)
    # the test targets are noise-free function values; train and validation ones are not
    assert np.all(np.isin(np.round(data.y_test, 4), np.round(f.astype("float32"), 4)))
    residual = np.abs(data.y_train - np.median(data.y_train))
    assert data.x_train.shape == (360, 10) and len(data.y_val) == len(data.y_test) == 120
    if noise == "gross":
        assert data.info["outliers_train"] == pytest.approx(0.3 * 360, abs=30)
        assert np.std(data.y_train) > 2 * np.std(data.y_test)
    else:
        assert residual.max() > 3 * np.std(data.y_test)  # heavy tails


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
    counts = result.counts
    assert counts["complete"] + counts["dead"] == 2 and counts["pruned"] == counts["failed"] == 0
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
