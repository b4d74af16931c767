"""Models with MVRegularization for the strategy-equivalence harness (importable by workers)."""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.layers import MVRegularization

LAMBDA = 20.0  # large enough that the penalty visibly steers training


def _cnn(wrap, synchronized_batch_norm: bool = False) -> keras.Model:
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
    return _cnn(lambda layer: MVRegularization(layer, lambda_=LAMBDA))


def cnn_mv_per_example():
    return _cnn(lambda layer: MVRegularization(layer, lambda_=LAMBDA * 1e-3, per_example=True, include_bias=True))


def cnn_mv_synchronized_batch_norm():
    return _cnn(lambda layer: MVRegularization(layer, lambda_=LAMBDA), synchronized_batch_norm=True)


class NaiveMV(keras.layers.Wrapper):
    """The penalty with each replica's own input energy: what a plain add_loss does."""

    def call(self, inputs):
        energy = ops.sum(ops.square(inputs))
        self.add_loss(0.5 * LAMBDA * ops.sum(ops.square(self.layer.kernel)) / (energy + 1e-7))
        return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def cnn_naive_mv():
    return _cnn(NaiveMV)
