"""Models, data, callbacks and checks shared by the callback tests, and the ones the strategy harness imports by
name ("tests.callbacks.cases:..."; importable by worker processes). `model_options` reach both `model_fn` and
`callbacks_fn`. The data is tests.support.cases.regression_data: FEATURES inputs, TARGETS outputs."""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from lepton_keras.callbacks.cycle_momentum import CycleMomentum
from lepton_keras.callbacks.divergence_guard import DivergenceGuard
from lepton_keras.callbacks.monitor import LearningRateMonitor
from lepton_keras.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from lepton_keras.callbacks.time_stopping import TimeStopping
from lepton_keras.callbacks.warmup import LearningRateWarmup
from lepton_keras.schedules.one_cycle import OneCycle
from tests.callbacks.reference.learning_rate import sgd_linear_regression
from tests.schedules.cases import dense_model
from tests.support.cases import regression_data
from tests.support.harness import TrainingCase

FEATURES, TARGETS = 8, 2
POISONED_ROW = 40  # in batch 2 for the harness's global batch of 16
POISON_SCALE = 1e3  # one row 1000 times too large: a finite loss spike and a wild update


def poisoned_regression(count: int, seed: int):
    """`regression_data` with one corrupt row (x 1000 times too large) in batch 2."""
    x, y = regression_data(count, seed)
    x[POISONED_ROW] *= POISON_SCALE
    return x, y


def small_mlp(*, schedule: bool = False, optimizer: str = "sgd", **_):
    """Dense(8, relu) -> Dense(TARGETS), MSE; SGD(0.05, momentum 0.9) or Adam(0.01), on a number or a decay schedule."""
    learning_rate = 0.05 if optimizer == "sgd" else 0.01
    if schedule:
        learning_rate = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=4, decay_rate=0.8)
    model = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(TARGETS)]
    )
    if optimizer == "sgd":
        model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9), loss="mse")
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def linear_model(learning_rate, momentum=0.0):
    """Dense(TARGETS) from fixed starting weights, SGD on the mean squared error."""
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(TARGETS)])
    rng = np.random.default_rng(42)
    model.set_weights([rng.normal(size=(FEATURES, TARGETS)).astype(np.float32), np.full(TARGETS, 0.3, np.float32)])
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


def assert_sgd_used(model_start, model, x, y, learning_rates):
    """The trained weights of `linear_model` equal float64 SGD with exactly these learning rates."""
    kernel, bias, _ = sgd_linear_regression(x, y, *model_start, learning_rates, BATCH)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_weights()[1], bias, rtol=1e-5, atol=1e-6)


def exponential_decay(steps, initial, decay_steps, rate):
    return initial * rate ** (np.arange(steps) / decay_steps)


def assert_round_trip(callback):
    """The callback comes back from keras serialization with its type and config."""
    config = callback.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(restored) is type(callback) and restored.get_config() == config


def harness_case(callbacks_fn, data_fn="tests.support.cases:regression_data", epochs=3, **options):
    """small_mlp(**options) trained 4 steps per epoch with callbacks_fn(**options) of this module."""
    return TrainingCase(
        "tests.callbacks.cases:small_mlp", data_fn, steps=4, epochs=epochs, model_options=options,
        callbacks_fn=f"tests.callbacks.cases:{callbacks_fn}",
    )  # fmt: skip


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


ONE_CYCLE = {"maximal_learning_rate": 0.05, "total_steps": 6, "pct_start": 0.5}


def dense_sgd_one_cycle():
    """tests.schedules.cases.dense_model, SGD under OneCycle; `one_cycle_momentum` cycles its momentum."""
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(OneCycle(**ONE_CYCLE), momentum=0.9), loss="mse")
    return model


def one_cycle_momentum():
    return [CycleMomentum(OneCycle(**ONE_CYCLE))]
