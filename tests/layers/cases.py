"""Models and data with the layers of lepton_keras for the strategy-equivalence harness (importable by workers)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from lepton_keras.layers import MVRegularization, StochasticDepth, WeightNormalization

CLASSES = 4
LAMBDA = 20.0  # large enough that the MV penalty visibly steers training


def normal(*shape, seed=0, mean=0.0):
    """A float32 array of standard normal draws plus `mean`, from `seed`."""
    return (np.random.default_rng(seed).normal(size=shape) + mean).astype(np.float32)


def gaussian_images(count: int, seed: int):
    """`count` 8x8x3 images with a nonzero mean (so the data init has a shift to remove) and one-hot labels."""
    rng = np.random.default_rng(seed)
    images = (2.0 * rng.normal(size=(count, 8, 8, 3)) + 0.5).astype(np.float32)
    return images, np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, count)]


# WeightNormalization and StochasticDepth, on gaussian_images


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


# MVRegularization, on tests.support.cases:cifar10_sample


def _mv_cnn(wrap, synchronized_batch_norm: bool = False) -> keras.Model:
    layers = [keras.Input((32, 32, 3)), wrap(keras.layers.Conv2D(8, 3, activation="relu"))]
    if synchronized_batch_norm:
        layers.append(keras.layers.BatchNormalization(synchronized=True))
    layers += [
        keras.layers.MaxPooling2D(4),
        keras.layers.Flatten(),
        wrap(keras.layers.Dense(10, activation="softmax")),
    ]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")
    return model


def cnn_mv():
    return _mv_cnn(lambda layer: MVRegularization(layer, lambda_=LAMBDA))


def cnn_mv_per_example():
    return _mv_cnn(lambda layer: MVRegularization(layer, lambda_=LAMBDA * 1e-3, per_example=True, include_bias=True))


def cnn_mv_synchronized_batch_norm():
    return _mv_cnn(lambda layer: MVRegularization(layer, lambda_=LAMBDA), synchronized_batch_norm=True)


class NaiveMV(keras.layers.Wrapper):
    """The penalty with each replica's own input energy: what a plain add_loss does."""

    def call(self, inputs):
        energy = ops.sum(ops.square(inputs))
        self.add_loss(0.5 * LAMBDA * ops.sum(ops.square(self.layer.kernel)) / (energy + 1e-7))
        return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def cnn_naive_mv():
    return _mv_cnn(NaiveMV)
