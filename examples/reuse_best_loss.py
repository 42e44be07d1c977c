"""Reuse the winning loss in production code: a fresh model, trained, saved and reloaded.

    python examples/own_model.py        # runs the study this example reads
    python examples/reuse_best_loss.py

The loss rebuilds from the study storage with its exact config. Losses with learned parameters
(``adaptive_barron``) or a weight penalty (``loss.l1``/``loss.l2``) are applied with one line,
``aloss_tune.attach``; for any other loss it returns the model unchanged. The saved ``.keras`` file reloads
with no ``custom_objects``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
from own_model import build_model, make_data

import aloss_tune


def main() -> None:
    loss = aloss_tune.load_best_loss("own_model_example", storage="sqlite:///examples.db")
    params = aloss_tune.load_best_params("own_model_example", storage="sqlite:///examples.db")
    print("best loss:", loss.get_config())

    x, y, x_val, y_val = make_data(seed=1)  # new data, same kind
    keras.utils.set_random_seed(0)
    model = aloss_tune.attach(build_model(params), loss)
    model.compile(optimizer=keras.optimizers.Adam(params.get("optimizer.learning_rate", 1e-3)), loss=loss,
                  metrics=["mae"])
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    before = model.evaluate(x_val, y_val, verbose=0, return_dict=True)

    path = Path(tempfile.mkdtemp()) / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # no custom_objects needed
    after = reloaded.evaluate(x_val, y_val, verbose=0, return_dict=True)
    print(f"val_mae before saving {before['mae']:.4f}, after reloading {after['mae']:.4f}")
    np.testing.assert_allclose(after["mae"], before["mae"], rtol=1e-5)
    print("learned loss parameters:", aloss_tune.learned_values(reloaded) or "none")


if __name__ == "__main__":
    main()
