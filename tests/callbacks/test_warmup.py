"""LearningRateWarmup: the float64 reference of gradual warmup in training, resumed, on replicas, config, arguments."""

import keras
import numpy as np
import pytest

from lepton_keras.callbacks.warmup import LearningRateWarmup
from lepton_keras.distribute import get_strategy
from tests.callbacks.cases import Recorder, assert_round_trip, assert_sgd_used, exponential_decay, fit, harness_case
from tests.callbacks.cases import linear_model
from tests.callbacks.reference import warmup as reference
from tests.support.cases import regression_data
from tests.support.harness import max_difference, run_case

TRAINING_TOLERANCE = 1e-5


@pytest.mark.parametrize("schedule", [False, True])
def test_warmup_trains_with_the_goyal_learning_rates(schedule):
    x, y = regression_data(64, seed=1)  # 8 batches per epoch
    base = exponential_decay(16, 0.05, 5, 0.7) if schedule else np.full(16, 0.05)
    model = linear_model(keras.optimizers.schedules.ExponentialDecay(0.05, 5, 0.7) if schedule else 0.05)
    start, recorder = model.get_weights(), Recorder()
    fit(model, x, y, [LearningRateWarmup(1.5, initial_factor=0.25), recorder], epochs=2)
    expected = base * reference.warmup_multipliers(16, 12, 0.25)
    np.testing.assert_allclose(recorder.learning_rates, expected, rtol=1e-6)
    assert_sgd_used(start, model, x, y, expected)
    assert expected[0] == pytest.approx(0.25 * base[0]) and expected[12] == pytest.approx(base[12])
    # the factor is taken off at the end: the optimizer is back at its own rate
    own_rate = 0.05 * 0.7 ** (16 / 5) if schedule else 0.05
    assert float(np.array(model.optimizer.learning_rate)) == pytest.approx(own_rate, rel=1e-6)


def test_warmup_resumed_by_a_new_callback_continues_the_ramp():
    x, y = regression_data(64, seed=2)
    model = linear_model(0.05)
    start, recorder = model.get_weights(), Recorder()
    fit(model, x, y, [LearningRateWarmup(1.5, initial_factor=0.25), recorder])
    fit(model, x, y, [LearningRateWarmup(1.5, initial_factor=0.25), recorder])
    expected = 0.05 * reference.warmup_multipliers(16, 12, 0.25)
    np.testing.assert_allclose(recorder.learning_rates, expected, rtol=1e-6)
    assert_sgd_used(start, model, x, y, expected)


@pytest.mark.parametrize("replicas, initial_factor", [(None, 0.1), (2, 0.5)])
def test_warmup_starts_at_one_over_the_replica_count_and_at_a_tenth_on_one_device(replicas, initial_factor):
    x, y = regression_data(32, seed=3)  # 4 batches per epoch
    strategy = get_strategy("mirrored", cpu_replicas=replicas) if replicas else get_strategy("default")
    with strategy.scope():
        model = linear_model(0.05)
    start, recorder = model.get_weights(), Recorder()
    fit(model, x, y, [LearningRateWarmup(1, steps_per_epoch=2), recorder])  # steps_per_epoch=2 overrides fit's 4
    expected = 0.05 * reference.warmup_multipliers(4, 2, initial_factor)
    np.testing.assert_allclose(recorder.learning_rates, expected, rtol=1e-6)
    assert expected[0] == pytest.approx(0.05 * initial_factor) and expected[2] == pytest.approx(0.05)
    assert_sgd_used(start, model, x, y, expected)


def test_warmup_needs_the_steps_per_epoch():
    callback = LearningRateWarmup(1)
    callback.set_model(linear_model(0.1))
    callback.set_params({"steps": None, "epochs": 1})
    with pytest.raises(ValueError, match="steps_per_epoch"):
        callback.on_train_begin()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"warmup_epochs": 0}, "warmup_epochs must be a finite number > 0, received: 0"),
     ({"warmup_epochs": float("inf")}, "warmup_epochs must be a finite number > 0, received: inf"),
     ({"warmup_epochs": float("nan")}, "warmup_epochs must be a finite number > 0, received: nan"),
     ({"warmup_epochs": "5"}, "warmup_epochs must be a finite number > 0, received: '5'"),
     ({"warmup_epochs": 1, "steps_per_epoch": 0}, "steps_per_epoch must be an integer >= 1 or None, received: 0"),
     ({"warmup_epochs": 1, "steps_per_epoch": 2.0},
      "steps_per_epoch must be an integer >= 1 or None, received: 2.0"),
     ({"warmup_epochs": 1, "initial_factor": 1.5},
      r"initial_factor must be a number in \(0, 1\] or None, received: 1.5"),
     ({"warmup_epochs": 1, "initial_factor": 0}, r"initial_factor must be a number in \(0, 1\] or None, received: 0"),
     ({"warmup_epochs": 1, "initial_factor": float("nan")},
      r"initial_factor must be a number in \(0, 1\] or None, received: nan"),
     ({"warmup_epochs": 1, "verbose": "1"}, "verbose must be an integer >= 0, received: '1'")],
)  # fmt: skip
def test_warmup_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        LearningRateWarmup(**kwargs)


def test_warmup_round_trips_through_its_config():
    assert_round_trip(LearningRateWarmup(2.5, steps_per_epoch=10, initial_factor=0.125, verbose=1))


@pytest.mark.parametrize("options", [{}, {"schedule": True}])
def test_same_weights_with_two_replicas(options):
    case = harness_case("warmup_callbacks", **options)
    single, mirrored = run_case(case), run_case(case, replicas=2)
    assert max_difference(single, mirrored) < TRAINING_TOLERANCE
