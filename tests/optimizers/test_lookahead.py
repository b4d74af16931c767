"""Lookahead: its table rows, each row against the float64 reference on its own data, around accumulation,
the slow_step_size=1 limit, its config, registry name and argument errors (the shared table runs the rest)."""

import re

import keras
import numpy as np
import pytest

from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation
from lepton_keras.optimizers.gradient_clipping import GradientClipping
from lepton_keras.optimizers.lookahead import Lookahead
from tests.optimizers.cases import (
    assert_registry_builds_the_wrapper,
    assert_wrapper_config_round_trips,
    keras_inner,
)
from tests.optimizers.reference import lookahead as reference
from tests.optimizers.reference.gradient_accumulation import Accumulation
from tests.optimizers.reference.wrapper import Sgd, run
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

STEPS = 15


def lookahead_sgd(*, learning_rate, sync_period, slow_step_size, momentum=0.0, weight_decay=None):
    inner = keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay)
    return Lookahead(inner, sync_period=sync_period, slow_step_size=slow_step_size)


def lookahead_adam(*, learning_rate, sync_period, slow_step_size, beta_1, beta_2, weight_decay=None):
    inner = keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay)
    return Lookahead(inner, sync_period=sync_period, slow_step_size=slow_step_size)


def lookahead_clipping_adam(*, learning_rate, sync_period, slow_step_size, global_norm, beta_1, beta_2,
                            weight_decay=None):
    adam = keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay)
    return Lookahead(GradientClipping(adam, global_norm=global_norm), sync_period=sync_period,
                     slow_step_size=slow_step_size)


# Adam's hyperparameters exactly representable in float32 (1 - 0.999 in float32 is 6e-5 off, relatively).
BETAS = {"beta_1": 0.875, "beta_2": 1 - 2**-8}
SPECS = [
    OptimizerSpec(
        name="lookahead_sgd",
        make=lookahead_sgd,
        reference=reference.lookahead_sgd,
        options={"learning_rate": 0.125, "sync_period": 4, "slow_step_size": 0.5, "momentum": 0.5},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 2**-9, "sync_period": 5, "slow_step_size": 0.5, "momentum": 0.875},
        converge_steps=5000,
        # The reference options (exact in float32) train the tutorial CNN too slowly to show in 4 epochs.
        cnn_overrides={"learning_rate": 0.1},
    ),
    OptimizerSpec(
        name="lookahead_adam",
        make=lookahead_adam,
        reference=reference.lookahead_adam,
        options={"learning_rate": 0.0625, "sync_period": 3, "slow_step_size": 0.75, **BETAS},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 0.03125, "sync_period": 5, "slow_step_size": 0.5, **BETAS},
    ),
    OptimizerSpec(
        name="lookahead_clipping_adam",
        make=lookahead_clipping_adam,
        reference=reference.lookahead_clipping_adam,
        options={"learning_rate": 0.0625, "sync_period": 3, "slow_step_size": 0.5, "global_norm": 0.5, **BETAS},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 0.03125, "sync_period": 5, "slow_step_size": 0.5, "global_norm": 1.0,
                          **BETAS},
    ),
]


def test_lookahead_around_accumulation_synchronises_every_k_updates():
    params, grads = random_problem(12, seed=4, scale=1.0)
    optimizer = Lookahead(GradientAccumulation(keras.optimizers.SGD(0.125, momentum=0.5), steps=2), sync_period=2,
                          slow_step_size=0.5)
    expected = reference.Lookahead(Accumulation(Sgd(0.125, 0.5), 2), 2, 0.5)
    assert_close(apply_steps(optimizer, params, grads), run(expected, params, grads), 1e-6)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("sync_period", [1, 4])
def test_lookahead_with_slow_step_one_is_the_inner_optimizer(kind, sync_period):
    params, grads = random_problem(STEPS, seed=7, scale=1.0)
    wrapped = apply_steps(Lookahead(keras_inner(kind), sync_period=sync_period, slow_step_size=1.0), params, grads)
    plain = apply_steps(keras_inner(kind), params, grads)
    for a, b in zip(wrapped, plain):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("optimizer", [Lookahead(keras.optimizers.Adam(0.25), sync_period=3, slow_step_size=0.25)],
                         ids=lambda o: type(o).__name__)
def test_config_round_trips(optimizer):
    assert_wrapper_config_round_trips(optimizer)


@pytest.mark.parametrize("name,cls", [("lookahead_sgd", Lookahead)])
def test_registry_names(name, cls):
    assert_registry_builds_the_wrapper(name, cls)


@pytest.mark.parametrize("make,message", [
    (lambda: Lookahead("sgd", sync_period=0), "sync_period must be an integer >= 1, received: 0"),
    (lambda: Lookahead("sgd", sync_period=2.5), "sync_period must be an integer >= 1, received: 2.5"),
    (lambda: Lookahead("sgd", slow_step_size=0.0), "slow_step_size must be a number in (0, 1], received: 0.0"),
    (lambda: Lookahead("sgd", slow_step_size=1.5), "slow_step_size must be a number in (0, 1], received: 1.5"),
])
def test_bad_arguments_name_the_argument_and_value(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
