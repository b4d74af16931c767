"""DropBlock2D against the float64 reference of Ghiasi et al. (2018): the dropped fraction, whole blocks and
renormalisation in both data formats, gamma and the block mask; its argument errors and dtypes."""

import keras
import numpy as np
import pytest

from lepton_keras.layers import DropBlock2D
from lepton_keras.layers import drop_block as drop_block_module
from tests.layers.cases import normal
from tests.layers.reference import drop_block as reference


def dropped_mask(out):
    return out == 0.0


@pytest.mark.parametrize("rate, block_size", [(0.1, 7), (0.25, 3), (0.15, 1)])
def test_drop_block_drops_the_expected_fraction(rate, block_size):
    layer = DropBlock2D(rate, block_size, seed=3)
    x = np.ones((16, 48, 48, 8), np.float32)
    fractions = np.array([dropped_mask(layer(x, training=True).numpy()).mean() for _ in range(8)])
    expected = reference.expected_dropped_fraction(rate, block_size, 48, 48)
    standard_error = fractions.std(ddof=1) / np.sqrt(len(fractions))
    assert abs(fractions.mean() - expected) < 5 * standard_error + 1e-4, (fractions, expected)
    # Eq. (1) counts the pixels where blocks overlap twice, so the fraction is a little below the rate.
    assert 0.85 * rate < expected <= rate + 1e-12


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("block_size", [2, 3, 5])
def test_drop_block_drops_whole_blocks_and_renormalises(data_format, block_size):
    x = np.abs(normal(4, 20, 18, 3, seed=30)) + 0.1
    layer = DropBlock2D(0.2, block_size, seed=5, data_format=data_format)
    if data_format == "channels_first":
        out = np.transpose(layer(np.transpose(x, (0, 3, 1, 2)), training=True).numpy(), (0, 2, 3, 1))
    else:
        out = layer(x, training=True).numpy()
    dropped = dropped_mask(out)
    assert 0.05 < dropped.mean() < 0.4
    np.testing.assert_array_equal(reference.whole_block_cover(dropped, block_size), dropped)
    np.testing.assert_allclose(out, reference.drop_block(x, ~dropped), rtol=1e-5)


def test_drop_block_masks_follow_the_seed_and_differ_between_calls():
    x = np.ones((2, 16, 16, 2), np.float32)
    first, again, other = (DropBlock2D(0.3, 3, seed=seed) for seed in (1, 1, 2))
    masks = [dropped_mask(layer(x, training=True).numpy()) for layer in (first, again, other)]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert np.any(masks[0] != masks[2])
    assert np.any(masks[0] != dropped_mask(first(x, training=True).numpy()))


def test_drop_block_larger_than_the_map_is_clipped_to_the_whole_map():
    x = np.ones((64, 5, 5, 4), np.float32)
    dropped = dropped_mask(DropBlock2D(0.5, 7, seed=4)(x, training=True).numpy())
    per_map = dropped.mean(axis=(1, 2))
    assert np.all(np.isin(per_map, [0.0, 1.0])) and 0 < per_map.mean() < 1


@pytest.mark.parametrize("training, rate", [(False, 0.3), (None, 0.3), (True, 0.0)])
def test_drop_block_is_the_identity_at_inference_and_at_rate_zero(training, rate):
    x = normal(2, 9, 9, 3, seed=31)
    np.testing.assert_array_equal(DropBlock2D(rate, 3)(x, training=training), x)


@pytest.mark.parametrize("block_size", [1, 2, 3, 4])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_drop_block_math_matches_the_paper(block_size, data_format):
    assert drop_block_module.drop_block_gamma(0.1, block_size, 12.0, 10.0) == pytest.approx(
        reference.drop_block_gamma(0.1, block_size, 12, 10), rel=1e-12
    )
    seeds = (np.random.default_rng(block_size).uniform(size=(2, 13 - block_size, 11 - block_size, 3)) < 0.05)
    expected = reference.block_keep_mask(seeds, block_size)
    if data_format == "channels_first":
        mask = drop_block_module.block_keep_mask(np.transpose(seeds, (0, 3, 1, 2)).astype("float32"), block_size,
                                                 "channels_first")  # fmt: skip
        mask = np.transpose(mask, (0, 2, 3, 1))
    else:
        mask = drop_block_module.block_keep_mask(seeds.astype("float32"), block_size)
    np.testing.assert_array_equal(mask, expected)
    x = normal(*expected.shape, seed=32)
    np.testing.assert_allclose(drop_block_module.drop_block(x, expected), reference.drop_block(x, expected), rtol=1e-6)



@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: DropBlock2D(rate=1.0), r"rate must be a number in \[0, 1\), received: 1.0"),
        (lambda: DropBlock2D(rate=-0.1), r"rate must be a number in \[0, 1\), received: -0.1"),
        (lambda: DropBlock2D(block_size=0), "block_size must be an integer >= 1, received: 0"),
        (lambda: DropBlock2D(block_size=2.0), "block_size must be an integer >= 1, received: 2.0"),
        (lambda: DropBlock2D(seed="1"), "seed must be an integer or None, received: '1'"),
        (lambda: DropBlock2D(data_format="NHWC"), r"data_format must be one of .*, received: 'NHWC'"),
        (lambda: DropBlock2D()(np.ones((2, 4, 4))), r"DropBlock2D needs 4D feature maps \(NHWC\), received shape: \(2, 4, 4\)"),
    ],
)  # fmt: skip
def test_bad_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16", "mixed_float16"])
def test_float_dtypes_are_kept(dtype):
    compute_dtype = keras.DTypePolicy(dtype).compute_dtype
    image = normal(8, 6, 6, 2, seed=36, mean=1.0)
    for training in (True, False):
        assert DropBlock2D(0.2, 2, dtype=dtype)(image, training=training).dtype == compute_dtype
