"""MADGRAD: its table row, both weight decay forms and exclusions, dual averaging without momentum, its start point.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.madgrad import MADGRAD
from tests.optimizers.reference import madgrad as reference
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
        name="madgrad",
        make=MADGRAD,
        reference=reference.madgrad,
        # Float32 numbers, so the float64 reference compares at ~1e-7. The decay row uses the
        # paper's form (added to the gradient); the decoupled form is checked below.
        options={"learning_rate": 2**-5, "momentum": 0.875, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25, "decoupled_weight_decay": False},
        # Larger rates leave it circling Rosenbrock's valley floor within 2000 steps.
        converge_options={"learning_rate": 0.003},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "momentum": 0.9, "epsilon": 1e-6},
    ),
]


@pytest.mark.parametrize("decoupled", [True, False])
def test_madgrad_weight_decay_forms_match_the_reference(decoupled):
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=6, scale=1.0)
    options = {"learning_rate": 2**-5, "momentum": 0.875, "epsilon": 2**-20, "weight_decay": 0.5,
               "decoupled_weight_decay": decoupled}
    ours = apply_steps(MADGRAD(**options), params, grads)
    assert_close(ours, reference.madgrad(params, grads, **options))
    other = reference.madgrad(params, grads, **{**options, "decoupled_weight_decay": not decoupled})
    assert relative_error(other, ours) > 1e-4, "the two decay forms must differ, or the test proves nothing"


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_madgrad_decoupled_decay_is_the_authors_after_the_step_and_acts_without_momentum(momentum):
    # Keras's decay before the step is scaled by 1 - c and, without momentum (x = z), lost.
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=13, scale=1.0)
    options = {"learning_rate": 2**-5, "momentum": momentum, "epsilon": 2**-20}
    decayed = apply_steps(MADGRAD(weight_decay=0.5, **options), params, grads)
    assert_close(decayed, reference.madgrad(params, grads, weight_decay=0.5, **options))
    assert relative_error(apply_steps(MADGRAD(**options), params, grads), decayed) > 1e-3, "the decay must act"


@pytest.mark.parametrize("decoupled", [True, False])
def test_madgrad_honours_exclude_from_weight_decay(decoupled):
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=15, scale=1.0)
    options = {"learning_rate": 2**-5, "momentum": 0.875, "epsilon": 2**-20}
    optimizer = MADGRAD(weight_decay=0.5, decoupled_weight_decay=decoupled, **options)
    variables = [keras.Variable(np.asarray(p, np.float32), name=f"w{i}") for i, p in enumerate(params)]
    optimizer.exclude_from_weight_decay(var_names=["w1"])
    optimizer.build(variables)
    for step_grads in grads:
        optimizer.apply([tf.constant(g, tf.float32) for g in step_grads], variables)
    decayed = reference.madgrad(params, grads, weight_decay=0.5, decoupled_weight_decay=decoupled, **options)
    plain = reference.madgrad(params, grads, **options)
    assert_close([v.numpy() for v in variables], [decayed[0], plain[1], decayed[2]])


def test_madgrad_without_momentum_is_dual_averaging_and_keeps_its_start():
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=7, scale=1.0)
    optimizer = MADGRAD(2**-4, momentum=0.0, epsilon=0.0)
    ours = apply_steps(optimizer, params, grads)
    assert_close(ours, reference.madgrad(params, grads, learning_rate=2**-4, momentum=0.0, epsilon=0.0))
    for x0, p in zip(optimizer._x0, params):
        np.testing.assert_array_equal(np.array(x0), np.asarray(p, np.float32))
    # x_k = x_0 - s_k / nu_k^(1/3) exactly, from the slots
    for x, x0, s, nu in zip(ours, params, optimizer._s, optimizer._nu):
        np.testing.assert_allclose(x, x0 - np.array(s) / np.cbrt(np.array(nu, np.float64)), rtol=1e-5, atol=1e-6)


def test_madgrad_with_zero_epsilon_and_zero_gradients_stays_finite():
    params = [np.ones((2,))]
    weights = apply_steps(MADGRAD(0.1, epsilon=0.0), params, [[np.array([0.0, 1.0])]] * 3)
    assert np.all(np.isfinite(weights[0])) and weights[0][0] == 1.0 and weights[0][1] < 1.0


def test_madgrad_copies_its_starting_point_once_inside_fit():
    # Without a strategy Keras builds the optimizer while tracing the train step.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=MADGRAD(0.05), loss="mse")
    start = [w.copy() for w in model.get_weights()]
    model.fit(np.ones((16, 3), np.float32), np.zeros((16, 2), np.float32), batch_size=4, verbose=0)
    for x0, w in zip(model.optimizer._x0, start):
        np.testing.assert_array_equal(np.array(x0), w)
    assert relative_error(model.get_weights(), start) > 1e-3


def test_weight_decay_reads_back_in_every_form():
    for decoupled in (True, False):  # MADGRAD applies both forms itself, Keras's decay stays off
        madgrad = MADGRAD(weight_decay=0.5, decoupled_weight_decay=decoupled)
        assert madgrad.weight_decay is None and madgrad.get_config()["weight_decay"] == 0.5


@pytest.mark.parametrize(
    "argument, value",
    [("momentum", 1.0), ("epsilon", -1e-6), ("weight_decay", -0.1), ("decoupled_weight_decay", "yes")],
)
def test_bad_hyperparameters_raise_an_error_naming_them(argument, value):
    with pytest.raises(ValueError, match=rf"{argument} must .*received: {value!r}"):
        MADGRAD(**{argument: value})


@pytest.mark.parametrize(
    "optimizer",
    [MADGRAD(0.02, momentum=0.5, epsilon=0.0, weight_decay=0.01, decoupled_weight_decay=False),
     MADGRAD(0.02, weight_decay=0.01)],
    ids=["madgrad_coupled", "madgrad_decoupled"],
)
def test_get_config_round_trips(optimizer):
    config = optimizer.get_config()
    assert MADGRAD.from_config(config).get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"].startswith("lepton_keras>")
    again = keras.optimizers.deserialize(serialized)
    assert type(again) is MADGRAD and again.get_config() == config
