"""The table of schedule configurations with their float64 references, the checks every schedule gets, a linear
problem trained under a schedule, and the models the strategy harness imports ("tests.schedules.cases:...")."""

from __future__ import annotations

import functools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.schedules.cyclical import CyclicalLearningRate
from lepton_keras.schedules.inverse_sqrt import InverseSquareRootDecay
from lepton_keras.schedules.one_cycle import OneCycle
from lepton_keras.schedules.warmup import Warmup
from lepton_keras.schedules.warmup_stable_decay import WarmupStableDecay
from tests.schedules.reference import cyclical, inverse_sqrt, one_cycle, warmup, warmup_stable_decay

RTOL = 1e-6  # computed in float64, rounded to float32
FLOAT32_TARGET_ATOL = 1e-7  # times the peak: Keras' CosineDecay, wrapped by Warmup, computes in float32

cosine = functools.partial(keras.optimizers.schedules.CosineDecay, 0.1, 12)
cosine_reference = functools.partial(warmup.cosine_decay, 0.1, 12)

# name -> (schedule factory, float64 reference of one step, steps checked: boundaries and beyond included)
SCHEDULES = {
    "warmup_linear_constant": (
        lambda: Warmup(0.3, 5),
        lambda t: warmup.warmup(lambda _: 0.3, 5, t),
        range(0, 12),
    ),
    "warmup_linear_cosine": (
        lambda: Warmup(cosine(), 4, start_factor=0.2),
        lambda t: warmup.warmup(cosine_reference, 4, t, start_factor=0.2),
        range(0, 16),
    ),
    "warmup_linear_cosine_offset": (
        lambda: Warmup(cosine(), 4, start_factor=0.2, offset_target=True),
        lambda t: warmup.warmup(cosine_reference, 4, t, start_factor=0.2, offset_target=True),
        range(0, 20),
    ),
    "warmup_exponential": (
        lambda: Warmup(0.3, 6, start_factor=0.01, kind="exponential"),
        lambda t: warmup.warmup(lambda _: 0.3, 6, t, start_factor=0.01, kind="exponential"),
        range(0, 10),
    ),
    "warmup_exponential_default_start_cosine": (
        lambda: Warmup(cosine(), 3, kind="exponential"),
        lambda t: warmup.warmup(cosine_reference, 3, t, start_factor=0.01, kind="exponential"),
        range(0, 15),
    ),
    "warmup_none_cosine": (lambda: Warmup(cosine(), 0), cosine_reference, range(0, 14)),
    **{
        f"cyclical_{mode}_{step_size}": (
            functools.partial(CyclicalLearningRate, 0.01, 0.1, step_size, mode=mode, gamma=gamma),
            functools.partial(cyclical.cyclical, 0.01, 0.1, step_size, mode=mode, gamma=gamma),
            range(0, int(6 * step_size) + 2),  # three cycles and a bit
        )
        for mode, gamma in (("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.97))
        for step_size in (4, 2.5)
    },
    "cyclical_falling": (
        lambda: CyclicalLearningRate(0.1, 0.02, 3),
        functools.partial(cyclical.cyclical, 0.1, 0.02, 3),
        range(0, 20),
    ),
    **{
        f"one_cycle_{anneal}_{pct_start}": (
            functools.partial(OneCycle, 0.4, 20, pct_start=pct_start, anneal=anneal),
            lambda t, pct_start=pct_start, anneal=anneal: one_cycle.one_cycle(
                0.4, 20, t, pct_start=pct_start, anneal=anneal
            )[0],
            range(0, 25),
        )
        for anneal in ("cos", "linear")
        for pct_start in (0.3, 0.25)
    },
    "one_cycle_factors": (
        lambda: OneCycle(1.0, 13, pct_start=0.4, div_factor=10.0, final_div_factor=100.0),
        lambda t: one_cycle.one_cycle(1.0, 13, t, pct_start=0.4, div_factor=10.0, final_div_factor=100.0)[0],
        range(0, 16),
    ),
    **{
        f"wsd_{decay}": (
            functools.partial(WarmupStableDecay, 0.2, 4, 5, 6, final_learning_rate=0.01, decay=decay),
            functools.partial(warmup_stable_decay.warmup_stable_decay, 0.2, 4, 5, 6, final=0.01, decay=decay),
            range(0, 19),
        )
        for decay in ("linear", "cosine", "sqrt")
    },
    "wsd_no_warmup_no_decay": (
        lambda: WarmupStableDecay(0.2, 0, 3, 0, final_learning_rate=0.05),
        lambda t: warmup_stable_decay.warmup_stable_decay(0.2, 0, 3, 0, t, final=0.05),
        range(0, 6),
    ),
    "inverse_sqrt_transformer": (
        lambda: InverseSquareRootDecay(4000, d_model=512),
        lambda t: inverse_sqrt.transformer(512, 4000, t),
        [*range(0, 5), 999, 3998, 3999, 4000, 4001, 10_000, 100_000, 1_000_000],
    ),
    "inverse_sqrt_scaled": (
        lambda: InverseSquareRootDecay(8, d_model=64, scale=2.0),
        lambda t: inverse_sqrt.transformer(64, 8, t, scale=2.0),
        range(0, 30),
    ),
    "inverse_sqrt_peak": (
        lambda: InverseSquareRootDecay(8, peak_learning_rate=1e-3),
        lambda t: inverse_sqrt.inverse_sqrt_peak(1e-3, 8, t),
        range(0, 30),
    ),
}


def schedule_names(prefix: str) -> list[str]:
    """The names in SCHEDULES of one schedule class's configurations."""
    return sorted(name for name in SCHEDULES if name.startswith(prefix))


def traced_values(schedule, steps, dtype="int64"):
    """The schedule at each step, computed in an XLA-compiled tf.function from a step tensor."""
    function = tf.function(lambda step: schedule(step), jit_compile=True, autograph=False)
    values = [function(tf.constant(step, dtype)) for step in steps]
    assert all(value.dtype == tf.float32 for value in values)
    return np.array([float(value) for value in values])


def assert_matches_reference(actual, expected, atol_fraction=1e-9):
    """Within RTOL of the reference, or atol_fraction of its peak: learning rates are far below 1, where the
    suite's max(1, |expected|) convention (tests/support/numerics.py) would check nothing."""
    expected = np.asarray(expected, np.float64)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol_fraction * np.max(np.abs(expected)))


def assert_matches_the_reference_in_an_xla_function(name):
    """SCHEDULES[name] equals its reference from int64 and float32 step tensors in XLA, and from Python ints."""
    make, expected, steps = SCHEDULES[name]
    schedule = make()
    expected_values = [expected(step) for step in steps]
    atol_fraction = FLOAT32_TARGET_ATOL if "cosine" in name and name.startswith("warmup") else 1e-9
    assert_matches_reference(traced_values(schedule, steps), expected_values, atol_fraction)
    assert_matches_reference(traced_values(schedule, steps, "float32"), expected_values, atol_fraction)
    eager = np.array([float(schedule(step)) for step in steps])  # a Python int, as a user may call it
    assert_matches_reference(eager, expected_values, atol_fraction)


def assert_round_trips_through_serialize(name):
    """SCHEDULES[name] comes back from keras serialize/deserialize and from_config with its config and values."""
    make, _, steps = SCHEDULES[name]
    schedule = make()
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert type(schedule).from_config(schedule.get_config()).get_config() == schedule.get_config()
    np.testing.assert_array_equal(traced_values(restored, steps), traced_values(schedule, steps))


# A linear problem trained full-batch, so the weights can be checked against a float64 optimizer.

FEATURES = 3
ROWS = 8


def linear_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = rng.normal(size=(ROWS, 1)).astype(np.float32)
    kernel = (0.1 * rng.normal(size=(FEATURES, 1))).astype(np.float32)
    return x, y, kernel


def linear_model(optimizer, kernel):
    """y = x w, trained on the mean squared error, whose gradient is 2 / N x^T (x w - y)."""
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=optimizer, loss="mse")
    model.layers[0].kernel.assign(kernel)
    return model


