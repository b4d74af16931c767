"""ADOPT: its table row, its first step, its clipping, a closed-form limit, its weight decay, arguments and config.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.adopt import ADOPT
from tests.optimizers.reference import adopt as reference
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

SHAPES = ((5,), (3, 4))
STEPS = 15

SPECS = [
    OptimizerSpec(
        name="adopt",
        make=ADOPT,
        reference=reference.adopt,
        # Float32 numbers, so the float64 reference compares at ~1e-7. With beta_2 = 0.75 the clipping
        # at t^0.25 binds on many of the 15 steps.
        options={"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.75, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 0.005, "beta_2": 0.99},
        cnn_overrides={"learning_rate": 0.003},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.9999, "epsilon": 1e-6},
    ),
]


@pytest.mark.parametrize("weight_decay", [None, 0.5])
def test_adopt_first_step_only_sets_the_second_moment(weight_decay):
    params, grads = random_problem(1, shapes=SHAPES, seed=1, float32_values=True)
    optimizer = ADOPT(2**-5, weight_decay=weight_decay)
    weights = apply_steps(optimizer, params, grads)
    for w, p, g, m, v in zip(weights, params, grads[0], optimizer._momentums, optimizer._velocities):
        np.testing.assert_array_equal(w, p)
        np.testing.assert_array_equal(np.array(m), 0.0)
        np.testing.assert_allclose(np.array(v), g**2, rtol=1e-6)


def test_adopt_clips_the_normalised_gradient_at_t_to_the_quarter():
    # A tiny first gradient, then a huge one: g_1 / sqrt(v_0) = 1e6 is clipped to c_1 = 1, so
    # m_1 = (1 - beta_1) and the step is lr (1 - beta_1); unclipped it is 1e6 times larger.
    # The third update is clipped at 2^0.25.
    params = [np.zeros(3)]
    grads = [[np.full(3, 1e-3)], [np.full(3, 1e3)], [np.full(3, 1e9)]]
    lr, beta_1 = 2**-5, 0.5
    clipped = apply_steps(ADOPT(lr, beta_1=beta_1), params, grads[:2])
    np.testing.assert_allclose(clipped[0], -lr * (1 - beta_1), rtol=1e-6)
    unclipped = apply_steps(ADOPT(lr, beta_1=beta_1, clip_exponent=None), params, grads[:2])
    np.testing.assert_allclose(unclipped[0], -lr * (1 - beta_1) * 1e6, rtol=1e-6)
    third = apply_steps(ADOPT(lr, beta_1=beta_1), params, grads)
    m_2 = beta_1 * (1 - beta_1) + (1 - beta_1) * 2**0.25
    np.testing.assert_allclose(third[0], -lr * ((1 - beta_1) + m_2), rtol=1e-6)


def test_adopt_without_momentum_and_memory_divides_by_the_previous_gradient():
    # beta_1 = beta_2 = 0, unclipped: w_t = w_{t-1} - lr g_t / |g_{t-1}| (|g| > epsilon here).
    params, grads = random_problem(8, shapes=SHAPES, seed=2, scale=1.0)
    lr = 2**-6
    expected = [p.copy() for p in params]
    for previous, current in zip(grads, grads[1:]):
        expected = [w - lr * g / np.abs(h) for w, g, h in zip(expected, current, previous)]
    ours = apply_steps(ADOPT(lr, beta_1=0.0, beta_2=0.0, epsilon=0.0, clip_exponent=None), params, grads)
    assert_close(ours, expected, 1e-5)


def test_adopt_unclipped_matches_the_reference():
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=3, float32_values=True)
    options = {"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.75, "epsilon": 2**-20, "clip_exponent": None}
    assert_close(apply_steps(ADOPT(**options), params, grads), reference.adopt(params, grads, **options))


def test_adopt_honours_exclude_from_weight_decay():
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=5, float32_values=True)
    optimizer = ADOPT(2**-5, weight_decay=0.5)
    variables = [keras.Variable(np.asarray(p, np.float32), name=f"w{i}") for i, p in enumerate(params)]
    optimizer.exclude_from_weight_decay(var_names=["w1"])
    optimizer.build(variables)
    for step_grads in grads:
        optimizer.apply([tf.constant(g, tf.float32) for g in step_grads], variables)
    decayed = reference.adopt(params, grads, learning_rate=2**-5, weight_decay=0.5)
    plain = reference.adopt(params, grads, learning_rate=2**-5)
    assert_close([v.numpy() for v in variables], [decayed[0], plain[1]])


@pytest.mark.parametrize(
    "argument, value",
    [("beta_1", 1.0), ("beta_2", -0.1), ("epsilon", -1.0), ("clip_exponent", -0.25), ("clip_exponent", "0.25"),
     ("weight_decay", -0.5)],
)
def test_bad_hyperparameters_raise_an_error_naming_them(argument, value):
    with pytest.raises(ValueError, match=rf"{argument} must .*received: {value!r}"):
        ADOPT(**{argument: value})


@pytest.mark.parametrize("clip_exponent", [0.5, None])
def test_get_config_round_trips(clip_exponent):
    optimizer = ADOPT(0.002, beta_1=0.8, beta_2=0.99, epsilon=1e-7, clip_exponent=clip_exponent, weight_decay=0.02)
    config = optimizer.get_config()
    assert config["weight_decay"] == 0.02 and config["clip_exponent"] == clip_exponent
    assert ADOPT.from_config(config).get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"].startswith("lepton_keras>")
    again = keras.optimizers.deserialize(serialized)
    assert type(again) is ADOPT and again.get_config() == config


def test_docstring_example_runs():
    example = ADOPT.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
