"""MultipliedSchedule: it scales a base schedule, training follows its changing multiplier, config, bad arguments."""

import keras
import numpy as np
import pytest

from lepton_keras.schedules.cyclical import CyclicalLearningRate
from lepton_keras.schedules.multiplier import MultipliedSchedule
from tests.callbacks.reference.cycle_momentum import sgd
from tests.schedules.cases import SCHEDULES, fit_full_batch, linear_model, linear_problem, mse_gradient, traced_values


@pytest.mark.parametrize("name", ["warmup_linear_cosine", "cyclical_triangular2_2.5", "one_cycle_cos_0.3",
                                  "wsd_sqrt", "inverse_sqrt_scaled"])  # fmt: skip
def test_training_follows_the_multiplied_schedule(name):
    make, expected, _ = SCHEDULES[name]
    x, y, kernel = linear_problem()
    schedule = MultipliedSchedule(make(), multiplier=2.0)
    steps, change_at = 8, 3

    def halve(epoch, logs=None):
        if epoch == change_at:
            schedule.multiplier.assign(0.5)

    model = linear_model(keras.optimizers.SGD(schedule), kernel)
    trained = fit_full_batch(model, x, y, steps, [keras.callbacks.LambdaCallback(on_epoch_begin=halve)])
    multipliers = [2.0 if t < change_at else 0.5 for t in range(steps)]
    rates = [m * expected(t) for t, m in enumerate(multipliers)]
    np.testing.assert_allclose(trained, sgd(kernel, mse_gradient(x, y), rates, [0.0] * steps), rtol=1e-5)
    unscaled = sgd(kernel, mse_gradient(x, y), [expected(t) for t in range(steps)], [0.0] * steps)
    assert np.max(np.abs(trained - unscaled)) > 1e-4  # the multiplier made a difference
    assert MultipliedSchedule.from_config(schedule.get_config()).get_config()["multiplier"] == 0.5


def test_multiplied_schedule_scales_the_base_and_round_trips():
    base = CyclicalLearningRate(0.01, 0.1, 4)
    schedule = MultipliedSchedule(base, multiplier=3.0)
    steps = range(12)
    np.testing.assert_allclose(traced_values(schedule, steps), 3.0 * traced_values(base, steps), rtol=1e-6)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored.base, CyclicalLearningRate) and float(restored.multiplier.numpy()) == 3.0
    assert float(MultipliedSchedule(0.2, 0.5)(7)) == pytest.approx(0.1)


TARGET = "a LearningRateSchedule or a finite number >= 0"


@pytest.mark.parametrize(
    "make, message",
    [(lambda: MultipliedSchedule("fast"), f"base must be {TARGET}, received: 'fast'"),
     (lambda: MultipliedSchedule(0.1, multiplier=0.0), "multiplier must be a finite number > 0, received: 0.0"),
     (lambda: MultipliedSchedule(0.1, multiplier=float("nan")),
      "multiplier must be a finite number > 0, received: nan"),
     (lambda: MultipliedSchedule(0.1, multiplier=float("inf")),
      "multiplier must be a finite number > 0, received: inf"),
     (lambda: MultipliedSchedule(float("nan")), f"base must be {TARGET}, received: nan")],
)  # fmt: skip
def test_bad_arguments_raise_a_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        make()
