"""Warmup against the float64 reference of Goyal et al.'s gradual warmup, its landmarks, saving and bad arguments."""

import pytest

from lepton_keras.schedules.warmup import Warmup
from tests.schedules import cases

NAMES = cases.schedule_names("warmup_")


@pytest.mark.parametrize("name", NAMES)
def test_schedule_matches_the_reference_in_an_xla_function(name):
    cases.assert_matches_the_reference_in_an_xla_function(name)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_round_trips_through_serialize(name):
    cases.assert_round_trips_through_serialize(name)


def test_landmarks():
    # By value: these fail if the reference and the code share a mistake in a phase end.
    warmup = Warmup(0.4, 10, start_factor=0.25)
    assert [float(warmup(t)) for t in (0, 5, 10, 11)] == pytest.approx([0.1, 0.25, 0.4, 0.4])


def test_keras_save_and_load_keep_the_schedule(tmp_path):
    cases.assert_keras_save_and_load_keep_the_schedule("warmup_linear_cosine", tmp_path)


TARGET = "a LearningRateSchedule or a finite number >= 0"


@pytest.mark.parametrize(
    "make, message",
    [(lambda: Warmup("fast", 5), f"target must be {TARGET}, received: 'fast'"),
     (lambda: Warmup(-0.1, 5), f"target must be {TARGET}, received: -0.1"),
     (lambda: Warmup(float("inf"), 5), f"target must be {TARGET}, received: inf"),
     (lambda: Warmup(0.1, -1), "warmup_steps must be an integer >= 0, received: -1"),
     (lambda: Warmup(0.1, 2.5), "warmup_steps must be an integer >= 0, received: 2.5"),
     (lambda: Warmup(0.1, 5, kind="cosine"), "kind must be one of 'linear', 'exponential', received: 'cosine'"),
     (lambda: Warmup(0.1, 5, start_factor=-0.5),
      "start_factor must be a finite number >= 0 for kind='linear', received: -0.5"),
     (lambda: Warmup(0.1, 5, start_factor=0.0, kind="exponential"),
      "start_factor must be a finite number > 0 for kind='exponential', received: 0.0"),
     (lambda: Warmup(0.1, 5, start_factor=float("nan")),
      "start_factor must be a finite number >= 0 for kind='linear', received: nan"),
     (lambda: Warmup(0.1, 5, offset_target="False"), "offset_target must be True or False, received: 'False'")],
)  # fmt: skip
def test_bad_arguments_raise_a_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        make()
