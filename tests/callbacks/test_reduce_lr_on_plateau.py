"""ReduceLROnPlateau against Keras's callback and a float64 reference, on a rate and a schedule, under strategies."""

import keras
import numpy as np
import pytest

from lepton_keras.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau, infer_mode
from tests.callbacks.cases import Recorder, assert_round_trip, assert_sgd_used, exponential_decay, fit, harness_case
from tests.callbacks.cases import linear_model
from tests.callbacks.reference import reduce_lr_on_plateau as reference
from tests.support.cases import regression_data
from tests.support.harness import max_difference, run_case

TRAINING_TOLERANCE = 1e-5

PLATEAU_SETTINGS = [
    {"factor": 0.5, "patience": 2},
    {"factor": 0.1, "patience": 1, "cooldown": 2, "min_delta": 0.05},
    {"factor": 0.5, "patience": 0, "min_lr": 0.02},
    {"factor": 0.3, "patience": 2, "mode": "max", "min_delta": 0.01},
]


def drive(callback, model, values):
    """Calls on_epoch_end with each monitored value; returns the learning rate after each."""
    callback.set_model(model)
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {"val_loss": value})
        rates.append(float(np.array(model.optimizer.learning_rate)))
    return np.array(rates)


@pytest.mark.parametrize("settings", PLATEAU_SETTINGS)
def test_plateau_matches_keras_and_the_reference_on_a_float_rate(settings):
    values = np.random.default_rng(5).normal(1.0, 0.1, size=30) - np.linspace(0, 0.2, 30)
    ours = drive(ReduceLROnPlateau(**settings), linear_model(0.1), values)
    keras_rates = drive(keras.callbacks.ReduceLROnPlateau(**settings), linear_model(0.1), values)
    np.testing.assert_allclose(ours, keras_rates, rtol=1e-7)
    np.testing.assert_allclose(ours, reference.plateau_learning_rates(values, 0.1, **settings), rtol=1e-6)
    assert ours[-1] < 0.1  # the data has plateaus: the test reduces


@pytest.mark.parametrize("settings", PLATEAU_SETTINGS)
def test_plateau_scales_a_schedule_where_keras_raises(settings):
    values = np.random.default_rng(6).normal(1.0, 0.1, size=30) - np.linspace(0, 0.2, 30)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    model = linear_model(schedule)
    model.optimizer.iterations.assign(7)  # a schedule value that is not the initial rate
    ours = drive(ReduceLROnPlateau(**settings), model, values)
    np.testing.assert_allclose(ours, reference.plateau_learning_rates(values, 0.1 * 0.5**0.7, **settings), rtol=1e-5)
    with pytest.raises(TypeError):
        drive(keras.callbacks.ReduceLROnPlateau(**settings), linear_model(schedule), values)


def test_plateau_reductions_take_effect_in_training_on_a_schedule():
    x, y = regression_data(32, seed=7)
    model = linear_model(keras.optimizers.schedules.ExponentialDecay(0.05, 4, 0.8))
    start, recorder = model.get_weights(), Recorder()
    # the loss falls every epoch, so in "max" mode every epoch after the first is a plateau
    callback = ReduceLROnPlateau("loss", mode="max", factor=0.5, patience=1, min_delta=0.0)
    history = fit(model, x, y, [callback, recorder], epochs=3)
    assert np.all(np.diff(history.history["loss"]) < 0)
    multipliers = reference.plateau_learning_rates(history.history["loss"], 1.0, factor=0.5, patience=1, mode="max")
    np.testing.assert_array_equal(multipliers, [1.0, 0.5, 0.25])  # epochs 2 and 3 are plateaus
    expected = exponential_decay(12, 0.05, 4, 0.8) * np.repeat(np.concatenate([[1.0], multipliers[:-1]]), 4)
    np.testing.assert_allclose(recorder.learning_rates, expected, rtol=1e-6)
    assert_sgd_used(start, model, x, y, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"factor": 1.0}, r"factor must be a number in \(0, 1\), received: 1.0"),
     ({"factor": 0}, r"factor must be a number in \(0, 1\), received: 0"),
     ({"factor": float("nan")}, r"factor must be a number in \(0, 1\), received: nan"),
     ({"patience": -1}, "patience must be an integer >= 0, received: -1"),
     ({"cooldown": 1.5}, "cooldown must be an integer >= 0, received: 1.5"),
     ({"mode": "up"}, "mode must be one of 'auto', 'min', 'max', received: 'up'"),
     ({"min_lr": -1.0}, "min_lr must be a finite number >= 0, received: -1.0"),
     ({"min_delta": float("inf")}, "min_delta must be a finite number >= 0, received: inf"),
     ({"monitor": ""}, "monitor must be a non-empty string, received: ''"),
     ({"verbose": "0"}, "verbose must be an integer >= 0, received: '0'"),
     ({"monitor": "val_widgets"}, ("monitor must be a name holding 'loss', 'error', 'acc', 'auc', ... with "
                                   r"mode='auto' \(else pass mode='min' or 'max'\), received: 'val_widgets'"))],
)  # fmt: skip
def test_plateau_arguments(kwargs, message):
    assert infer_mode("val_loss") == "min" and infer_mode("val_accuracy") == "max" and infer_mode("mae_error") == "min"
    with pytest.raises(ValueError, match=f"^{message}$"):
        ReduceLROnPlateau(**kwargs)


def test_plateau_round_trips_through_its_config():
    assert_round_trip(
        ReduceLROnPlateau("loss", factor=0.2, patience=3, mode="min", min_delta=0.01, cooldown=1, min_lr=1e-4)
    )


def test_same_weights_with_two_replicas():
    case = harness_case("plateau_callbacks", schedule=True)
    single, mirrored = run_case(case), run_case(case, replicas=2)
    assert max_difference(single, mirrored) < TRAINING_TOLERANCE
