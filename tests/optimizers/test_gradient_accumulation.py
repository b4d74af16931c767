"""GradientAccumulation: its table rows, each row against the float64 reference on its own data, the steps=1
limit, micro-batches equal to one large batch, the inner schedule's step count, config, registry name, errors."""

import re

import keras
import numpy as np
import pytest

from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation
from tests.optimizers.cases import (
    assert_registry_builds_the_wrapper,
    assert_wrapper_config_round_trips,
    fit_dense_model,
    keras_inner,
)
from tests.optimizers.reference import gradient_accumulation as reference
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

STEPS = 15


def accumulation_sgd(*, learning_rate, steps, momentum=0.0, weight_decay=None):
    return GradientAccumulation(keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay),
                                steps=steps)


def accumulation_adam(*, learning_rate, steps, beta_1, beta_2, weight_decay=None):
    inner = keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay)
    return GradientAccumulation(inner, steps=steps)


# Adam's hyperparameters exactly representable in float32 (1 - 0.999 in float32 is 6e-5 off, relatively).
BETAS = {"beta_1": 0.875, "beta_2": 1 - 2**-8}
SPECS = [
    OptimizerSpec(
        name="accumulation_sgd",
        make=accumulation_sgd,
        reference=reference.accumulation_sgd,
        options={"learning_rate": 0.125, "steps": 3, "momentum": 0.5},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 2**-9, "steps": 2, "momentum": 0.875},
        converge_steps=4000,
        # The reference options (exact in float32) train the tutorial CNN too slowly to show in 4 epochs.
        cnn_overrides={"learning_rate": 0.2},
    ),
    OptimizerSpec(
        name="accumulation_adam",
        make=accumulation_adam,
        reference=reference.accumulation_adam,
        options={"learning_rate": 0.0625, "steps": 2, **BETAS},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 0.03125, "steps": 2, **BETAS},
        converge_steps=4000,
    ),
]


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_accumulation_of_one_step_is_the_inner_optimizer(kind):
    params, grads = random_problem(STEPS, seed=8, scale=1.0)
    wrapped = apply_steps(GradientAccumulation(keras_inner(kind), steps=1), params, grads)
    plain = apply_steps(keras_inner(kind), params, grads)
    for a, b in zip(wrapped, plain):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_two_micro_batches_of_8_are_one_batch_of_16(kind):
    accumulated, _ = fit_dense_model(GradientAccumulation(keras_inner(kind), steps=2), batch_size=8)
    plain, _ = fit_dense_model(keras_inner(kind), batch_size=16)
    assert int(accumulated.optimizer.iterations) == 4
    assert int(accumulated.optimizer.inner_optimizer.iterations) == int(plain.optimizer.iterations) == 2
    assert_close(accumulated.get_weights(), plain.get_weights(), 1e-6)


def test_the_inner_schedule_sees_updates():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.125, 0.0])  # nothing after update 1
    model, _ = fit_dense_model(GradientAccumulation(keras.optimizers.SGD(schedule), steps=2), batch_size=8, rows=16)
    once, _ = fit_dense_model(keras.optimizers.SGD(0.125), batch_size=16, rows=16)
    assert_close(model.get_weights(), once.get_weights(), 1e-6)


@pytest.mark.parametrize("optimizer", [GradientAccumulation(keras.optimizers.SGD(0.5), steps=3)],
                         ids=lambda o: type(o).__name__)
def test_config_round_trips(optimizer):
    assert_wrapper_config_round_trips(optimizer)


@pytest.mark.parametrize("name,cls", [("accumulation_adam", GradientAccumulation)])
def test_registry_names(name, cls):
    assert_registry_builds_the_wrapper(name, cls)


@pytest.mark.parametrize("make,message", [
    (lambda: GradientAccumulation("sgd", steps=0), "steps must be an integer >= 1, received: 0"),
    (lambda: GradientAccumulation("sgd", steps=True), "steps must be an integer >= 1, received: True"),
])
def test_bad_arguments_name_the_argument_and_value(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
