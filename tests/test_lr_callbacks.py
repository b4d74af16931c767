"""The learning-rate callbacks against float64 references, Keras's own callbacks, and under strategies."""

import csv

import keras
import numpy as np
import pytest

from lepton_keras.callbacks import divergence_guard as guard_module
from lepton_keras.callbacks.divergence_guard import DivergenceGuard
from lepton_keras.callbacks.monitor import LearningRateMonitor, optimizer_hyperparameters
from lepton_keras.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau, infer_mode
from lepton_keras.callbacks.time_stopping import TimeStopping
from lepton_keras.callbacks.warmup import LearningRateWarmup
from lepton_keras.distribute import get_strategy
from tests import cases_lr_callbacks as cases
from tests.harness import TrainingCase, max_difference, run_case, run_case_on_workers
from tests.reference import lr_callbacks as reference

TRAINING_TOLERANCE = 1e-5
BATCH = 8


class Recorder(keras.callbacks.Callback):
    """Records the learning rate before each batch and the weights and optimizer state after it (and at the start)."""

    def __init__(self):
        super().__init__()
        self.learning_rates, self.states, self.batch_logs = [], [], []

    def _state(self):
        learning_rate = self.model.optimizer.learning_rate
        optimizer = [np.array(v) for v in self.model.optimizer.variables if v is not learning_rate]
        return [np.array(w) for w in self.model.get_weights()] + optimizer

    def on_train_begin(self, logs=None):
        self.states.append(self._state())

    def on_train_batch_begin(self, batch, logs=None):
        self.learning_rates.append(float(np.array(self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.states.append(self._state())
        self.batch_logs.append(dict(logs))


def linear_model(learning_rate, momentum=0.0):
    """Dense(1) from fixed starting weights, SGD on the mean squared error."""
    model = keras.Sequential([keras.Input((cases.FEATURES,)), keras.layers.Dense(1)])
    rng = np.random.default_rng(42)
    model.set_weights([rng.normal(size=(cases.FEATURES, 1)).astype(np.float32), np.array([0.3], np.float32)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum), loss="mse")
    return model


def fit(model, x, y, callbacks, epochs=1, batch_size=BATCH):
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)


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


def test_warmup_starts_at_one_over_the_replica_count_by_default():
    x, y = cases.regression(32, seed=3)
    for replicas, first in ((None, 0.05), (2, 0.025)):
        strategy = get_strategy("mirrored", cpu_replicas=replicas) if replicas else get_strategy("default")
        with strategy.scope():
            model = linear_model(0.05)
        recorder = Recorder()
        fit(model, x, y, [LearningRateWarmup(1, steps_per_epoch=2), recorder])
        assert recorder.learning_rates[0] == pytest.approx(first)
        assert recorder.learning_rates[2] == pytest.approx(0.05)  # steps_per_epoch=2 overrides fit's 4


def test_warmup_needs_the_steps_per_epoch():
    callback = LearningRateWarmup(1)
    callback.set_model(linear_model(0.1))
    callback.set_params({"steps": None, "epochs": 1})
    with pytest.raises(ValueError, match="steps_per_epoch"):
        callback.on_train_begin()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"warmup_epochs": 0}, "warmup_epochs=0"), ({"warmup_epochs": 1, "steps_per_epoch": 0}, "steps_per_epoch=0"),
     ({"warmup_epochs": 1, "initial_factor": 1.5}, "initial_factor=1.5"),
     ({"warmup_epochs": 1, "initial_factor": 0}, "initial_factor=0")],
)  # fmt: skip
def test_warmup_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
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
    with pytest.raises(ValueError, match="log_momentum=1"):
        LearningRateMonitor(log_momentum=1)


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


