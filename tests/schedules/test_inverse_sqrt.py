"""InverseSquareRootDecay: the float64 reference of Vaswani et al.'s Eq. (3), landmarks, saving, bad arguments."""

import pytest

from lepton_keras.schedules.inverse_sqrt import InverseSquareRootDecay
from tests.schedules import cases

NAMES = cases.schedule_names("inverse_sqrt_")


@pytest.mark.parametrize("name", NAMES)
def test_schedule_matches_the_reference_in_an_xla_function(name):
    cases.assert_matches_the_reference_in_an_xla_function(name)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_round_trips_through_serialize(name):
    cases.assert_round_trips_through_serialize(name)


def test_landmarks():
    # By value: these fail if the reference and the code share a mistake in a phase end.
    transformer = InverseSquareRootDecay(4000, d_model=512)
    assert float(transformer(3999)) == pytest.approx(512**-0.5 * 4000**-0.5)  # the peak at step_num = warmup
    assert float(transformer(15_999)) == pytest.approx(512**-0.5 * 16_000**-0.5)
    peak = InverseSquareRootDecay(100, peak_learning_rate=0.3)
    assert float(peak(99)) == pytest.approx(0.3)
    assert float(peak(399)) == pytest.approx(0.15)


def test_keras_save_and_load_keep_the_schedule(tmp_path):
    cases.assert_keras_save_and_load_keep_the_schedule("inverse_sqrt_peak", tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [(lambda: InverseSquareRootDecay(0, d_model=512), "warmup_steps must be an integer >= 1, received: 0"),
     (lambda: InverseSquareRootDecay(4000),
      r"d_model, peak_learning_rate must be exactly one given, received: \(None, None\)"),
     (lambda: InverseSquareRootDecay(4000, d_model=512, peak_learning_rate=1e-3),
      r"d_model, peak_learning_rate must be exactly one given, received: \(512, 0.001\)"),
     (lambda: InverseSquareRootDecay(4000, d_model=0), "d_model must be an integer >= 1 or None, received: 0"),
     (lambda: InverseSquareRootDecay(4000, d_model=512, scale=-1.0),
      "scale must be a finite number > 0, received: -1.0"),
     (lambda: InverseSquareRootDecay(4000, peak_learning_rate=-1e-3),
      "peak_learning_rate must be a finite number > 0 or None, received: -0.001"),
     (lambda: InverseSquareRootDecay(4000, peak_learning_rate=1e-3, scale=2.0),
      r"scale must be 1.0 with peak_learning_rate \(it applies to the d_model form only\), received: 2.0")],
)  # fmt: skip
def test_bad_arguments_raise_a_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        make()
