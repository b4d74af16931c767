"""TimeStopping: the budget, arguments, config, and with every LR callback the same stop on two workers."""

import numpy as np
import pytest

from lepton_keras.callbacks.time_stopping import TimeStopping
from tests.callbacks.cases import FakeClock, assert_round_trip, fit, harness_case, linear_model
from tests.support.cases import regression_data
from tests.support.harness import max_difference, run_case, run_case_on_workers

TRAINING_TOLERANCE = 1e-5


@pytest.mark.parametrize("check, batches", [("batch", 5), ("epoch", 8)])
def test_time_stopping_stops_once_the_budget_is_spent(check, batches):
    x, y = regression_data(32, seed=11)  # 4 batches per epoch
    model = linear_model(0.01)
    # one tick per reading: train begin reads once, each check once; elapsed after check k is k
    callback = TimeStopping(4.5 if check == "batch" else 1.5, check=check, clock=FakeClock(1.0))
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


def test_time_stopping_round_trips_through_its_config():
    assert_round_trip(TimeStopping(60.0, check="epoch", verbose=1))


@pytest.mark.multiworker
def test_same_weights_and_stopping_step_on_two_workers():
    # Warmup, monitor, plateau and guard too; the chief's clock decides when every worker stops.
    case = harness_case("combined_callbacks", "tests.callbacks.cases:poisoned_regression", schedule=True)
    single = run_case(case)
    worker_0, worker_1 = run_case_on_workers(case)
    # 11 batches (the chief's clock; worker 1's alone would stop after 1), 3 restorations of 2 steps each
    for result in (single, worker_0, worker_1):
        assert result.optimizer_variables[0] == 11 - 3 * 2
    assert max_difference(single, worker_0) < TRAINING_TOLERANCE
    assert max_difference(worker_0, worker_1) == 0.0
