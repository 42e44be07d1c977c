"""Reuse the best label-noise loss on your own model.

    aloss-tune tune search_spaces/label_noise.yaml        # the study: 20 trials, about 10 minutes on 2 cores
    python examples/label_noise.py                        # reuse its best loss on a 1-D CNN

    python examples/label_noise.py --quick                # or both at once on a small budget (a smoke run)

The study searched the label-noise losses with the built-in MLP. Here its best loss is rebuilt from the study
storage and trained, unchanged, with *your* model, a small 1-D convolutional network, on the same noisy
labels; plain cross-entropy trains the same network for comparison, and both are scored on the clean test
labels. The saved model reloads with the loss and its config exactly.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import keras
import numpy as np

import aloss_tune
from aloss_tune.datasets import as_dataset

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "label_noise.yaml"
STORAGE = "sqlite:///aloss_tune.db"


def conv_net(classes: int = 10) -> keras.Model:
    """Your own model: a small 1-D CNN for MNIST-1D's 40-step signals."""
    return keras.Sequential([
        keras.Input((40,)),
        keras.layers.Reshape((40, 1)),
        keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
        keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(classes, activation="softmax"),
    ])


def clean_accuracy(loss: keras.losses.Loss, data, epochs: int) -> tuple[float, keras.Model]:
    keras.utils.set_random_seed(0)
    model = aloss_tune.attach(conv_net(), loss)  # unchanged unless the loss needs its model
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=128, verbose=0)
    predicted = np.argmax(model.predict(data.x_test, verbose=0), axis=-1)
    return float(np.mean(predicted == np.argmax(data.y_test, axis=-1))), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run a 4-trial study on 2,000 signals first")
    args = parser.parse_args()
    space = aloss_tune.SearchSpace.from_yaml(SPACE)
    samples, epochs = (2000, 4) if args.quick else (10000, 30)
    if args.quick:
        raw = dict(space.raw)
        raw["data"] = {"name": "mnist1d", "args": {**raw["data"]["args"], "n_samples": samples}}
        raw["training"] = {**raw["training"], "epochs": 3}
        aloss_tune.tune(raw, n_trials=4, storage=STORAGE, tracking=False, progress=False)

    loss = aloss_tune.load_best_loss("label_noise", storage=STORAGE)
    print("best loss:", loss.get_config())
    data = as_dataset("mnist1d", args={"n_samples": samples, "label_noise": {"kind": "symmetric", "rate": 0.6}})
    robust, model = clean_accuracy(loss, data, epochs)
    plain, _ = clean_accuracy(keras.losses.CategoricalCrossentropy(), data, epochs)
    print(f"clean-test accuracy of the CNN: best loss {robust:.3f}, cross-entropy {plain:.3f}")

    path = Path(tempfile.mkdtemp()) / "cnn.keras"
    aloss_tune.export(model).save(path)  # the plain network, for serving
    reloaded = keras.saving.load_model(path)
    same = np.allclose(reloaded.predict(data.x_test[:8], verbose=0), model.predict(data.x_test[:8], verbose=0))
    print(f"reloaded from {path.name}: predictions {'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
