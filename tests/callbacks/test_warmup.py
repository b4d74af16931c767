"""LearningRateWarmup: the float64 reference of gradual warmup in training, resumed (bitwise, from a `.keras` file or a
backup written during the warmup), on replicas, config, arguments."""

import keras
import numpy as np
import pytest

from lepton_keras.callbacks.checkpoint import WorkerBackupAndRestore
from lepton_keras.callbacks.learning_rate import learning_rate_schedule
from lepton_keras.callbacks.warmup import LearningRateWarmup, WarmupSchedule
from lepton_keras.distribute import get_strategy
from tests.callbacks.cases import Recorder, assert_round_trip, assert_sgd_used, exponential_decay, fit, harness_case
from tests.callbacks.cases import BATCH, linear_model
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


def test_warmup_after_a_fit_without_it_trains_with_the_warmed_rates():
    # The first fit traces a step that reads the float learning rate; the warmup's schedule must replace it.
    x, y = regression_data(64, seed=6)
    model = linear_model(0.05)
    fit(model, x, y, [])
    start = model.get_weights()
    fit(model, x, y, [LearningRateWarmup(2, initial_factor=0.25)])  # steps 8 to 15 of a 16-step warmup
    assert_sgd_used(start, model, x, y, 0.05 * reference.warmup_multipliers(16, 16, 0.25)[8:])


def state(model):
    """The weights and every optimizer variable."""
    return [np.array(v) for v in [*model.get_weights(), *model.optimizer.variables]]


def assert_bitwise_equal(resumed, uninterrupted):
    assert len(resumed) == len(uninterrupted)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, uninterrupted)), max_difference(resumed, uninterrupted)


def learning_rate(schedule):
    return keras.optimizers.schedules.ExponentialDecay(0.05, 5, 0.7) if schedule else 0.05


@pytest.mark.parametrize("schedule", [False, True])
def test_a_model_saved_during_the_warmup_resumes_it_bitwise(tmp_path, schedule):
    x, y = regression_data(64, seed=4)  # 8 batches per epoch; the warmup takes 24
    uninterrupted, recorder = linear_model(learning_rate(schedule), momentum=0.9), Recorder()
    fit(uninterrupted, x, y, [LearningRateWarmup(3, initial_factor=0.25), recorder], epochs=4)

    interrupted = linear_model(learning_rate(schedule), momentum=0.9)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch_{epoch}.keras"))
    fit(interrupted, x, y, [checkpoint, LearningRateWarmup(3, initial_factor=0.25)], epochs=2)
    for callbacks in ([LearningRateWarmup(3, initial_factor=0.25)], []):  # a new callback takes the ramp over
        loaded, resumed_recorder = keras.saving.load_model(tmp_path / "epoch_1.keras"), Recorder()  # at step 8
        assert isinstance(learning_rate_schedule(loaded.optimizer), WarmupSchedule)
        loaded.fit(x, y, batch_size=BATCH, epochs=4, initial_epoch=1, shuffle=False, verbose=0,
                   callbacks=[*callbacks, resumed_recorder])  # fmt: skip
        assert resumed_recorder.learning_rates == recorder.learning_rates[8:]
        assert_bitwise_equal(state(loaded), state(uninterrupted))
    np.testing.assert_allclose(recorder.learning_rates[8:24],  # mid-warmup, not warmed down twice
                               0.05 * reference.warmup_multipliers(24, 24, 0.25)[8:]
                               * (exponential_decay(24, 0.05, 5, 0.7)[8:] / 0.05 if schedule else 1.0),
                               rtol=1e-6)  # fmt: skip


class Interrupted(Exception):
    pass


class Interrupt(keras.callbacks.Callback):
    """Stops training with an exception after global step `step`, as a killed job would."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(np.array(self.model.optimizer.iterations)) == self.step:
            raise Interrupted(f"after step {self.step}")


@pytest.mark.parametrize("backup, schedule", [("keras", False), ("worker", False), ("worker", True)])
def test_a_run_interrupted_during_the_warmup_resumes_it_bitwise_from_its_backup(tmp_path, backup, schedule):
    x, y = regression_data(64, seed=5)  # 8 batches per epoch; the warmup takes 12

    def callbacks():  # the backup before the warmup: it restores before the warmup's on_train_begin
        if backup == "keras":  # at the end of each epoch: restored at step 8
            return [keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), LearningRateWarmup(1.5)]
        return [WorkerBackupAndRestore(tmp_path / "backup", save_freq=3), LearningRateWarmup(1.5)]  # at step 9

    uninterrupted = linear_model(learning_rate(schedule), momentum=0.9)
    fit(uninterrupted, x, y, [LearningRateWarmup(1.5)], epochs=3)
    with pytest.raises(Interrupted):
        fit(linear_model(learning_rate(schedule), momentum=0.9), x, y, [*callbacks(), Interrupt(10)], epochs=3)
    resumed = linear_model(learning_rate(schedule), momentum=0.9)  # built afresh, as a restarted job does
    fit(resumed, x, y, callbacks(), epochs=3)
    assert int(np.array(resumed.optimizer.iterations)) == 24
    assert_bitwise_equal(state(resumed), state(uninterrupted))


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
