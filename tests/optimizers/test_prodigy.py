"""Prodigy: its table row, its d estimate and options, its limit at Adam, d across replicas, arguments and config.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import get_strategy
from lepton_keras.optimizers.prodigy import Prodigy
from tests.optimizers.reference import prodigy as reference
from tests.support.cases import regression_data
from tests.support.numerics import (
    apply_steps,
    assert_close,
    error_relative_to_the_displacement,
    random_problem,
    relative_error,
)
from tests.support.optimizer_spec import OptimizerSpec

SHAPES = ((4,), (3, 2), ())
STEPS = 15

SPECS = [
    OptimizerSpec(
        name="prodigy",
        make=Prodigy,
        reference=reference.prodigy,
        # Float32 numbers, so the float64 reference compares at ~1e-7; d0 is large enough for the
        # weights to move (the table asks that the reference moves them by more than 1e-3).
        options={"learning_rate": 1.0, "beta_1": 0.875, "beta_2": 0.96875, "beta_3": 0.984375, "epsilon": 2**-20,
                 "d0": 2**-7},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": keras.optimizers.schedules.CosineDecay(1.0, 2000)},
        cnn_overrides={"learning_rate": 1.0},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 1.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8, "d0": 0.01},
    ),
]

PRODIGY = {"beta_1": 0.875, "beta_2": 0.96875, "beta_3": 0.984375, "epsilon": 2**-20, "d0": 2**-8}


def d_after_each_step(optimizer):
    return float(np.array(optimizer.d))


@pytest.mark.parametrize(
    "options",
    [{}, {"growth_rate": 1.0625}, {"safeguard_warmup": True, "learning_rate": 0.5}, {"bias_correction": True},
     {"weight_decay": 0.25, "decoupled_weight_decay": False}, {"d_coef": 0.5, "weight_decay": 0.125}],
    ids=["default", "growth_rate", "safeguard_warmup", "bias_correction", "coupled_decay", "d_coef_decay"],
)
def test_prodigy_d_estimate_follows_the_reference_one_step_behind(options):
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=8, scale=1.0, mean=1.0)
    options = {**PRODIGY, **options}
    ours, ds = apply_steps(Prodigy(**options), params, grads, every_step=d_after_each_step)
    expected, d_history = reference.prodigy(params, grads, return_d=True, **options)
    # After step k the slot holds d_k, the d that step used; d_{k+1} waits for the next apply.
    np.testing.assert_allclose(ds, d_history[:STEPS], rtol=2e-5)
    assert d_history[STEPS - 1] > 1.25 * PRODIGY["d0"], "d must grow, or the estimate is not exercised"
    assert_close(ours, expected, 1e-5)


def test_prodigy_growth_rate_bounds_the_growth_of_d():
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=8, scale=1.0, mean=1.0)
    _, ds = apply_steps(Prodigy(growth_rate=1.0625, **PRODIGY), params, grads, every_step=d_after_each_step)
    changes = np.array(ds[1:]) / np.array(ds[:-1])
    jumps = np.flatnonzero(changes > 1.0)
    assert len(jumps) >= 2
    # the first move away from d0 is unbounded (the authors' rule); later ones grow by at most growth_rate
    np.testing.assert_array_less(changes[jumps[1:]], 1.0625 * (1 + 1e-6))


def test_prodigy_with_d_fixed_at_d0_is_adam():
    # d_coef so small that d_hat never exceeds d0: the step is Adam's with lr d0.
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=9, scale=1.0)
    optimizer = Prodigy(1.0, beta_1=0.875, beta_2=0.96875, epsilon=1e-7, d0=2**-6, d_coef=2**-100,
                        bias_correction=True)  # fmt: skip
    ours = apply_steps(optimizer, params, grads)
    expected = apply_steps(keras.optimizers.Adam(2**-6, beta_1=0.875, beta_2=0.96875, epsilon=1e-7), params, grads)
    assert float(np.array(optimizer.d)) == 2**-6
    assert relative_error(expected, params) > 0.05
    assert_close(ours, expected, 1e-6)


def test_prodigy_steps_with_zero_learning_rate_change_nothing():
    params, grads = random_problem(8, shapes=SHAPES, seed=10, scale=1.0, mean=1.0)
    rates = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0]
    optimizer = Prodigy(**PRODIGY)
    variables = [keras.Variable(np.asarray(p, np.float32)) for p in params]
    optimizer.build(variables)
    for rate, step_grads in zip(rates, grads):
        optimizer.learning_rate = rate
        optimizer.apply([tf.constant(g, tf.float32) for g in step_grads], variables)
    expected = reference.prodigy(params, grads, **{**PRODIGY, "learning_rate": rates})
    assert_close([v.numpy() for v in variables], expected, 1e-5)


def test_prodigy_finalises_d_when_the_first_variable_has_no_gradient():
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=11, scale=1.0, mean=1.0)
    without_first = [[None, *step[1:]] for step in grads]
    optimizer = Prodigy(**PRODIGY)
    ours, ds = apply_steps(optimizer, params, without_first, every_step=d_after_each_step)
    expected, d_history = reference.prodigy(params[1:], [step[1:] for step in grads], return_d=True, **PRODIGY)
    np.testing.assert_array_equal(ours[0], np.asarray(params[0], np.float32))
    assert_close(ours[1:], expected, 1e-5)
    np.testing.assert_allclose(ds, d_history[:STEPS], rtol=2e-5)


def test_prodigy_d_is_identical_on_every_replica_and_equals_one_device():
    inputs, targets = regression_data(64, seed=12)
    results = []
    for replicas in (None, 4):
        strategy = tf.distribute.get_strategy() if replicas is None else get_strategy("mirrored", cpu_replicas=replicas)
        keras.utils.set_random_seed(3)
        with strategy.scope():
            model = keras.Sequential(
                [keras.Input((8,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)]
            )
            model.compile(optimizer=Prodigy(d0=2**-8), loss="mse")
        model.fit(inputs, targets, batch_size=16, shuffle=False, verbose=0)
        local = [float(x) for x in strategy.experimental_local_results(model.optimizer.d.value)]
        assert len(local) == (replicas or 1) and len(set(local)) == 1, f"d differs between replicas: {local}"
        results.append((local[0], model.get_weights()))
    (d_single, weights_single), (d_mirrored, weights_mirrored) = results
    assert d_single > 2**-8, "d must have grown, or the test proves nothing"
    assert d_mirrored == pytest.approx(d_single, rel=1e-5)
    assert_close(weights_mirrored, weights_single, 1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_prodigy_keeps_its_state_in_float32_for_16_bit_variables(dtype):
    optimizer = Prodigy()
    variable = keras.Variable(np.linspace(-1, 1, 6), dtype=dtype)
    optimizer.build([variable])
    for _ in range(3):
        optimizer.apply([tf.cast(tf.fill((6,), 0.5), dtype)], [variable])
    assert variable.dtype == dtype
    assert all(slot.dtype == "float32" for slot in (*optimizer._m, *optimizer._v, *optimizer._s, *optimizer._x0))
    assert np.all(np.isfinite(np.array(optimizer._m[0]))) and np.any(np.array(optimizer._v[0]) > 0)


def test_float64_variables_follow_the_float64_reference_to_1e_7():
    # Everyday hyperparameters (the defaults 0.9, 0.999) with bias correction and a bounded growth,
    # float64 variables: no float32 on the way. apply_steps passes float32 numbers, so the
    # reference gets the same ones.
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=14, scale=1.0, float32_values=True)
    options = {"d0": 0.01, "bias_correction": True, "growth_rate": 1.02}
    ours = apply_steps(Prodigy(**options), params, grads, dtype="float64")
    expected = reference.prodigy(params, grads, **options)
    assert max(float(np.max(np.abs(e - p))) for e, p in zip(expected, params)) > 1e-3
    assert error_relative_to_the_displacement(ours, expected, params) < 1e-7


def test_weight_decay_reads_back_in_every_form():
    assert Prodigy(weight_decay=0.5).get_config()["weight_decay"] == 0.5
    assert math.isinf(Prodigy().get_config()["growth_rate"])


@pytest.mark.parametrize(
    "argument, value",
    [("beta_1", 1.0), ("beta_2", -0.5), ("beta_3", 1.0), ("epsilon", -1.0), ("d0", 0.0), ("d_coef", -1.0),
     ("growth_rate", 1.0), ("safeguard_warmup", 1), ("bias_correction", None), ("weight_decay", -0.1),
     ("decoupled_weight_decay", 0)],
)  # fmt: skip
def test_bad_hyperparameters_raise_an_error_naming_them(argument, value):
    with pytest.raises(ValueError, match=rf"{argument} must .*received: {value!r}"):
        Prodigy(**{argument: value})


@pytest.mark.parametrize(
    "optimizer",
    [Prodigy(0.5, beta_3=0.99, d0=1e-5, d_coef=0.5, growth_rate=1.02, safeguard_warmup=True, bias_correction=True,
             weight_decay=0.01, decoupled_weight_decay=False),
     Prodigy()],
    ids=["prodigy", "prodigy_defaults"],
)  # fmt: skip
def test_get_config_round_trips(optimizer):
    config = optimizer.get_config()
    assert Prodigy.from_config(config).get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"].startswith("lepton_keras>")
    again = keras.optimizers.deserialize(serialized)
    assert type(again) is Prodigy and again.get_config() == config
