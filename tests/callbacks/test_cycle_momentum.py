"""CycleMomentum drives SGD/RMSprop momentum and Adam's beta_1 as float64 references do, refusals, MirroredStrategy."""

import os

import keras
import numpy as np
import pytest

from lepton_keras.callbacks.cycle_momentum import CycleMomentum
from lepton_keras.schedules.cyclical import CyclicalLearningRate
from lepton_keras.schedules.one_cycle import OneCycle
from tests.callbacks.reference import cycle_momentum as reference
from tests.schedules.cases import fit_full_batch, linear_model, linear_problem, mse_gradient
from tests.schedules.reference.one_cycle import one_cycle
from tests.support.harness import TrainingCase, max_difference, run_case

TRAINING_TOLERANCE = 1e-5


@pytest.mark.parametrize("wrapped", [False, True])
def test_cycle_momentum_drives_sgd_momentum(wrapped):
    x, y, kernel = linear_problem(seed=1)
    total = 10
    schedule = OneCycle(0.2, total, pct_start=0.4, base_momentum=0.5, max_momentum=0.9)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    if wrapped:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model = linear_model(optimizer, kernel)
    inner = optimizer.inner_optimizer if wrapped else optimizer
    fit_full_batch(model, x, y, 2)  # traced with the float momentum 0.9
    fit_full_batch(model, x, y, 5, [CycleMomentum(schedule)])  # must retrace
    trained = fit_full_batch(model, x, y, 5, [CycleMomentum(schedule)])  # retraces with a new variable

    steps = 12  # beyond total_steps: lr_min and max_momentum
    pairs = [one_cycle(0.2, total, t, pct_start=0.4, base_momentum=0.5, max_momentum=0.9) for t in range(steps)]
    rates, momentums = zip(*pairs)
    momentums = [0.9, 0.9, *momentums[2:]]
    np.testing.assert_allclose(trained, reference.sgd(kernel, mse_gradient(x, y), rates, momentums), rtol=1e-5)
    fixed = reference.sgd(kernel, mse_gradient(x, y), rates, [0.9] * steps)
    assert np.max(np.abs(trained - fixed)) > 1e-3  # the scheduled momentum made a difference
    assert type(inner.momentum) is float and inner.momentum == pytest.approx(momentums[-1])
    control = keras.optimizers.SGD(schedule, momentum=0.9)
    if wrapped:
        control = keras.optimizers.LossScaleOptimizer(control)
    fit_full_batch(linear_model(control, kernel), x, y, 1)
    assert len(optimizer.variables) == len(control.variables)  # the momentum variable is not optimizer state
    assert keras.optimizers.SGD.from_config(inner.get_config()).momentum == inner.momentum


def test_cycle_momentum_drives_adam_beta_1_and_builds_momentum_into_sgd(tmp_path):
    x, y, kernel = linear_problem(seed=2)
    schedule = OneCycle(0.05, 6, pct_start=0.5, base_momentum=0.6, max_momentum=0.95)
    optimizer = keras.optimizers.Adam(schedule)
    model = linear_model(optimizer, kernel)
    path = os.path.join(tmp_path, "checkpoint.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_freq=1)  # saved in the middle of fit
    trained = fit_full_batch(model, x, y, 6, [CycleMomentum(schedule), checkpoint])
    rates, beta_1s = zip(*[one_cycle(0.05, 6, t, pct_start=0.5, base_momentum=0.6, max_momentum=0.95)
                           for t in range(6)])  # fmt: skip
    expected = reference.adam(kernel, mse_gradient(x, y), rates, beta_1s)
    np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=2e-6)  # float32 Adam, steps of about 0.05
    fixed = reference.adam(kernel, mse_gradient(x, y), rates, [0.95] * 6)
    assert np.max(np.abs(expected - fixed)) > 1e-3  # the scheduled beta_1 made a difference
    assert type(optimizer.beta_1) is float
    saved = keras.saving.load_model(path).optimizer
    assert type(saved.beta_1) is float and saved.beta_1 == pytest.approx(beta_1s[-1])
    assert keras.optimizers.Adam.from_config(optimizer.get_config()).beta_1 == optimizer.beta_1

    # An SGD created without momentum, not yet built, gets its velocity from the callback.
    plain = linear_model(keras.optimizers.SGD(schedule), kernel)
    trained = fit_full_batch(plain, x, y, 6, [CycleMomentum(schedule)])
    np.testing.assert_allclose(trained, reference.sgd(kernel, mse_gradient(x, y), rates, beta_1s), rtol=1e-5)


def test_cycle_momentum_drives_rmsprop_momentum():
    x, y, kernel = linear_problem(seed=3)
    schedule = OneCycle(0.01, 6, pct_start=0.5, base_momentum=0.3, max_momentum=0.9)
    model = linear_model(keras.optimizers.RMSprop(schedule), kernel)  # momentum=0: built by the callback
    trained = fit_full_batch(model, x, y, 6, [CycleMomentum(schedule)])
    rates, momentums = zip(*[one_cycle(0.01, 6, t, pct_start=0.5, base_momentum=0.3, max_momentum=0.9)
                             for t in range(6)])  # fmt: skip
    expected = reference.rmsprop(kernel, mse_gradient(x, y), rates, momentums)
    np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=1e-6)
    fixed = reference.rmsprop(kernel, mse_gradient(x, y), rates, [0.9] * 6)
    assert np.max(np.abs(expected - fixed)) > 1e-3


def test_cycle_momentum_refuses_optimizers_it_cannot_drive():
    x, y, kernel = linear_problem()
    schedule = OneCycle(0.1, 10)
    model = linear_model(keras.optimizers.Adagrad(0.1), kernel)
    with pytest.raises(ValueError, match="`momentum` .* or `beta_1` .* received Adagrad"):
        fit_full_batch(model, x, y, 1, [CycleMomentum(schedule)])
    built = keras.optimizers.SGD(0.1)
    model = linear_model(built, kernel)
    built.build(model.trainable_variables)
    with pytest.raises(ValueError, match="momentum=0"):
        fit_full_batch(model, x, y, 1, [CycleMomentum(schedule)])


def test_a_schedule_without_momentum_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="^schedule must be .*momentum.*, received: "):
        CycleMomentum(CyclicalLearningRate(0.01, 0.1, 4))


def test_same_weights_with_and_without_mirrored_strategy():
    model_fn = "tests.callbacks.cases:dense_sgd_one_cycle"
    case = TrainingCase(model_fn, "tests.support.cases:regression_data", steps=6, global_batch_size=8,
                        callbacks_fn="tests.callbacks.cases:one_cycle_momentum")  # fmt: skip
    single, mirrored = run_case(case), run_case(case, replicas=2)
    untrained = run_case(TrainingCase(model_fn, "tests.support.cases:regression_data", steps=0))
    assert max_difference(single, untrained) > 1e-3  # it trained
    assert max_difference(single, mirrored) < TRAINING_TOLERANCE
