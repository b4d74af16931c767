"""The learning-rate callbacks against float64 references, Keras's own callbacks, and under strategies."""

import csv

import keras
import numpy as np
import pytest

from lepton_keras.callbacks.divergence_guard import DivergenceGuard
from lepton_keras.callbacks.monitor import LearningRateMonitor, optimizer_hyperparameters
from lepton_keras.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau, infer_mode
from lepton_keras.callbacks.time_stopping import TimeStopping
from lepton_keras.callbacks.warmup import LearningRateWarmup
from lepton_keras.distribute import get_strategy
from tests import cases_lr_callbacks as cases
from tests.cases_lr_callbacks import BATCH, Recorder, fit, linear_model
from tests.harness import TrainingCase, max_difference, run_case, run_case_on_workers
from tests.reference import lr_callbacks as reference

TRAINING_TOLERANCE = 1e-5


def assert_sgd_used(model_start, model, x, y, learning_rates):
    """The trained weights equal float64 SGD with exactly these learning rates."""
    kernel, bias, _ = reference.sgd_linear_regression(x, y, *model_start, learning_rates, BATCH)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_weights()[1], bias, rtol=1e-5, atol=1e-6)


def exponential_decay(steps, initial, decay_steps, rate):
    return initial * rate ** (np.arange(steps) / decay_steps)


def assert_round_trip(callback):
    config = callback.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(restored) is type(callback) and restored.get_config() == config


def harness_case(callbacks_fn, data_fn="regression", epochs=3, **options):
    return TrainingCase(
        "tests.cases_lr_callbacks:small_mlp", f"tests.cases_lr_callbacks:{data_fn}", steps=4, epochs=epochs,
        model_options=options, callbacks_fn=f"tests.cases_lr_callbacks:{callbacks_fn}",
    )  # fmt: skip


# LearningRateWarmup


@pytest.mark.parametrize("schedule", [False, True])
def test_warmup_trains_with_the_goyal_learning_rates(schedule):
    x, y = cases.regression(64, seed=1)  # 8 batches per epoch
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
    x, y = cases.regression(64, seed=2)
    model = linear_model(0.05)
    start, recorder = model.get_weights(), Recorder()
    fit(model, x, y, [LearningRateWarmup(1.5, initial_factor=0.25), recorder])
    fit(model, x, y, [LearningRateWarmup(1.5, initial_factor=0.25), recorder])
    expected = 0.05 * reference.warmup_multipliers(16, 12, 0.25)
    np.testing.assert_allclose(recorder.learning_rates, expected, rtol=1e-6)
    assert_sgd_used(start, model, x, y, expected)


@pytest.mark.parametrize("replicas, initial_factor", [(None, 0.1), (2, 0.5)])
def test_warmup_starts_at_one_over_the_replica_count_and_at_a_tenth_on_one_device(replicas, initial_factor):
    x, y = cases.regression(32, seed=3)  # 4 batches per epoch
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


# LearningRateMonitor


def test_monitor_feeds_history_and_csv_logger(tmp_path):
    x, y = cases.regression(32, seed=4)  # 4 batches per epoch
    model = linear_model(keras.optimizers.schedules.ExponentialDecay(0.05, 3, 0.5), momentum=0.8)
    recorder = Recorder()
    path = str(tmp_path / "log.csv")
    history = fit(model, x, y, [LearningRateMonitor(), keras.callbacks.CSVLogger(path), recorder], epochs=3)
    # after epoch e, iterations = 4 (e + 1): the rate of the next step
    expected = 0.05 * 0.5 ** (4 * np.arange(1, 4) / 3)
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
    np.testing.assert_allclose(history.history["momentum"], 0.8, rtol=1e-7)
    with open(path) as file:
        rows = list(csv.DictReader(file))
    np.testing.assert_allclose([float(row["learning_rate"]) for row in rows], expected, rtol=1e-6)
    batch_rates = [logs["learning_rate"] for logs in recorder.batch_logs]
    np.testing.assert_allclose(batch_rates, 0.05 * 0.5 ** (np.arange(1, 13) / 3), rtol=1e-6)


