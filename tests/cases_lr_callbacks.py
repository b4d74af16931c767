"""Models, data and callbacks with the learning-rate callbacks for the strategy-equivalence harness.

Importable by worker processes. `model_options` reach both `model_fn` and `callbacks_fn`.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from lepton_keras.callbacks.divergence_guard import DivergenceGuard
from lepton_keras.callbacks.monitor import LearningRateMonitor
from lepton_keras.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from lepton_keras.callbacks.time_stopping import TimeStopping
from lepton_keras.callbacks.warmup import LearningRateWarmup

FEATURES = 4
POISONED_ROW = 40  # in batch 2 for the harness's global batch of 16
POISON_SCALE = 1e3  # one row 1000 times too large: a finite loss spike and a wild update


def regression(count: int, seed: int):
    """x ~ N(0, 1), y = x w + 0.1 noise, float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, FEATURES)).astype(np.float32)
    y = x @ rng.normal(size=(FEATURES, 1)) + 0.1 * rng.normal(size=(count, 1))
    return x, y.astype(np.float32)


def poisoned_regression(count: int, seed: int):
    """`regression` with one corrupt row (x 1000 times too large) in batch 2."""
    x, y = regression(count, seed)
    x[POISONED_ROW] *= POISON_SCALE
    return x, y


def small_mlp(*, schedule: bool = False, optimizer: str = "sgd", **_):
    """Dense(8, relu) -> Dense(1), MSE; SGD(0.05, momentum 0.9) or Adam(0.01), on a number or a decay schedule."""
    learning_rate = 0.05 if optimizer == "sgd" else 0.01
    if schedule:
        learning_rate = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=4, decay_rate=0.8)
    model = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    if optimizer == "sgd":
        model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9), loss="mse")
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def linear_model(learning_rate, momentum=0.0):
    """Dense(1) from fixed starting weights, SGD on the mean squared error."""
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1)])
    rng = np.random.default_rng(42)
    model.set_weights([rng.normal(size=(FEATURES, 1)).astype(np.float32), np.array([0.3], np.float32)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum), loss="mse")
    return model


BATCH = 8


def fit(model, x, y, callbacks, epochs=1, batch_size=BATCH):
    """`model.fit` on the batches in order, silently."""
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)


def optimizer_state(optimizer) -> list[np.ndarray]:
    """Every optimizer variable but a variable learning rate (iterations, slots, a wrapper's own state)."""
    learning_rate = optimizer.learning_rate
    return [np.array(v) for v in optimizer.variables if v is not learning_rate]


class Recorder(keras.callbacks.Callback):
    """Records the learning rate before each batch and the weights and optimizer state after it (and at the start)."""

    def __init__(self):
        super().__init__()
        self.learning_rates, self.states, self.batch_logs = [], [], []

    def _state(self):
        return [np.array(w) for w in self.model.get_weights()] + optimizer_state(self.model.optimizer)

    def on_train_begin(self, logs=None):
        self.states.append(self._state())

    def on_train_batch_begin(self, batch, logs=None):
        self.learning_rates.append(float(np.array(self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.states.append(self._state())
        self.batch_logs.append(dict(logs))


def warmup_callbacks(**_):
    return [LearningRateWarmup(1.5, initial_factor=0.25)]


def plateau_callbacks(**_):
    # The loss falls, so in "max" mode no epoch improves on the first: a reduction at each later epoch,
    # a decision no rounding difference between strategies can flip.
    return [ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=1, min_delta=0.0)]


def guard_callbacks(**_):
    return [DivergenceGuard(spike_factor=10.0, window=5, lr_factor=0.5, snapshot_every=1)]


def monitor_callbacks(**_):
    return [LearningRateMonitor()]


class FakeClock:
    """A clock that advances `tick` seconds at each reading."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


TIME_BUDGET_SECONDS = 10.5  # with one tick per batch: training stops after 11 batches


def worker_index() -> int:
    """This process's task index in TF_CONFIG (0 without a cluster)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return int(config.get("task", {}).get("index", 0))


def combined_callbacks(**_):
    """Warmup, monitor, plateau, guard and a time budget; worker 1's clock runs 100 times faster than the chief's."""
    clock = FakeClock(1.0 if worker_index() == 0 else 100.0)
    return [
        LearningRateWarmup(1.0, initial_factor=0.5),
        LearningRateMonitor(),
        ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=1, min_delta=0.0),
        DivergenceGuard(spike_factor=10.0, window=5, lr_factor=0.5, snapshot_every=1),
        TimeStopping(TIME_BUDGET_SECONDS, check="batch", clock=clock),
    ]
