"""AdaBelief: its table row, its limit at SGD, its steps against Adam's on a steady gradient, arguments and config.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import textwrap

import keras
import numpy as np
import pytest

from lepton_keras.optimizers.adabelief import AdaBelief
from tests.optimizers.reference import adabelief as reference
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

SHAPES = ((5,), (3, 4))

SPECS = [
    OptimizerSpec(
        name="adabelief",
        make=AdaBelief,
        reference=reference.adabelief,
        # Float32 numbers, so the float64 reference compares at ~1e-7.
        options={"learning_rate": 2**-7, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 0.02},
        cnn_overrides={"learning_rate": 0.003},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-16},
    ),
]


def test_adabelief_with_beta_1_0_is_sgd_with_a_fixed_rate():
    # m_t = g_t, so (g_t - m_t)^2 = 0, s_t only accumulates epsilon and
    # s_hat_t = epsilon / (1 - beta_2): w_t = w_{t-1} - lr g_t / (sqrt(epsilon / (1 - beta_2)) + epsilon).
    params, grads = random_problem(5, shapes=SHAPES, seed=5)
    lr, beta_2, epsilon = 2**-4, 0.75, 2**-8
    rate = lr / (np.sqrt(epsilon / (1 - beta_2)) + epsilon)
    expected = [p - rate * sum(step[i] for step in grads) for i, p in enumerate(params)]
    assert_close(apply_steps(AdaBelief(lr, beta_1=0.0, beta_2=beta_2, epsilon=epsilon), params, grads), expected)


def test_adabelief_takes_larger_steps_than_adam_when_the_gradient_is_steady():
    # A constant gradient matches the belief m_t: s_t shrinks and the step grows past lr,
    # while Adam's bias-corrected step is exactly lr.
    params = [np.zeros(4)]
    steady = [[np.full(4, 0.5)] for _ in range(10)]
    ours = apply_steps(AdaBelief(0.01), params, steady)[0]
    adam = apply_steps(keras.optimizers.Adam(0.01, epsilon=1e-16), params, steady)[0]
    assert np.all(np.abs(ours) > np.abs(adam))
    assert_close([ours], reference.adabelief(params, steady, learning_rate=0.01), tolerance=1e-5)


def test_step_count_follows_updates_under_gradient_accumulation():
    # t (bias correction) counts updates, not micro-batches, so 2-step accumulation equals one
    # step on the mean gradient.
    params, grads = random_problem(12, shapes=SHAPES, seed=10)
    means = [[(a + b) / 2 for a, b in zip(grads[k], grads[k + 1])] for k in range(0, 12, 2)]
    accumulated = apply_steps(AdaBelief(2**-7, gradient_accumulation_steps=2), params, grads)
    assert_close(accumulated, apply_steps(AdaBelief(2**-7), params, means), tolerance=2e-6)


@pytest.mark.parametrize("argument, value", [("beta_1", "0.9"), ("beta_2", 1.5), ("epsilon", float("nan"))])
def test_bad_arguments_name_the_argument_and_the_value(argument, value):
    with pytest.raises(ValueError) as raised:
        AdaBelief(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


def test_config_round_trips():
    optimizer = AdaBelief(0.02, beta_1=0.85, beta_2=0.995, epsilon=1e-12, clipnorm=1.0)
    config = optimizer.get_config()
    assert AdaBelief.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is AdaBelief and restored.get_config() == config
    defaults = AdaBelief().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 4, changed  # the test really sets the new keys


def test_docstring_example_runs():
    example = AdaBelief.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