def test_monitor_looks_through_wrappers_for_beta_1():
    adam = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.003, beta_1=0.85))
    values = optimizer_hyperparameters(adam)
    assert values == pytest.approx({"learning_rate": 0.003, "beta_1": 0.85})
    assert optimizer_hyperparameters(adam, log_momentum=False) == pytest.approx({"learning_rate": 0.003})
    for value in (1, "False"):  # a string is not read as a bool
        with pytest.raises(ValueError, match=f"^log_momentum must be True or False, received: {value!r}$"):
            LearningRateMonitor(log_momentum=value)


# ReduceLROnPlateau

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
    x, y = cases.regression(32, seed=7)
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


# TimeStopping


@pytest.mark.parametrize("check, batches", [("batch", 5), ("epoch", 8)])
def test_time_stopping_stops_once_the_budget_is_spent(check, batches):
    x, y = cases.regression(32, seed=11)  # 4 batches per epoch
    model = linear_model(0.01)
    # one tick per reading: train begin reads once, each check once; elapsed after check k is k
    callback = TimeStopping(4.5 if check == "batch" else 1.5, check=check, clock=cases.FakeClock(1.0))
    fit(model, x, y, [callback], epochs=5)
    assert int(np.array(model.optimizer.iterations)) == batches
    assert callback.stopped_at == ((1, 0) if check == "batch" else (1, None))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"seconds": 0}, "seconds must be a finite number > 0, received: 0"),
     ({"seconds": float("inf")}, "seconds must be a finite number > 0, received: inf"),
     ({"seconds": 1, "check": "step"}, "check must be one of 'batch', 'epoch', received: 'step'"),
     ({"seconds": 1, "verbose": "1"}, "verbose must be an integer >= 0, received: '1'"),
     ({"seconds": 1, "clock": 3.0}, "clock must be a function returning seconds, received: 3.0")],
)  # fmt: skip
def test_time_stopping_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        TimeStopping(**kwargs)


# Serialization


@pytest.mark.parametrize(
    "callback",
    [LearningRateWarmup(2.5, steps_per_epoch=10, initial_factor=0.125, verbose=1),
     LearningRateMonitor(log_momentum=False),
     ReduceLROnPlateau("loss", factor=0.2, patience=3, mode="min", min_delta=0.01, cooldown=1, min_lr=1e-4),
     DivergenceGuard(spike_factor=None, window=7, lr_factor=0.25, max_attempts=2, check_every=3, snapshot_every=5),
     TimeStopping(60.0, check="epoch", verbose=1)],
)  # fmt: skip
def test_callbacks_round_trip_through_their_config(callback):
    assert_round_trip(callback)


# Strategy equivalence


@pytest.mark.parametrize(
    "callbacks_fn, data_fn, options",
    [("warmup_callbacks", "regression", {}), ("warmup_callbacks", "regression", {"schedule": True}),
     ("plateau_callbacks", "regression", {"schedule": True}),
     ("guard_callbacks", "poisoned_regression", {"schedule": True, "optimizer": "adam"}),
     ("monitor_callbacks", "regression", {})],
)  # fmt: skip
def test_same_weights_with_two_replicas(callbacks_fn, data_fn, options):
    case = harness_case(callbacks_fn, data_fn, **options)
    single, mirrored = run_case(case), run_case(case, replicas=2)
    assert max_difference(single, mirrored) < TRAINING_TOLERANCE
    if callbacks_fn == "guard_callbacks":  # three restorations, each two steps back
        assert single.optimizer_variables[0] == mirrored.optimizer_variables[0] == 12 - 3 * 2


@pytest.mark.multiworker
def test_same_weights_and_stopping_step_on_two_workers():
    case = harness_case("combined_callbacks", "poisoned_regression", schedule=True)
    single = run_case(case)
    worker_0, worker_1 = run_case_on_workers(case)
    # 11 batches (the chief's clock; worker 1's alone would stop after 1), 3 restorations of 2 steps each
    for result in (single, worker_0, worker_1):
        assert result.optimizer_variables[0] == 11 - 3 * 2
    assert max_difference(single, worker_0) < TRAINING_TOLERANCE
    assert max_difference(worker_0, worker_1) == 0.0
