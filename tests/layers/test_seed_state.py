"""Every regularization layer in one table: get_config/from_config and a .keras round trip whose saved state
(SavesSeedState's draw state, WeightNormalization's init flag) goes on where the original was."""

import copy

import keras
import numpy as np
import pytest

from lepton_keras.layers import DropBlock2D, StochasticDepth, WeightNormalization
from lepton_keras.layers import drop_block as drop_block_module
from lepton_keras.layers import stochastic_depth as stochastic_depth_module
from lepton_keras.layers import weight_normalization as weight_normalization_module
from tests.layers.cases import normal

LAYERS = {
    "StochasticDepth": (
        lambda: StochasticDepth(0.6, per_example=True, seed=4),
        lambda: [keras.Input((4, 3)), keras.Input((4, 3))],
        {"survival_probability": 0.6, "per_example": True, "seed": 4},
    ),
    "WeightNormalization": (
        lambda: WeightNormalization(keras.layers.Conv2D(3, 3, activation="relu"), data_init=True),
        lambda: keras.Input((6, 6, 2)),
        {"data_init": True},
    ),
    "DropBlock2D": (
        lambda: DropBlock2D(0.2, 3, seed=8, data_format="channels_last"),
        lambda: keras.Input((8, 8, 2)),
        {"rate": 0.2, "block_size": 3, "seed": 8, "data_format": "channels_last"},
    ),
}


def test_every_regularization_layer_is_in_the_shared_table():
    modules = (stochastic_depth_module, weight_normalization_module, drop_block_module)
    public = {
        name
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, keras.layers.Layer) and value.__module__ == module.__name__
    }
    assert public == set(LAYERS)


def sample_inputs(inputs, seed):
    arrays = [np.abs(normal(8, *i.shape[1:], seed=seed + k)) + 0.1 for k, i in enumerate(keras.tree.flatten(inputs))]
    return arrays if isinstance(inputs, list) else arrays[0]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_and_keras_file_round_trip(name, tmp_path):
    make, make_inputs, expected_config = LAYERS[name]
    layer = make()
    config = layer.get_config()
    assert {key: config[key] for key in expected_config} == expected_config
    clone = type(layer).from_config(copy.deepcopy(config))
    assert clone.get_config() == config

    inputs = make_inputs()
    model = keras.Model(inputs, layer(inputs))
    x = sample_inputs(inputs, seed=33)
    model(x, training=True)  # advances the seed state; initializes WeightNormalization
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.layers[-1]) is type(layer)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    # The saved state (the seed state, the init flag) goes on where the original was.
    for _ in range(3):
        np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))

