"""WarmupStableDecay: the float64 reference of MiniCPM's WSD, landmarks, saving, bad arguments."""

import numpy as np
import pytest

from lepton_keras.schedules.warmup_stable_decay import WarmupStableDecay
from tests.schedules import cases

NAMES = cases.schedule_names("wsd_")


@pytest.mark.parametrize("name", NAMES)
def test_schedule_matches_the_reference_in_an_xla_function(name):
    cases.assert_matches_the_reference_in_an_xla_function(name)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_round_trips_through_serialize(name):
    cases.assert_round_trips_through_serialize(name)


def test_landmarks():
    # By value: these fail if the reference and the code share a mistake in a phase end.
    wsd = WarmupStableDecay(1.0, 10, 20, 10, decay="sqrt")
    assert [float(wsd(t)) for t in (0, 5, 10, 29, 30, 35, 40, 50)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.0, 1.0, 1 - np.sqrt(0.5), 0.0, 0.0], abs=1e-7
    )


def test_keras_save_and_load_keep_the_schedule(tmp_path):
    cases.assert_keras_save_and_load_keep_the_schedule("wsd_cosine", tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [(lambda: WarmupStableDecay(0.0, 1, 1, 1), "peak_learning_rate must be a finite number > 0, received: 0.0"),
     (lambda: WarmupStableDecay(0.1, -1, 1, 1), "warmup_steps must be an integer >= 0, received: -1"),
     (lambda: WarmupStableDecay(0.1, 1, 1.5, 1), "stable_steps must be an integer >= 0, received: 1.5"),
     (lambda: WarmupStableDecay(0.1, 1, 1, True), "decay_steps must be an integer >= 0, received: True"),
     (lambda: WarmupStableDecay(0.1, 1, 1, 1, final_learning_rate=0.2),
      r"final_learning_rate must be a number in \[0, peak_learning_rate=0.1\], received: 0.2"),
     (lambda: WarmupStableDecay(0.1, 1, 1, 1, decay="exp"),
      "decay must be one of 'linear', 'cosine', 'sqrt', received: 'exp'")],
)  # fmt: skip
def test_bad_arguments_raise_a_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        make()
