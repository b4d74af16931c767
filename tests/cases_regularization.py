"""Models and data with the regularization layers for the strategy-equivalence harness (importable by workers)."""

from __future__ import annotations

import keras
import numpy as np

from lepton_keras.layers import StochasticDepth, WeightNormalization

CLASSES = 4


def gaussian_images(count: int, seed: int):
    """`count` 8x8x3 images with a nonzero mean (so the data init has a shift to remove) and one-hot labels."""
    rng = np.random.default_rng(seed)
    images = (2.0 * rng.normal(size=(count, 8, 8, 3)) + 0.5).astype(np.float32)
    return images, np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, count)]


def _weight_normalized_cnn(residual_block: bool) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = WeightNormalization(keras.layers.Conv2D(6, 3, activation="relu"))(inputs)
    if residual_block:
        residual = WeightNormalization(keras.layers.Conv2D(6, 3, padding="same", activation="tanh"))(x)
        x = StochasticDepth(0.5, seed=7)([x, residual])
    x = keras.layers.Flatten()(x)
    outputs = WeightNormalization(keras.layers.Dense(CLASSES, activation="softmax"))(x)
    return keras.Model(inputs, outputs)


def wn_cnn_init_only():
    """Weight-normalized CNN whose one step only runs the data-dependent init (learning rate 0)."""
    model = _weight_normalized_cnn(residual_block=False)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
    return model


def wn_stochastic_depth_cnn_adam():
    """Weight-normalized CNN with a residual block under stochastic depth, trained with Adam."""
    model = _weight_normalized_cnn(residual_block=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    return model
