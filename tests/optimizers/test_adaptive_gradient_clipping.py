"""AdaptiveGradientClipping: its table row against the float64 reference on its own data, the per-unit clip
of `adaptive_clip` and excluded layers, its config, registry name and argument errors."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.adaptive_gradient_clipping import (
    AdaptiveGradientClipping,
    adaptive_clip,
)
from tests.optimizers.cases import (
    assert_registry_builds_the_wrapper,
    assert_wrapper_config_round_trips,
    dense_model,
)
from tests.optimizers.reference import adaptive_gradient_clipping as reference
from tests.support.optimizer_spec import OptimizerSpec


def agc_sgd(*, learning_rate, clipping, epsilon, momentum=0.0, weight_decay=None):
    inner = keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay)
    return AdaptiveGradientClipping(inner, clipping=clipping, epsilon=epsilon)

SPECS = [
    OptimizerSpec(
        name="agc_sgd",
        make=agc_sgd,
        reference=reference.agc_sgd,
        options={"learning_rate": 0.25, "clipping": 0.0625, "epsilon": 2**-10, "momentum": 0.5},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 2**-9, "clipping": 4.0, "epsilon": 2**-10, "momentum": 0.875},
        converge_steps=5000,
        # The reference options (exact in float32) train the tutorial CNN too slowly to show in 4 epochs.
        cnn_overrides={"learning_rate": 0.1},
    ),
]

def test_agc_units_and_excluded_layers():
    rng = np.random.default_rng(5)
    for shape in [(), (3,), (4, 5), (3, 3, 2, 4)]:
        w, g = rng.normal(size=shape), 3 * rng.normal(size=shape)
        clipped = adaptive_clip(np.float32(g), np.float32(w), clipping=0.25, epsilon=1e-3)
        expected = g * np.minimum(1.0, 0.25 * np.maximum(reference.unit_norms(w), 1e-3) / reference.unit_norms(g))
        np.testing.assert_allclose(clipped, expected, rtol=1e-5, atol=1e-7)
    # Zero weights: the gradient is clipped to lambda * epsilon, so they can move.
    np.testing.assert_allclose(np.linalg.norm(adaptive_clip(np.ones(4, np.float32), np.zeros(4, np.float32),
                                                            clipping=0.5, epsilon=0.25)), 0.125, rtol=1e-6)
    model = dense_model("sgd", {"learning_rate": 0.1})
    optimizer = AdaptiveGradientClipping(keras.optimizers.SGD(0.1), clipping=1e-4, exclude=["head"])
    assert [optimizer.is_excluded(v) for v in model.trainable_variables] == [False, False, True, True]
    gradients = [tf.ones_like(v) * 100.0 for v in model.trainable_variables]
    out = optimizer.transform_gradients(gradients, model.trainable_variables)
    np.testing.assert_array_equal(out[2], gradients[2])
    assert float(tf.reduce_max(tf.abs(out[0]))) < 1.0

@pytest.mark.parametrize("optimizer", [
    AdaptiveGradientClipping(keras.optimizers.SGD(0.5), clipping=0.125, epsilon=0.5, exclude=["head"]),
], ids=lambda o: type(o).__name__)
def test_config_round_trips(optimizer):
    assert_wrapper_config_round_trips(optimizer)

@pytest.mark.parametrize("name,cls", [("agc_sgd", AdaptiveGradientClipping)])
def test_registry_names(name, cls):
    assert_registry_builds_the_wrapper(name, cls)

@pytest.mark.parametrize("make,message", [
    (lambda: AdaptiveGradientClipping("sgd", clipping=0), "clipping must be a finite number > 0, received: 0"),
    (lambda: AdaptiveGradientClipping("sgd", epsilon=-1.0), "epsilon must be a finite number > 0, received: -1.0"),
    (lambda: AdaptiveGradientClipping("sgd", exclude="head"),
     "exclude must be a list or tuple of non-empty strings, received: 'head'"),
])
def test_bad_arguments_name_the_argument_and_value(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
