"""GradientCentralization: its table row against the float64 reference on its own data, centred dense and
conv kernels with biases kept or centred, its config, registry name and argument error."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.gradient_centralization import (
    GradientCentralization,
    centralize_gradient,
)
from tests.optimizers.cases import (
    assert_registry_builds_the_wrapper,
    assert_wrapper_config_round_trips,
)
from tests.optimizers.reference import gradient_centralization as reference
from tests.support.optimizer_spec import OptimizerSpec


def centralization_sgd(*, learning_rate, momentum=0.0, weight_decay=None):
    return GradientCentralization(keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay))

SPECS = [
    OptimizerSpec(
        name="centralization_sgd",
        make=centralization_sgd,
        reference=reference.centralization_sgd,
        options={"learning_rate": 0.125, "momentum": 0.5},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 2**-9, "momentum": 0.875},
        # The reference options (exact in float32) train the tutorial CNN too slowly to show in 4 epochs.
        cnn_overrides={"learning_rate": 0.1},
    ),
]

def test_centralization_of_dense_and_conv_kernels():
    rng = np.random.default_rng(6)
    for shape in [(4, 5), (3, 3, 2, 4)]:
        g = rng.normal(size=shape)
        out = keras.ops.convert_to_numpy(centralize_gradient(np.float32(g)))
        np.testing.assert_allclose(out, g - g.mean(axis=tuple(range(len(shape) - 1)), keepdims=True), atol=1e-6)
        np.testing.assert_allclose(out.sum(axis=tuple(range(len(shape) - 1))), 0.0, atol=1e-5)
    bias = tf.constant([1.0, 2.0, 6.0])
    kernel = tf.ones((2, 3))
    variables = [keras.Variable(np.zeros((2, 3), np.float32)), keras.Variable(np.zeros(3, np.float32))]
    kept = GradientCentralization("sgd").transform_gradients([kernel, bias], variables)
    np.testing.assert_array_equal(kept[1], bias)
    np.testing.assert_array_equal(kept[0], np.zeros((2, 3)))
    centred = GradientCentralization("sgd", exclude_rank_one=False).transform_gradients([kernel, bias], variables)
    np.testing.assert_allclose(centred[1], [-2.0, -1.0, 3.0])

@pytest.mark.parametrize("optimizer", [GradientCentralization(keras.optimizers.SGD(0.5), exclude_rank_one=False)],
                         ids=lambda o: type(o).__name__)
def test_config_round_trips(optimizer):
    assert_wrapper_config_round_trips(optimizer)

@pytest.mark.parametrize("name,cls", [("centralization_sgd", GradientCentralization)])
def test_registry_names(name, cls):
    assert_registry_builds_the_wrapper(name, cls)

@pytest.mark.parametrize("make,message", [
    (lambda: GradientCentralization("sgd", exclude_rank_one="yes"),
     "exclude_rank_one must be True or False, received: 'yes'"),
])
def test_bad_arguments_name_the_argument_and_value(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
