"""CyclicalLearningRate: Smith's (2017) float64 reference, landmarks, saving, bad arguments, MirroredStrategy."""

import pytest

from lepton_keras.schedules.cyclical import CyclicalLearningRate
from tests.schedules import cases
from tests.support.harness import TrainingCase, max_difference, run_case

NAMES = cases.schedule_names("cyclical_")
TRAINING_TOLERANCE = 1e-5  # a few steps of float32 training


@pytest.mark.parametrize("name", NAMES)
def test_schedule_matches_the_reference_in_an_xla_function(name):
    cases.assert_matches_the_reference_in_an_xla_function(name)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_round_trips_through_serialize(name):
    cases.assert_round_trips_through_serialize(name)


def test_landmarks():
    # By value: these fail if the reference and the code share a mistake in a phase end.
    cyclical = CyclicalLearningRate(0.01, 0.1, 5)
    assert [float(cyclical(t)) for t in (0, 5, 10, 15, 20)] == pytest.approx([0.01, 0.1, 0.01, 0.1, 0.01])
    halving = CyclicalLearningRate(0.0, 0.8, 5, mode="triangular2")
    assert [float(halving(t)) for t in (5, 15, 25)] == pytest.approx([0.8, 0.4, 0.2])


def test_keras_save_and_load_keep_the_schedule(tmp_path):
    cases.assert_keras_save_and_load_keep_the_schedule("cyclical_exp_range_4", tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [(lambda: CyclicalLearningRate(-0.1, 0.1, 4),
      "initial_learning_rate must be a finite number >= 0, received: -0.1"),
     (lambda: CyclicalLearningRate(0.1, float("nan"), 4),
      "maximal_learning_rate must be a finite number > 0, received: nan"),
     (lambda: CyclicalLearningRate(0.01, 0.0, 4), "maximal_learning_rate must be a finite number > 0, received: 0.0"),
     (lambda: CyclicalLearningRate(0.01, 0.1, 0), "step_size must be a finite number > 0, received: 0"),
     (lambda: CyclicalLearningRate(0.01, 0.1, float("inf")), "step_size must be a finite number > 0, received: inf"),
     (lambda: CyclicalLearningRate(0.01, 0.1, 4, mode="sine"),
      "mode must be one of 'triangular', 'triangular2', 'exp_range', received: 'sine'"),
     (lambda: CyclicalLearningRate(0.01, 0.1, 4, mode="exp_range", gamma=1.5),
      r"gamma must be a number in \(0, 1\], received: 1.5")],
)  # fmt: skip
def test_bad_arguments_raise_a_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        make()


def test_same_weights_with_and_without_mirrored_strategy():
    model_fn = "tests.schedules.cases:dense_sgd_cyclical"
    case = TrainingCase(model_fn, "tests.support.cases:regression_data", steps=6, global_batch_size=8)
    single, mirrored = run_case(case), run_case(case, replicas=2)
    untrained = run_case(TrainingCase(model_fn, "tests.support.cases:regression_data", steps=0))
    assert max_difference(single, untrained) > 1e-3  # it trained
    assert max_difference(single, mirrored) < TRAINING_TOLERANCE