def test_plateau_arguments():
    assert infer_mode("val_loss") == "min" and infer_mode("val_accuracy") == "max" and infer_mode("mae_error") == "min"
    for kwargs, message in [({"factor": 1.0}, "factor=1.0"), ({"factor": 0}, "factor=0"),
                            ({"patience": -1}, "patience=-1"), ({"cooldown": 1.5}, "cooldown=1.5"),
                            ({"mode": "up"}, "mode='up'"), ({"min_lr": -1.0}, "min_lr=-1.0"),
                            ({"monitor": "val_widgets"}, "monitor='val_widgets'")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            ReduceLROnPlateau(**kwargs)


# DivergenceGuard


def numpy_mlp_loss(weights, x, y):
    """The MSE of small_mlp (Dense relu -> Dense) in float64."""
    kernel_1, bias_1, kernel_2, bias_2 = (np.asarray(w, np.float64) for w in weights[:4])
    hidden = np.maximum(x @ kernel_1 + bias_1, 0.0)
    return float(np.mean((hidden @ kernel_2 + bias_2 - y) ** 2))


def test_guard_restores_the_good_snapshot_bitwise_and_halves_the_rate():
    x, y = cases.poisoned_regression(64, seed=0)
    keras.utils.set_random_seed(0)
    model = cases.small_mlp()
    guard, recorder = DivergenceGuard(spike_factor=10.0, window=5, snapshot_every=1), Recorder()
    fit(model, x, y, [guard, recorder], epochs=3, batch_size=16)
    # batch 2 of 4 holds the corrupt row: one restoration per epoch
    assert [event.step for event in guard.events] == [3, 7, 11]
    for attempt, event in enumerate(guard.events):
        restored, snapshot = recorder.states[event.step], recorder.states[event.restored_step]
        assert event.restored_step == event.step - 2  # the last snapshot a later good loss vouched for
        assert all(np.array_equal(a, b) for a, b in zip(restored, snapshot))
        assert event.learning_rate == pytest.approx(0.05 * 0.5 ** (attempt + 1))
        # the loss it saw is the corrupt batch's own loss, from the weights before that batch
        batch_rows = slice(32, 48)
        loss = numpy_mlp_loss(recorder.states[event.step - 1], x[batch_rows], y[batch_rows])
        assert event.loss == pytest.approx(loss, rel=1e-4) and event.loss > 10 * event.median
    assert int(np.array(model.optimizer.iterations)) == 12 - 3 * 2
    assert float(np.array(model.optimizer.learning_rate)) == pytest.approx(0.05 / 8)


def test_guard_checking_every_two_batches_sees_the_spike_at_the_next_check():
    x, y = cases.poisoned_regression(64, seed=0)
    keras.utils.set_random_seed(0)
    model = cases.small_mlp()
    guard, recorder = DivergenceGuard(window=5, snapshot_every=2, check_every=2), Recorder()
    fit(model, x, y, [guard, recorder], batch_size=16)
    # checks at steps 2 and 4; the corrupt batch is step 3: the snapshot of step 2 was never vouched for
    assert [(event.step, event.restored_step) for event in guard.events] == [(4, 0)]
    assert all(np.array_equal(a, b) for a, b in zip(recorder.states[4], recorder.states[0]))


def test_guard_composes_with_warmup_on_a_float_rate():
    x, y = cases.poisoned_regression(64, seed=0)
    model = linear_model(0.05)
    guard, recorder = DivergenceGuard(snapshot_every=1), Recorder()
    fit(model, x, y, [LearningRateWarmup(2, initial_factor=0.25), guard, recorder], batch_size=16)
    assert [(event.step, event.restored_step) for event in guard.events] == [(3, 1)]
    # step 4 runs at iteration 1 again, at half the warmed-up rate
    factors = reference.warmup_multipliers(3, 8, 0.25)
    np.testing.assert_allclose(recorder.learning_rates, 0.05 * np.array([*factors, 0.5 * factors[1]]), rtol=1e-6)


def test_guard_recovers_from_nan_and_gives_up_after_max_attempts():
    x, y = cases.regression(48, seed=8)  # 6 batches of 8
    x[20] = np.inf  # batch 2 only: restored once, and the epoch's logged loss stays finite
    model = linear_model(0.05)
    guard = DivergenceGuard(snapshot_every=1)
    history = fit(model, x, y, [guard])
    assert len(guard.events) == 1 and not np.isfinite(guard.events[0].loss)
    assert np.isfinite(history.history["loss"][0]) and np.all(np.isfinite(model.get_weights()[0]))

    x[24:] = np.inf  # from batch 3 on, every batch diverges
    model = linear_model(0.05)
    with pytest.raises(RuntimeError, match=r"after 3 restorations of the snapshot from step 1 \(max_attempts=3\)"):
        fit(model, x, y, [DivergenceGuard(snapshot_every=1, max_attempts=3)])


def test_guard_is_a_no_op_on_healthy_training():
    x, y = cases.regression(64, seed=9)
    results = []
    for callbacks in ([], [DivergenceGuard(snapshot_every=1, window=3)]):
        keras.utils.set_random_seed(0)
        model = cases.small_mlp(optimizer="adam")
        fit(model, x, y, callbacks, epochs=2)
        results.append(model.get_weights() + [np.array(v) for v in model.optimizer.variables])
    assert callbacks[0].events == []
    assert all(np.array_equal(a, b) for a, b in zip(*results))


def test_guard_reads_batch_losses_from_running_means():
    losses = np.random.default_rng(10).uniform(0.5, 2.0, size=12)
    running = np.cumsum(losses) / np.arange(1, 13)
    for before, now in [(0, 1), (3, 4), (4, 7), (0, 12)]:
        mean_before = running[before - 1] if before else 0.0
        got = guard_module.interval_mean(running[now - 1], now, mean_before, before)
        assert got == pytest.approx(np.mean(losses[before:now]), rel=1e-12)
    assert guard_module.is_diverged(float("nan"), [1.0], None)
    assert guard_module.is_diverged(10.5, [1.0, 1.0, 50.0], 10.0)
    assert not guard_module.is_diverged(9.5, [1.0, 1.0, 50.0], 10.0)
    assert not guard_module.is_diverged(1e9, [], 10.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"spike_factor": 1.0}, "spike_factor=1.0"), ({"lr_factor": 0.0}, "lr_factor=0.0"),
     ({"window": 0}, "window=0"), ({"max_attempts": 2.0}, "max_attempts=2.0"), ({"check_every": 0}, "check_every=0"),
     ({"snapshot_every": -3}, "snapshot_every=-3")],
)  # fmt: skip
def test_guard_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DivergenceGuard(**kwargs)


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


def test_time_stopping_arguments():
    for kwargs, message in [({"seconds": 0}, "seconds=0"), ({"seconds": 1, "check": "step"}, "check='step'"),
                            ({"seconds": 1, "clock": 3.0}, "clock=3.0")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
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
