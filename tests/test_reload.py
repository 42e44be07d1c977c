"""A model saved as it was trained reloads once ``import aloss_tune`` has registered our classes, and not
before, with the error the README quotes; the export-ready copy needs nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

import aloss_tune

README = Path(__file__).resolve().parents[1] / "README.md"

LOAD = """
import json, sys, keras
out = {}
for name in ("huber", "attached", "exported"):
    for compile in (True, False):
        try:
            keras.saving.load_model(f"{name}.keras", compile=compile)
            out[f"{name} compile={compile}"] = "loaded"
        except TypeError as exc:
            out[f"{name} compile={compile}"] = str(exc)
out["imported before"] = [m for m in sys.modules if m.startswith("aloss_tune")]
import aloss_tune
for name in ("huber", "attached"):
    model = keras.saving.load_model(f"{name}.keras")
    out[f"{name} after import"] = [type(model).__name__, keras.saving.serialize_keras_object(model.loss)]
print(json.dumps(out))
"""


def test_a_trained_model_reloads_after_import_aloss_tune_and_the_readme_says_so(tmp_path):
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    models = {}
    for name, params in (("huber", {"loss": "huber", "loss.delta": 1.5}), ("attached", {"loss": "adaptive_barron"})):
        loss = aloss_tune.build_loss(params)
        model = aloss_tune.attach(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]), loss)
        model.compile(optimizer="adam", loss=loss)
        model.fit(x, x[:, :1], epochs=1, verbose=0)
        model.save(tmp_path / f"{name}.keras")
        models[name] = model
    aloss_tune.export(models["huber"]).save(tmp_path / "exported.keras")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", LOAD], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3",
                                            "PYTHONPATH": str(Path(aloss_tune.__file__).parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["imported before"] == []
    missing = out["huber compile=True"]
    assert missing.startswith("Could not locate class 'Huber'. Make sure custom classes and functions are "
                              "decorated with ")
    assert "'registered_name': 'aloss_tune>Huber'" in missing
    assert out["huber compile=False"] == "loaded"  # without its loss
    assert out["attached compile=True"].startswith("Could not locate class 'LossModel'.")
    assert out["attached compile=False"].startswith("Could not locate class 'LossModel'.")
    assert out["exported compile=True"] == out["exported compile=False"] == "loaded"
    for name, model in models.items():
        loaded_class, loss = out[f"{name} after import"]
        assert loaded_class == type(model).__name__
        assert loss == json.loads(json.dumps(keras.saving.serialize_keras_object(model.loss)))

    # The README says all this next to export().
    text = " ".join(README.read_text(encoding="utf-8").split())
    paragraph = text[text.index("For serving, `aloss_tune.export(model)`"):text.index("### Barron's")]
    for claim in ("`import aloss_tune`", "`TypeError: Could not locate class 'Huber'. Make sure custom classes and "
                  "functions are decorated with ...`", "'aloss_tune>Huber'",
                  "`keras.saving.load_model(path, compile=False)`"):
        assert claim in paragraph, claim
