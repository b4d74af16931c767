"""Models and data for the SAM/ASAM strategy-equivalence tests (importable by worker processes)."""

from __future__ import annotations

import keras
import numpy as np

from lepton_keras.optimizers.sam import SharpnessAwareModel

FEATURES, OUTPUTS = 4, 3
_start = np.random.default_rng(1234)
INITIAL_KERNEL = _start.normal(size=(FEATURES, OUTPUTS)).astype(np.float32)
INITIAL_BIAS = _start.normal(size=(OUTPUTS,)).astype(np.float32)


def linear_data(count: int, seed: int):
    """`count` rows of a noisy linear map: x ~ N(0, 1)^4, y = x A + c + noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, FEATURES))
    y = x @ rng.normal(size=(FEATURES, OUTPUTS)) + rng.normal(size=OUTPUTS) + 0.1 * rng.normal(size=(count, OUTPUTS))
    return x.astype(np.float32), y.astype(np.float32)


def linear_model() -> keras.Model:
    """Dense(3) on 4 features, starting from INITIAL_KERNEL and INITIAL_BIAS."""
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(
                OUTPUTS,
                kernel_initializer=keras.initializers.Constant(INITIAL_KERNEL),
                bias_initializer=keras.initializers.Constant(INITIAL_BIAS),
            ),
        ]
    )


def sam_linear_sgd(rho=0.5, adaptive=False, eta=0.01, learning_rate=2.0**-4, momentum=0.0, jit_compile=False,
                   loss_scale=False):  # fmt: skip
    """The linear model under SAM or ASAM, compiled with SGD (in a LossScaleOptimizer if asked) and MSE."""
    model = SharpnessAwareModel(linear_model(), rho=rho, adaptive=adaptive, eta=eta)
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**10)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    return model


def regularized_model(dropout=True, synchronized=False) -> keras.Model:
    """Dense -> BatchNormalization -> [Dropout] -> Dense, with an L2 kernel penalty: state and randomness.

    Dropout draws per replica and BatchNormalization normalises per replica unless
    synchronized, so only the model without dropout, synchronized, trains the same on N replicas.
    """
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            # No bias before BatchNormalization: its gradient is rounding noise, which Adam would amplify.
            keras.layers.Dense(6, use_bias=False, kernel_initializer=keras.initializers.GlorotUniform(seed=1),
                               kernel_regularizer=keras.regularizers.L2(0.01)),  # fmt: skip
            keras.layers.BatchNormalization(synchronized=synchronized),
            *([keras.layers.Dropout(0.25, seed=3)] if dropout else []),
            keras.layers.Dense(OUTPUTS, kernel_initializer=keras.initializers.GlorotUniform(seed=2)),
        ]
    )


def sam_regularized_adam(rho=0.5, adaptive=True, dropout=True, synchronized=False):
    """The regularized model under SAM or ASAM, compiled with Adam and MSE."""
    model = SharpnessAwareModel(regularized_model(dropout, synchronized), rho=rho, adaptive=adaptive)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    return model
