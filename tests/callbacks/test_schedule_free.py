"""The Schedule-Free evaluation switch: x inside, exactly y after; in fit, evaluate, predict, checkpoints; batch norm.

The models here are imported by name by the strategy harness ("tests.callbacks.test_schedule_free:...").
"""

import os

import keras
import numpy as np
import pytest

from lepton_keras.callbacks.schedule_free import ScheduleFreeEvaluation, schedule_free_eval
from lepton_keras.distribute import keras_compat
from lepton_keras.optimizers.schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from lepton_keras.optimizers.weight_averaging import recompute_batch_norm_statistics
from tests.support.cases import regression_data
from tests.support.harness import TrainingCase, max_difference, run_case

FEATURES, TARGETS = 8, 2


def schedule_free_mlp(optimizer: str = "adamw", batch_norm: bool = False):
    """Dense(16, tanh) [-> BatchNormalization] -> Dense(2), MSE, with a Schedule-Free optimizer:
    "adamw", "sgd" (lepton_keras's) or "keras" (keras.optimizers.ScheduleFreeAdamW)."""
    make = {"adamw": lambda: ScheduleFreeAdamW(0.01, warmup_steps=3, weight_decay=0.01),
            "sgd": lambda: ScheduleFreeSGD(0.1, warmup_steps=3),
            "keras": lambda: keras.optimizers.ScheduleFreeAdamW(0.01, warmup_steps=3)}[optimizer]  # fmt: skip
    layers = [keras.Input((FEATURES,)), keras.layers.Dense(16, activation="tanh")]
    layers += [keras.layers.BatchNormalization()] if batch_norm else []
    model = keras.Sequential([*layers, keras.layers.Dense(TARGETS)])
    model.compile(optimizer=make(), loss="mse")
    return model


def evaluation_callbacks(**_):
    return [ScheduleFreeEvaluation()]


def _trained(optimizer="adamw", batch_norm=False, callbacks=(), epochs=2, **fit):
    keras.utils.set_random_seed(4)
    x, y = regression_data(64, seed=2)
    model = schedule_free_mlp(optimizer, batch_norm)
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks), **fit)
    return model, x, y, history


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _assert_bitwise(a, b):
    for first, second in zip(a, b, strict=True):
        np.testing.assert_array_equal(first, second)


def _x_by_hand(model, beta):
    """x = (y - (1 - beta) z) / beta from the slots z, written here from the paper (not the library's function)."""
    optimizer = model.optimizer
    zs = [keras_compat.keras_schedule_free_z(optimizer, v) if keras_compat.is_keras_schedule_free(optimizer)
          else optimizer.slots(v)[0] for v in model.trainable_variables]  # fmt: skip
    return [(np.float64(v.numpy()) - (1 - beta) * np.float64(z.numpy())) / beta
            for v, z in zip(model.trainable_variables, zs)]  # fmt: skip


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "keras"])
def test_schedule_free_eval_holds_x_inside_and_exactly_y_afterwards(optimizer):
    model, x, y, _ = _trained(optimizer)
    training = _weights(model)
    beta = 0.9
    expected_x = _x_by_hand(model, beta)
    with schedule_free_eval(model):
        inside = [np.float64(v.numpy()) for v in model.trainable_variables]
        for got, expected in zip(inside, expected_x):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert max(np.max(np.abs(a - b)) for a, b in zip(inside, training)) > 1e-3  # x is not y
        with schedule_free_eval(model):  # nested: stays at x
            pass
        _assert_bitwise([np.float64(v.numpy()) for v in model.trainable_variables], inside)
    _assert_bitwise(_weights(model), training)


def test_before_the_first_step_x_is_y():
    model = schedule_free_mlp("adamw")
    model.optimizer.build(model.trainable_variables)
    before = _weights(model)
    with schedule_free_eval(model):
        _assert_bitwise(_weights(model), before)


def test_fit_validates_and_ends_at_x_and_the_next_fit_resumes_from_exactly_y():
    x, y = regression_data(64, seed=2)
    with_callback, _, _, history = _trained(callbacks=[ScheduleFreeEvaluation()], validation_data=(x, y))
    without, _, _, _ = _trained()
    # The same training (y restored bitwise at each epoch); the model ends at x.
    with schedule_free_eval(without):
        x_weights = _weights(without)
        val_loss = without.evaluate(x, y, verbose=0)
    _assert_bitwise(_weights(with_callback), x_weights)
    assert abs(history.history["val_loss"][-1] - val_loss) < 1e-6
    # Another fit with the callback resumes from y, not x.
    with_callback.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[ScheduleFreeEvaluation()])
    without.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    with schedule_free_eval(without):
        _assert_bitwise(_weights(with_callback), _weights(without))


def test_a_checkpoint_after_the_callback_saves_x(tmp_path):
    path = os.path.join(tmp_path, "epoch.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    model, _, _, _ = _trained(callbacks=[ScheduleFreeEvaluation(), checkpoint])
    at_x = _weights(model)
    reference, _, _, _ = _trained()
    reference.load_weights(path)
    _assert_bitwise(_weights(reference), at_x)
    with schedule_free_eval(model):  # already at x: nothing moves
        _assert_bitwise(_weights(model), at_x)


def test_evaluate_and_predict_with_the_callback_use_x_and_leave_y():
    model, x, y, _ = _trained("sgd")
    training = _weights(model)
    with schedule_free_eval(model):
        expected_loss = model.evaluate(x, y, verbose=0)
        expected_predictions = model.predict(x, verbose=0)
    assert abs(model.evaluate(x, y, verbose=0, callbacks=[ScheduleFreeEvaluation()]) - expected_loss) < 1e-7
    _assert_bitwise(_weights(model), training)
    predictions = model.predict(x, verbose=0, callbacks=[ScheduleFreeEvaluation()])
    np.testing.assert_array_equal(predictions, expected_predictions)
    _assert_bitwise(_weights(model), training)


def test_batch_norm_statistics_are_recomputed_at_x_and_restored_with_y():
    model, x, y, _ = _trained(batch_norm=True)
    training = _weights(model)  # includes the moving statistics
    batches = [x[i:i + 16] for i in range(0, 64, 16)]
    with schedule_free_eval(model):  # without batch_norm_data the statistics are not its to restore
        recompute_batch_norm_statistics(model, batches)
        expected = _weights(model)
    model.set_weights(training)
    with schedule_free_eval(model, batch_norm_data=batches, batch_norm_steps=4):
        got = _weights(model)
    _assert_bitwise(got, expected)
    batch_norm = model.layers[1]
    assert not np.array_equal(np.array(batch_norm.moving_mean), got[4])  # recomputed, then restored
    _assert_bitwise(_weights(model), training)


def test_same_x_on_1_and_2_replicas():
    case = TrainingCase("tests.callbacks.test_schedule_free:schedule_free_mlp", "tests.support.cases:regression_data",
                        steps=4, epochs=2, callbacks_fn="tests.callbacks.test_schedule_free:evaluation_callbacks")
    single = run_case(case)
    assert max_difference(single, run_case(case, replicas=2)) < 1e-6


def test_errors_and_config():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="optimizer must be an optimizer holding ScheduleFreeAdamW"):
        with schedule_free_eval(model):
            pass
    with pytest.raises(ValueError, match="model must be a keras.Model, received: 3"):
        with schedule_free_eval(3):
            pass
    with pytest.raises(ValueError, match="batch_norm_steps must be an integer >= 1 or None, received: 0"):
        ScheduleFreeEvaluation(batch_norm_steps=0)
    assert ScheduleFreeEvaluation(batch_norm_steps=3).get_config() == {"batch_norm_steps": 3}
