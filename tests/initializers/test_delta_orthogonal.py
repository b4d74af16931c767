"""DeltaOrthogonal against the definition of Xiao et al. (2018) (float64 NumPy reference): the centre tap is
gain times a semi-orthogonal matrix, deep conv stacks keep their variance, seeds, the same kernel under
MirroredStrategy, serialization and bad arguments."""

import math
import re

import keras
import numpy as np
import pytest

from lepton_keras.distribute import get_strategy
from lepton_keras.initializers import DeltaOrthogonal
from tests.initializers.reference import delta_orthogonal as reference

KERNEL_SHAPES = [
    (3, 8, 8),  # 1D, in = out
    (5, 4, 12),  # 1D, in < out
    (3, 12, 5),  # 1D, in > out
    (3, 3, 16, 16),  # 2D
    (3, 3, 6, 10),
    (5, 3, 12, 5),
    (2, 4, 3, 3),  # even sizes: the centre is index k // 2
    (3, 3, 3, 4, 4),  # 3D
    (3, 1, 5, 3, 7),
    (3, 3, 3, 9, 2),
]


@pytest.mark.parametrize("gain", [1.0, math.sqrt(2.0), 0.5])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
def test_delta_orthogonal_matches_the_definition(shape, gain):
    kernel = np.asarray(DeltaOrthogonal(gain=gain, seed=0)(shape))
    assert kernel.shape == shape and kernel.dtype == np.float32
    assert np.all(reference.off_centre_taps(kernel) == 0.0)
    centre = kernel[reference.centre_tap(shape)]
    assert reference.semi_orthogonality_error(centre, gain) < 1e-5


def test_delta_orthogonal_float64_is_orthogonal_to_float64_precision():
    kernel = np.asarray(DeltaOrthogonal(seed=0)((3, 3, 20, 30), dtype="float64"))
    assert kernel.dtype == np.float64
    assert reference.semi_orthogonality_error(kernel[1, 1]) < 1e-12


def test_in_greater_than_out_has_orthonormal_columns_only():
    # Documented choice: H^T H = I when in > out (H H^T cannot be I: its rank is out).
    centre = np.asarray(DeltaOrthogonal(seed=0)((3, 12, 5)))[1].astype(np.float64)
    np.testing.assert_allclose(centre.T @ centre, np.eye(5), atol=1e-5)
    assert np.abs(centre @ centre.T - np.eye(12)).max() > 0.5


def test_same_seed_same_kernel_different_seed_different_kernel():
    shape = (3, 3, 8, 8)
    initializer = DeltaOrthogonal(seed=1)
    first = np.asarray(initializer(shape))
    np.testing.assert_array_equal(first, np.asarray(initializer(shape)))
    np.testing.assert_array_equal(first, np.asarray(DeltaOrthogonal(seed=1)(shape)))
    assert np.abs(first - np.asarray(DeltaOrthogonal(seed=2)(shape))).max() > 0.1


def test_unseeded_kernel_follows_keras_set_random_seed():
    shape = (3, 3, 8, 8)
    keras.utils.set_random_seed(5)
    first = np.asarray(DeltaOrthogonal()(shape))
    keras.utils.set_random_seed(5)
    np.testing.assert_array_equal(first, np.asarray(DeltaOrthogonal()(shape)))
    assert np.abs(first - np.asarray(DeltaOrthogonal()(shape))).max() > 0.1
    assert DeltaOrthogonal().get_config() == {"gain": 1.0, "seed": None}


@pytest.mark.parametrize("replicas", [2, 4])
def test_kernel_is_the_same_under_mirrored_strategy(replicas):
    strategy = get_strategy("mirrored", cpu_replicas=replicas)
    with strategy.scope():
        layer = keras.layers.Conv2D(6, 3, kernel_initializer=DeltaOrthogonal(seed=4))
        layer.build((None, 8, 8, 4))
    expected = np.asarray(DeltaOrthogonal(seed=4)((3, 3, 4, 6)))
    copies = strategy.experimental_local_results(layer.kernel.value)
    assert len(copies) == replicas
    for copy in copies:
        np.testing.assert_array_equal(np.asarray(copy), expected)


DEPTH, CHANNELS = 50, 64
STACK_INPUT = np.random.default_rng(0).normal(size=(4, 8, 8, CHANNELS)).astype(np.float32)


def conv_stack_outputs(initializer_for_layer, activation) -> list[np.ndarray]:
    """Every layer's output (float64) of a 50-layer plain Conv2D stack, padding "same", on STACK_INPUT."""
    model = keras.Sequential(
        [keras.Input(STACK_INPUT.shape[1:])]
        + [
            keras.layers.Conv2D(
                CHANNELS, 3, padding="same", activation=activation, kernel_initializer=initializer_for_layer(i)
            )
            for i in range(DEPTH)
        ]
    )
    outputs, x = [], STACK_INPUT
    for layer in model.layers:
        x = layer(x)
        outputs.append(np.asarray(x, np.float64))
    return outputs


def variance_ratio(outputs) -> float:
    return float(np.var(outputs[-1]) / np.var(STACK_INPUT.astype(np.float64)))


