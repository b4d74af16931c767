"""Adan: its table row, its limit at Adam, its first step, its proximal weight decay and exclusions, arguments.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.adan import Adan
from tests.optimizers.reference import adan as reference
from tests.support.numerics import (
    apply_steps,
    assert_close,
    random_problem,
    relative_error,
)
from tests.support.optimizer_spec import OptimizerSpec

SHAPES = ((4,), (3, 2), ())
STEPS = 15

SPECS = [
    OptimizerSpec(
        name="adan",
        make=Adan,
        reference=reference.adan,
        # Float32 numbers, so the float64 reference compares at ~1e-7.
        options={"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.75, "beta_3": 0.9375, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 0.01},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "beta_1": 0.98, "beta_2": 0.92, "beta_3": 0.99, "epsilon": 1e-8},
    ),
]


def test_adan_without_the_difference_term_is_adam():
    # beta_2 = 0 drops v and makes n the EMA of g^2: Adam with Adan's beta_3 as Adam's beta_2.
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=3, scale=1.0)
    expected = apply_steps(keras.optimizers.Adam(0.01, beta_1=0.875, beta_2=0.96875, epsilon=1e-7), params, grads)
    ours = apply_steps(Adan(0.01, beta_1=0.875, beta_2=0.0, beta_3=0.96875, epsilon=1e-7), params, grads)
    assert relative_error(expected, params) > 0.05
    assert_close(ours, expected, 1e-6)


def test_adan_first_step_takes_the_gradient_difference_as_zero():
    params, grads = random_problem(1, shapes=SHAPES, seed=4, scale=1.0)
    optimizer = Adan(2**-5, beta_1=0.875, beta_2=0.75, beta_3=0.9375)
    apply_steps(optimizer, params, grads)
    for g, v, n, previous in zip(grads[0], optimizer._v, optimizer._n, optimizer._previous_gradients):
        g = np.asarray(g, np.float32)  # the gradient as the optimizer received it
        np.testing.assert_array_equal(np.array(v), 0.0)
        np.testing.assert_allclose(np.array(n), 0.0625 * g.astype(np.float64) ** 2, rtol=1e-6)
        np.testing.assert_array_equal(np.array(previous), g)


def test_adan_weight_decay_is_the_proximal_form():
    # With zero gradients the step is 0 and only the decay acts: w_k = w_0 / (1 + lr wd)^k
    # (Keras's form would give w_0 (1 - lr wd)^k).
    params = [np.full((3,), 2.0)]
    weights = apply_steps(Adan(0.5, weight_decay=0.5), params, [[np.zeros(3)]] * 4)
    np.testing.assert_allclose(weights[0], 2.0 / 1.25**4, rtol=1e-6)


def test_adan_honours_exclude_from_weight_decay():
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=5, scale=1.0)
    optimizer = Adan(2**-5, weight_decay=0.5)
    variables = [keras.Variable(np.asarray(p, np.float32), name=f"w{i}") for i, p in enumerate(params)]
    optimizer.exclude_from_weight_decay(var_names=["w1"])
    optimizer.build(variables)
    for step_grads in grads:
        optimizer.apply([tf.constant(g, tf.float32) for g in step_grads], variables)
    decayed = reference.adan(params, grads, learning_rate=2**-5, weight_decay=0.5)
    plain = reference.adan(params, grads, learning_rate=2**-5)
    assert_close([v.numpy() for v in variables], [decayed[0], plain[1], decayed[2]])


def test_weight_decay_reads_back():
    assert Adan(weight_decay=0.5).get_config()["weight_decay"] == 0.5


@pytest.mark.parametrize(
    "argument, value",
    [("beta_1", 1.0), ("beta_2", -0.1), ("beta_3", "0.9"), ("epsilon", -1.0), ("weight_decay", -0.5)],
)
def test_bad_hyperparameters_raise_an_error_naming_them(argument, value):
    with pytest.raises(ValueError, match=rf"{argument} must .*received: {value!r}"):
        Adan(**{argument: value})


def test_get_config_round_trips():
    optimizer = Adan(0.002, beta_1=0.9, beta_2=0.8, beta_3=0.95, epsilon=1e-6, weight_decay=0.02, clipnorm=1.0)
    config = optimizer.get_config()
    assert Adan.from_config(config).get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"].startswith("lepton_keras>")
    again = keras.optimizers.deserialize(serialized)
    assert type(again) is Adan and again.get_config() == config
