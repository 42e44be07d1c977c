"""Factories of the basic loss family (baselines, Huber, weighted, class-weighted, focal, Poly-1, dynamic alpha)."""

from __future__ import annotations

import keras

from aloss_tune.factories import LossFactory, register_loss_factory

register_loss_factory(LossFactory("mse", lambda: keras.losses.MeanSquaredError(), tasks=("regression",),
                                  description="mean squared error (baseline)"))
