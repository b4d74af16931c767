"""StochasticDepth against the float64 reference of Huang et al. (2016): one Bernoulli draw per call (or per
example), the expected residual at inference, the seed; its argument errors and dtypes."""

import keras
import numpy as np
import pytest

from lepton_keras.layers import StochasticDepth
from tests.layers.cases import normal
from tests.layers.reference import stochastic_depth as reference


@pytest.mark.parametrize("survival_probability", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("training", [False, None])
def test_stochastic_depth_at_inference_adds_p_times_the_residual(survival_probability, training):
    shortcut, residual = normal(4, 3, seed=1), normal(4, 3, seed=2)
    out = StochasticDepth(survival_probability)([shortcut, residual], training=training).numpy()
    np.testing.assert_array_equal(out, shortcut + np.float32(survival_probability) * residual)
    np.testing.assert_allclose(out, reference.stochastic_depth(shortcut, residual, survival_probability), rtol=1e-6)


def drawn_keeps(layer, shortcut, residual, calls):
    """The Bernoulli draw b of each training call, recovered from out = shortcut + b * residual."""
    keeps = []
    for _ in range(calls):
        out = layer([shortcut, residual], training=True).numpy()
        keep = np.round((out - shortcut) / residual)
        np.testing.assert_allclose(out, reference.stochastic_depth(shortcut, residual, 0.0, keep), rtol=1e-6, atol=1e-6)
        keeps.append(keep)
    return np.array(keeps)


def test_stochastic_depth_keeps_or_drops_the_whole_branch_once_per_call():
    shortcut, residual = normal(8, 5, seed=3), np.abs(normal(8, 5, seed=4)) + 0.5
    p, calls = 0.3, 400
    keeps = drawn_keeps(StochasticDepth(p, seed=11), shortcut, residual, calls)
    per_call = keeps.reshape(calls, -1)
    assert np.all(np.isin(per_call, [0.0, 1.0]))
    assert np.all(per_call.min(axis=1) == per_call.max(axis=1)), "b must be one draw for the whole batch"
    tolerance = 4 * np.sqrt(p * (1 - p) / calls)  # 4 standard errors of a Bernoulli mean
    assert abs(per_call[:, 0].mean() - p) < tolerance


def test_stochastic_depth_per_example_draws_one_b_per_example():
    shortcut, residual = normal(256, 2, 3, seed=5), np.abs(normal(256, 2, 3, seed=6)) + 0.5
    p = 0.7
    keeps = drawn_keeps(StochasticDepth(p, per_example=True, seed=2), shortcut, residual, 4).reshape(4, 256, -1)
    assert np.all(np.isin(keeps, [0.0, 1.0]))
    assert np.all(keeps.min(axis=2) == keeps.max(axis=2)), "one b for all the features of an example"
    assert abs(keeps[:, :, 0].mean() - p) < 4 * np.sqrt(p * (1 - p) / keeps[:, :, 0].size)


def test_stochastic_depth_draws_follow_the_seed():
    shortcut, residual = normal(2, 3, seed=7), np.abs(normal(2, 3, seed=8)) + 0.5
    first, again, other = (
        drawn_keeps(StochasticDepth(0.5, seed=seed), shortcut, residual, 32)[:, 0, 0] for seed in (1, 1, 2)
    )
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)


def test_stochastic_depth_limits_are_the_plain_sum_and_the_shortcut():
    shortcut, residual = normal(4, 3, seed=9), normal(4, 3, seed=10)
    np.testing.assert_array_equal(StochasticDepth(1.0)([shortcut, residual], training=True), shortcut + residual)
    np.testing.assert_array_equal(StochasticDepth(0.0)([shortcut, residual], training=True), shortcut)



@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: StochasticDepth(1.5), r"survival_probability must be a number in \[0, 1\], received: 1.5"),
        (lambda: StochasticDepth("0.5"), r"survival_probability must be a number in \[0, 1\], received: '0.5'"),
        (lambda: StochasticDepth(0.5, per_example=1), "per_example must be True or False, received: 1"),
        (lambda: StochasticDepth(0.5, seed=1.5), "seed must be an integer or None, received: 1.5"),
        (lambda: StochasticDepth()(np.ones((2, 3))), r"called on \[shortcut, residual\]"),
        (lambda: StochasticDepth()([np.ones((2, 3)), np.ones((2, 4))]), r"same shape, received: \(2, 3\) and \(2, 4\)"),
    ],
)  # fmt: skip
def test_bad_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16", "mixed_float16"])
def test_float_dtypes_are_kept(dtype):
    compute_dtype = keras.DTypePolicy(dtype).compute_dtype
    shortcut, residual = normal(4, 3, seed=34), normal(4, 3, seed=35)
    for training in (True, False):
        assert StochasticDepth(0.5, dtype=dtype)([shortcut, residual], training=training).dtype == compute_dtype
