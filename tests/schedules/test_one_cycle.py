"""OneCycle: the float64 1cycle reference (learning rate and momentum), landmarks, saving, bad arguments."""

import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.schedules.one_cycle import OneCycle
from tests.schedules import cases
from tests.schedules.reference import one_cycle as reference

NAMES = cases.schedule_names("one_cycle_")


@pytest.mark.parametrize("name", NAMES)
def test_schedule_matches_the_reference_in_an_xla_function(name):
    cases.assert_matches_the_reference_in_an_xla_function(name)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_round_trips_through_serialize(name):
    cases.assert_round_trips_through_serialize(name)


def test_landmarks():
    # By value: these fail if the reference and the code share a mistake in a phase end.
    one_cycle = OneCycle(0.5, 100, pct_start=0.3)
    assert float(one_cycle(0)) == pytest.approx(0.02)
    assert float(one_cycle(29)) == pytest.approx(0.5)  # the peak at pct_start * total - 1
    for t in (99, 100, 1000):
        assert float(one_cycle(t)) == pytest.approx(0.02 / 1e4)
        assert float(one_cycle.momentum(t)) == pytest.approx(0.95)
    assert float(one_cycle.momentum(0)) == pytest.approx(0.95)
    assert float(one_cycle.momentum(29)) == pytest.approx(0.85)


@pytest.mark.parametrize(
    "anneal, pct_start", [("cos", 0.3), ("linear", 0.25)]
)
def test_one_cycle_momentum_is_the_inverse_cycle(anneal, pct_start):
    schedule = OneCycle(0.4, 20, pct_start=pct_start, anneal=anneal, base_momentum=0.8, max_momentum=0.9)
    steps = range(0, 25)
    expected = [reference.one_cycle(0.4, 20, t, pct_start=pct_start, anneal=anneal, base_momentum=0.8,
                                    max_momentum=0.9)[1] for t in steps]  # fmt: skip
    function = tf.function(lambda step: schedule.momentum(step), jit_compile=True, autograph=False)
    actual = np.array([float(function(tf.constant(t, tf.int64))) for t in steps])
    cases.assert_matches_reference(actual, expected)


def test_keras_save_and_load_keep_the_schedule(tmp_path):
    cases.assert_keras_save_and_load_keep_the_schedule("one_cycle_linear_0.25", tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [(lambda: OneCycle(0.0, 100), "maximal_learning_rate must be a finite number > 0, received: 0.0"),
     (lambda: OneCycle(0.1, 1), "total_steps must be an integer >= 2, received: 1"),
     (lambda: OneCycle(0.1, 100, pct_start=1.0),
      r"pct_start must be a number in \(0, 1\) with pct_start \* total_steps > 1 \(total_steps=100\), received: 1.0"),
     (lambda: OneCycle(0.1, 10, pct_start=0.1),
      r"pct_start must be a number in \(0, 1\) with pct_start \* total_steps > 1 \(total_steps=10\), received: 0.1"),
     (lambda: OneCycle(0.1, 100, div_factor=0), "div_factor must be a finite number > 0, received: 0"),
     (lambda: OneCycle(0.1, 100, final_div_factor=-1.0),
      "final_div_factor must be a finite number > 0, received: -1.0"),
     (lambda: OneCycle(0.1, 100, anneal="exp"), "anneal must be one of 'cos', 'linear', received: 'exp'"),
     (lambda: OneCycle(0.1, 100, base_momentum=1.2), r"base_momentum must be a number in \[0, 1\), received: 1.2"),
     (lambda: OneCycle(0.1, 100, max_momentum=-0.1), r"max_momentum must be a number in \[0, 1\), received: -0.1")],
)  # fmt: skip
def test_bad_arguments_raise_a_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        make()