def mse_gradient(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return lambda w: 2.0 / len(x) * x.T @ (x @ w - y)


def fit_full_batch(model, x, y, steps, callbacks=()):
    model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0, callbacks=list(callbacks))
    return model.layers[0].kernel.numpy()


def assert_keras_save_and_load_keep_the_schedule(name, tmp_path):
    """A `.keras` save after 3 steps under SCHEDULES[name] reloads with the schedule and step, and resumes alike."""
    make, expected, _ = SCHEDULES[name]
    x, y, kernel = linear_problem()
    model = linear_model(keras.optimizers.SGD(make(), momentum=0.5), kernel)
    fit_full_batch(model, x, y, 3)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    saved_schedule = loaded.optimizer.get_config()["learning_rate"]
    assert saved_schedule == model.optimizer.get_config()["learning_rate"]
    assert keras.optimizers.schedules.deserialize(saved_schedule).get_config() == make().get_config()
    assert int(loaded.optimizer.iterations.numpy()) == 3
    assert float(loaded.optimizer.learning_rate) == pytest.approx(expected(3), rel=RTOL)
    fit_full_batch(loaded, x, y, 2)  # resumes where it stopped
    fit_full_batch(model, x, y, 2)
    np.testing.assert_allclose(loaded.layers[0].kernel.numpy(), model.layers[0].kernel.numpy(), rtol=1e-6)


# Harness models: tests.support.cases.regression_data's 8 features and 2 targets.


def dense_model() -> keras.Model:
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])


def dense_sgd_cyclical():
    """A two-layer Dense model, SGD with momentum under a triangular2 cyclical learning rate."""
    model = dense_model()
    schedule = CyclicalLearningRate(0.01, 0.1, step_size=2, mode="triangular2")
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss="mse")
    return model
