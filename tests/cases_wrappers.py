"""Models and data for the optimizer-wrapper tests (importable by worker processes)."""

from __future__ import annotations

import numpy as np


def dense_model(optimizer: str = "lookahead_sgd", options: dict | None = None, batch_norm: bool = False):
    """A small tanh MLP (8 -> 16 -> 1) compiled with `lepton_keras.optimizers.get(optimizer, **options)`."""
    import keras

    from lepton_keras.optimizers.registry import get

    layers = [keras.Input((8,)), keras.layers.Dense(16, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(1, name="head"))
    model = keras.Sequential(layers)
    model.compile(optimizer=get(optimizer, **(options or {})), loss="mse")
    return model


def regression_data(count: int, seed: int):
    """`count` rows of 8 normal features and the target 3 x_0 + 1 (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 8)).astype("float32")
    return x, (x[:, :1] * 3 + 1).astype("float32")
