"""LearningRateMonitor: History and CSVLogger, optimizer wrappers, config, the same weights on two replicas."""

import csv

import keras
import numpy as np
import pytest

from lepton_keras.callbacks.monitor import LearningRateMonitor, optimizer_hyperparameters
from tests.callbacks.cases import Recorder, assert_round_trip, fit, harness_case, linear_model
from tests.support.cases import regression_data
from tests.support.harness import max_difference, run_case

TRAINING_TOLERANCE = 1e-5


def test_monitor_feeds_history_and_csv_logger(tmp_path):
    x, y = regression_data(32, seed=4)  # 4 batches per epoch
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


def test_monitor_round_trips_through_its_config():
    assert_round_trip(LearningRateMonitor(log_momentum=False))


def test_same_weights_with_two_replicas():
    case = harness_case("monitor_callbacks")
    single, mirrored = run_case(case), run_case(case, replicas=2)
    assert max_difference(single, mirrored) < TRAINING_TOLERANCE