def mean_layer_gain(outputs) -> float:
    """Mean over layers of E[y_l^2] / E[y_(l-1)^2], the quantity mean-field theory keeps at 1."""
    inputs = [STACK_INPUT.astype(np.float64), *outputs[:-1]]
    return float(np.mean([np.mean(y**2) / np.mean(x**2) for x, y in zip(inputs, outputs)]))


def test_deep_linear_conv_stack_keeps_its_variance_glorot_does_not():
    delta = variance_ratio(conv_stack_outputs(lambda i: DeltaOrthogonal(seed=i), None))
    glorot = variance_ratio(conv_stack_outputs(lambda i: keras.initializers.GlorotUniform(seed=i), None))
    print(f"50 linear Conv2D layers, output/input variance: DeltaOrthogonal {delta:.6f}, GlorotUniform {glorot:.3g}")
    assert abs(delta - 1.0) < 1e-3
    assert not 0.5 <= glorot <= 2.0


def test_deep_relu_conv_stack_keeps_its_variance_with_gain_sqrt2_glorot_does_not():
    delta = conv_stack_outputs(lambda i: DeltaOrthogonal(gain=math.sqrt(2.0), seed=i), "relu")
    unit_gain = conv_stack_outputs(lambda i: DeltaOrthogonal(gain=1.0, seed=i), "relu")
    glorot = conv_stack_outputs(lambda i: keras.initializers.GlorotUniform(seed=i), "relu")
    print(
        "50 ReLU Conv2D layers, output/input variance (mean per-layer second-moment gain): "
        f"DeltaOrthogonal(sqrt 2) {variance_ratio(delta):.3g} ({mean_layer_gain(delta):.3f}), "
        f"DeltaOrthogonal(1) {variance_ratio(unit_gain):.3g} ({mean_layer_gain(unit_gain):.3f}), "
        f"GlorotUniform {variance_ratio(glorot):.3g} ({mean_layer_gain(glorot):.3f})"
    )
    # ReLU halves E[y^2] and gain^2 = 2 restores it: each layer's gain is 1 in expectation.
    assert 0.9 <= mean_layer_gain(delta) <= 1.1
    assert 0.4 <= mean_layer_gain(unit_gain) <= 0.6
    assert mean_layer_gain(glorot) < 0.6
    # At finite width the 50 per-layer gains multiply as a random walk around 1 (ReLU networks are
    # never exactly isometric), so the end-to-end ratio stays of order one, not within [0.5, 2].
    assert 0.05 <= variance_ratio(delta) <= 20.0
    assert variance_ratio(glorot) < 1e-10
    assert variance_ratio(unit_gain) < 1e-10


def test_get_config_from_config_round_trip():
    initializer = DeltaOrthogonal(gain=1.5, seed=7)
    config = initializer.get_config()
    assert config == {"gain": 1.5, "seed": 7}
    clone = DeltaOrthogonal.from_config(config)
    np.testing.assert_array_equal(np.asarray(clone((3, 3, 4, 4))), np.asarray(initializer((3, 3, 4, 4))))
    serialized = keras.initializers.serialize(initializer)
    assert serialized["registered_name"] == "lepton_keras>DeltaOrthogonal"
    restored = keras.initializers.deserialize(serialized)
    assert isinstance(restored, DeltaOrthogonal) and restored.get_config() == config


def test_keras_save_and_load(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((16, 3)),
            keras.layers.Conv1D(8, 3, padding="same", kernel_initializer=DeltaOrthogonal(seed=1)),
            keras.layers.Reshape((4, 4, 8)),
            keras.layers.Conv2D(4, 3, kernel_initializer=DeltaOrthogonal(gain=2.0, seed=2)),
        ]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for saved, restored in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(saved, restored)
    initializers = [layer.kernel_initializer for layer in loaded.layers if hasattr(layer, "kernel_initializer")]
    assert [type(i) for i in initializers] == [DeltaOrthogonal, DeltaOrthogonal]
    assert [i.get_config() for i in initializers] == [{"gain": 1.0, "seed": 1}, {"gain": 2.0, "seed": 2}]
    # A model rebuilt from the saved config draws the same (seeded) kernels again.
    rebuilt = keras.Sequential.from_config(loaded.get_config())
    for original, again in zip(model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(original, again)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gain": 0.0}, "gain must be a finite number > 0, received: 0.0"),
        ({"gain": -1.0}, "gain must be a finite number > 0, received: -1.0"),
        ({"gain": float("nan")}, "gain must be a finite number > 0, received: nan"),
        ({"gain": float("inf")}, "gain must be a finite number > 0, received: inf"),
        ({"gain": "1"}, "gain must be a finite number > 0, received: '1'"),
        ({"gain": True}, "gain must be a finite number > 0, received: True"),
        ({"seed": 1.5}, "seed must be an integer or None, received: 1.5"),
        ({"seed": "0"}, "seed must be an integer or None, received: '0'"),
    ],
)
def test_delta_orthogonal_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DeltaOrthogonal(**kwargs)


@pytest.mark.parametrize("shape", [(3,), (4, 4), (3, 0, 4, 4)], ids=str)
def test_delta_orthogonal_rejects_non_convolution_shapes(shape):
    with pytest.raises(ValueError, match=re.escape(f"shape={shape}")):
        DeltaOrthogonal(seed=0)(shape)
