"""AverageWeightsForEvaluation: validation with the moving average, assigning it at the end, config and errors."""

import re

import keras
import numpy as np
import pytest

from lepton_keras.callbacks.weight_averaging import AverageWeightsForEvaluation
from tests.optimizers.cases import trained_ema_model


def test_the_callback_validates_with_the_average_and_can_assign_it():
    model, x, y = trained_ema_model()
    with model.optimizer.swap_average_weights(model):
        expected_loss = model.evaluate(x, y, verbose=0)
    training = model.get_weights()
    callback = AverageWeightsForEvaluation()
    callback.set_model(model)
    callback.on_test_begin()
    assert abs(model.evaluate(x, y, verbose=0) - expected_loss) < 1e-7
    callback.on_test_end()
    for a, b in zip(training, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = model.fit(x, y, batch_size=16, validation_data=(x, y), shuffle=False, verbose=0,
                        callbacks=[AverageWeightsForEvaluation(assign_at_end=True)])
    averages = [keras.ops.convert_to_numpy(a) for a in model.optimizer._averages]
    for a, w in zip(averages, model.get_weights()):
        np.testing.assert_array_equal(a, w)
    assert abs(history.history["val_loss"][-1] - model.evaluate(x, y, verbose=0)) < 1e-5
    assert AverageWeightsForEvaluation(assign_at_end=True).get_config() == {"assign_at_end": True}
    with pytest.raises(ValueError, match="ExponentialMovingAverage"):
        AverageWeightsForEvaluation(keras.optimizers.SGD())


def test_assign_at_end_must_be_a_bool():
    with pytest.raises(ValueError, match=re.escape("assign_at_end must be True or False, received: 1")):
        AverageWeightsForEvaluation(assign_at_end=1)


def test_a_model_without_averaging_is_refused_before_the_first_step():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((8, 3)), np.ones((8, 1))
    with pytest.raises(ValueError, match="optimizer must be an optimizer holding a StochasticWeightAveraging"):
        model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[AverageWeightsForEvaluation()])
    assert int(model.optimizer.iterations.numpy()) == 0
