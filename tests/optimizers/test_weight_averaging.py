"""StochasticWeightAveraging and ExponentialMovingAverage: their table rows and averages against the float64
reference, averages counting updates (not micro-batches), using the average (swap, assign, batch-norm
statistics), XLA, configs, registry names and errors (the callback: tests/callbacks/test_weight_averaging.py)."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import get_strategy
from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation
from lepton_keras.optimizers.registry import get
from lepton_keras.optimizers.weight_averaging import (
    ExponentialMovingAverage,
    StochasticWeightAveraging,
    recompute_batch_norm_statistics,
)
from tests.optimizers.cases import (
    assert_jit_compiled_equals_not_compiled,
    assert_registry_builds_the_wrapper,
    assert_wrapper_config_round_trips,
    dense_model,
    trained_ema_model,
)
from tests.optimizers.reference import weight_averaging as reference
from tests.optimizers.reference.gradient_accumulation import Accumulation
from tests.optimizers.reference.wrapper import Adam, Sgd, run
from tests.support.cases import regression_data
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

STEPS = 15


def swa_sgd(*, learning_rate, start_step, average_period, momentum=0.0, weight_decay=None):
    inner = keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay)
    return StochasticWeightAveraging(inner, start_step=start_step, average_period=average_period)


def ema_adam(*, learning_rate, decay, beta_1, beta_2, start_step=0, use_warmup=False, weight_decay=None):
    inner = keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay)
    return ExponentialMovingAverage(inner, decay=decay, start_step=start_step, use_warmup=use_warmup)


# Adam's hyperparameters exactly representable in float32 (1 - 0.999 in float32 is 6e-5 off, relatively).
BETAS = {"beta_1": 0.875, "beta_2": 1 - 2**-8}
SPECS = [
    OptimizerSpec(
        name="swa_sgd",
        make=swa_sgd,
        reference=reference.swa_sgd,
        options={"learning_rate": 0.125, "start_step": 3, "average_period": 2, "momentum": 0.5},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 2**-9, "start_step": 10, "average_period": 5, "momentum": 0.875},
        # The reference options (exact in float32) train the tutorial CNN too slowly to show in 4 epochs.
        cnn_overrides={"learning_rate": 0.05},
    ),
    OptimizerSpec(
        name="ema_adam",
        make=ema_adam,
        reference=reference.ema_adam,
        options={"learning_rate": 0.0625, "decay": 0.75, "start_step": 2, "use_warmup": True, **BETAS},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 0.03125, "decay": 0.875, **BETAS},
    ),
]


# --- the float64 reference ---------------------------------------------------------------------


def test_averages_match_the_reference():
    params, grads = random_problem(STEPS, seed=2, scale=1.0)
    swa = StochasticWeightAveraging(keras.optimizers.SGD(0.125, momentum=0.5), start_step=3, average_period=4)
    expected = reference.Swa(Sgd(0.125, 0.5), 3, 4)
    apply_steps(swa, params, grads)
    run(expected, params, grads)
    assert swa.average_count == len(expected.snapshots) == 4  # updates 3, 7, 11, 15
    assert_close(swa._averages, expected.average, 1e-6)

    for use_warmup in (False, True):
        adam = keras.optimizers.Adam(0.0625, beta_1=0.875, beta_2=1 - 2**-8)
        ema = ExponentialMovingAverage(adam, decay=0.875, start_step=4, use_warmup=use_warmup)
        expected = reference.Ema(Adam(0.0625, 0.875, 1 - 2**-8), 0.875, 4, use_warmup)
        apply_steps(ema, params, grads)
        run(expected, params, grads)
        assert ema.average_count == STEPS - 3
        assert_close(ema._averages, expected.average, 1e-6)


def test_accumulated_averages_count_updates_not_micro_batches():
    params, grads = random_problem(12, seed=3, scale=1.0)
    inner = GradientAccumulation(keras.optimizers.SGD(0.125), steps=3)
    swa = StochasticWeightAveraging(inner, start_step=1, average_period=2)
    expected = reference.Swa(Accumulation(Sgd(0.125), 3), 1, 2)
    apply_steps(swa, params, grads)
    run(expected, params, grads)
    assert int(swa.iterations) == 12 and int(swa.innermost_optimizer.iterations) == 4
    assert swa.average_count == 2  # updates 1 and 3
    assert_close(swa._averages, expected.average, 1e-6)


# --- using the average ---------------------------------------------------------------------


def every_copy(strategy, variables):
    """The values of each device's copy of each variable."""
    return [[keras.ops.convert_to_numpy(c) for c in strategy.experimental_local_results(v.value)] for v in variables]


