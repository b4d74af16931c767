"""Models, data and callbacks with the learning-rate schedules for the strategy-equivalence harness."""

from __future__ import annotations

import keras
import numpy as np

from lepton_keras.callbacks.cycle_momentum import CycleMomentum
from lepton_keras.schedules.cyclical import CyclicalLearningRate
from lepton_keras.schedules.one_cycle import OneCycle

ONE_CYCLE = {"maximal_learning_rate": 0.05, "total_steps": 6, "pct_start": 0.5}


def regression_data(count: int, seed: int):
    """`count` rows of 5 Gaussian features and 2 targets from a fixed linear map plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 2)) + 0.1 * rng.normal(size=(count, 2))).astype(np.float32)
    return x, y


def _dense_model() -> keras.Model:
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])


def dense_sgd_cyclical():
    """A two-layer Dense model, SGD with momentum under a triangular2 cyclical learning rate."""
    model = _dense_model()
    schedule = CyclicalLearningRate(0.01, 0.1, step_size=2, mode="triangular2")
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss="mse")
    return model


def dense_sgd_one_cycle():
    """The same model, SGD under OneCycle; `one_cycle_momentum` cycles its momentum."""
    model = _dense_model()
    model.compile(optimizer=keras.optimizers.SGD(OneCycle(**ONE_CYCLE), momentum=0.9), loss="mse")
    return model


def one_cycle_momentum():
    return [CycleMomentum(OneCycle(**ONE_CYCLE))]