@pytest.mark.parametrize("replicas", [None, 2])
def test_swap_average_weights_uses_the_average_and_restores_bitwise(replicas):
    strategy = tf.distribute.get_strategy() if replicas is None else get_strategy("mirrored", cpu_replicas=replicas)
    model, x, y = trained_ema_model(strategy)
    optimizer = model.optimizer
    training = every_copy(strategy, model.trainable_variables)
    averages = [keras.ops.convert_to_numpy(a) for a in optimizer._averages]
    assert not any(np.array_equal(a, w[0]) for a, w in zip(averages, training))
    with optimizer.swap_average_weights(model):
        for average, copies in zip(averages, every_copy(strategy, model.trainable_variables)):
            for copy in copies:
                np.testing.assert_array_equal(copy, average)
        model.evaluate(x, y, verbose=0)
    for before, after in zip(training, every_copy(strategy, model.trainable_variables)):
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
    optimizer.assign_average_weights(model.trainable_variables)
    for average, copies in zip(averages, every_copy(strategy, model.trainable_variables)):
        for copy in copies:
            np.testing.assert_array_equal(copy, average)


def test_before_the_first_average_swapping_changes_nothing():
    optimizer = StochasticWeightAveraging(keras.optimizers.SGD(0.1), start_step=100)
    model = dense_model("sgd")
    model.compile(optimizer=optimizer, loss="mse")
    x, y = regression_data(32, 0)
    model.fit(x, y, batch_size=16, verbose=0)
    weights = model.get_weights()
    with optimizer.swap_average_weights(model):
        for a, b in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not built"):
        with StochasticWeightAveraging("sgd").swap_average_weights(model):
            pass


@pytest.mark.parametrize("replicas", [None, 2])
def test_recompute_batch_norm_statistics_is_the_mean_of_the_batch_statistics(replicas):
    strategy = tf.distribute.get_strategy() if replicas is None else get_strategy("mirrored", cpu_replicas=replicas)
    with strategy.scope():
        model = dense_model("sgd", batch_norm=True)
    x, _ = regression_data(40, 11)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16)  # batches of 16, 16 and 8
    kernel, bias = (w.astype(np.float64) for w in model.layers[0].get_weights())
    hidden = np.tanh(x.astype(np.float64) @ kernel + bias)
    batches = [hidden[:16], hidden[16:32], hidden[32:]]
    batch_norm = model.layers[1]
    assert recompute_batch_norm_statistics(model, dataset) == 3
    np.testing.assert_allclose(batch_norm.moving_mean.numpy(), np.mean([b.mean(0) for b in batches], 0), atol=1e-6)
    np.testing.assert_allclose(batch_norm.moving_variance.numpy(), np.mean([b.var(0) for b in batches], 0), atol=1e-6)
    assert batch_norm.momentum == 0.99
    assert recompute_batch_norm_statistics(model, dataset.map(lambda b: (b, b)), steps=1) == 1
    np.testing.assert_allclose(batch_norm.moving_variance.numpy(), batches[0].var(0), atol=1e-6)
    assert recompute_batch_norm_statistics(dense_model("sgd"), dataset) == 0
    with pytest.raises(ValueError, match="steps must be an integer >= 1 or None, received: 0"):
        recompute_batch_norm_statistics(model, dataset, steps=0)


# --- compilation, configs, names and arguments ---------------------------------------------


@pytest.mark.parametrize("name,options", [
    ("swa_sgd", {"learning_rate": 0.0625, "start_step": 2, "average_period": 2}),
])
def test_jit_compiled_equals_not_compiled(name, options):
    assert_jit_compiled_equals_not_compiled(get(name, **options), get(name, **options))


@pytest.mark.parametrize("optimizer", [
    StochasticWeightAveraging(keras.optimizers.SGD(0.5), start_step=7, average_period=3),
    ExponentialMovingAverage(keras.optimizers.SGD(0.5), decay=0.75, start_step=2, use_warmup=True),
], ids=lambda o: type(o).__name__)
def test_config_round_trips(optimizer):
    assert_wrapper_config_round_trips(optimizer)


@pytest.mark.parametrize("name,cls", [("swa_sgd", StochasticWeightAveraging), ("ema_adam", ExponentialMovingAverage)])
def test_registry_names(name, cls):
    assert_registry_builds_the_wrapper(name, cls)


@pytest.mark.parametrize("make,message", [
    (lambda: StochasticWeightAveraging("sgd", start_step=-1), "start_step must be an integer >= 0, received: -1"),
    (lambda: StochasticWeightAveraging("sgd", average_period=0), "average_period must be an integer >= 1, received: 0"),
    (lambda: ExponentialMovingAverage("sgd", decay=1.0), "decay must be a number in [0, 1), received: 1.0"),
    (lambda: ExponentialMovingAverage("sgd", use_warmup=1), "use_warmup must be True or False, received: 1"),
])
def test_bad_arguments_name_the_argument_and_value(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
