"""Cautious: its table row, the mask and its rescaling, limits at the inner optimizer, the unmasked weight decay,
Lion against the reference, composition by name, its config and argument errors (the shared table runs the rest)."""

import re
import textwrap

import keras
import numpy as np
import pytest

from lepton_keras.optimizers import get
from lepton_keras.optimizers.adopt import ADOPT
from lepton_keras.optimizers.cautious import Cautious, cautious_update
from lepton_keras.optimizers.lookahead import Lookahead
from lepton_keras.optimizers.radam import RAdam
from tests.optimizers.cases import assert_registry_builds_the_wrapper, assert_wrapper_config_round_trips
from tests.optimizers.reference import cautious as reference
from tests.support.numerics import apply_steps, assert_close, random_problem, relative_error
from tests.support.optimizer_spec import OptimizerSpec

STEPS = 15


def cautious_adam(*, learning_rate, beta_1, beta_2, weight_decay=None):
    return Cautious(keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay))


# Adam's hyperparameters exactly representable in float32 (1 - 0.999 in float32 is 6e-5 off, relatively).
BETAS = {"beta_1": 0.875, "beta_2": 1 - 2**-8}
SPECS = [
    OptimizerSpec(
        name="cautious_adam",
        make=cautious_adam,
        reference=reference.cautious_adam,
        options={"learning_rate": 0.0625, **BETAS},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 0.03125, **BETAS},
        cnn_overrides={"learning_rate": 0.003},
    ),
]


def test_the_mask_keeps_the_steps_against_the_gradient_and_rescales_by_the_tensor_mean():
    before = np.zeros((2, 2), np.float32)
    after = np.array([[-0.1, -0.1], [0.1, 0.1]], np.float32)
    gradient = np.array([[1.0, 2.0], [3.0, -4.0]], np.float32)
    # Three of the four steps go against the gradient: kept and divided by 3/4; the third is dropped.
    new = keras.ops.convert_to_numpy(cautious_update(before, after, gradient, min_mask_mean=1e-3))
    np.testing.assert_allclose(new, [[-0.1 / 0.75, -0.1 / 0.75], [0.0, 0.1 / 0.75]], rtol=1e-6)


def test_a_mask_of_zeros_leaves_the_weights_unchanged():
    before = np.array([1.0, -2.0], np.float32)
    new = cautious_update(before, before + 0.5, np.ones(2, np.float32), min_mask_mean=1e-3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(new), before)


def test_cautious_sgd_without_momentum_is_sgd():
    # The step -lr g always goes against the gradient: the mask is all ones and its mean 1.
    params, grads = random_problem(STEPS, seed=2, scale=1.0)
    assert_close(apply_steps(Cautious(keras.optimizers.SGD(0.125)), params, grads),
                 apply_steps(keras.optimizers.SGD(0.125), params, grads), 1e-7)


def _inner(kind):
    return {
        "adam": lambda: keras.optimizers.Adam(0.0625),
        "lion": lambda: keras.optimizers.Lion(2**-6),
        "radam": lambda: RAdam(0.0625),
        "adopt": lambda: ADOPT(0.0625),
    }[kind]()


@pytest.mark.parametrize("kind", ["adam", "lion", "radam", "adopt"])
def test_with_gradients_of_constant_sign_cautious_is_the_inner_optimizer(kind):
    # Each element's gradient keeps its sign, so every momentum agrees with it: the mask is all
    # ones (ADOPT's first step moves nothing and is kept as it is).
    params, grads = random_problem(STEPS, seed=3, scale=1.0)
    signs = [np.sign(g) for g in grads[0]]
    grads = [[s * (np.abs(g) + 0.1) for s, g in zip(signs, step)] for step in grads]
    wrapped = apply_steps(Cautious(_inner(kind)), params, grads)
    plain = apply_steps(_inner(kind), params, grads)
    assert relative_error(plain, params) > 0.05
    assert_close(wrapped, plain, 1e-6)


def test_the_weight_decay_is_not_masked():
    # Zero gradients: every step is masked, the decay alone acts, w_k = w_0 (1 - lr wd)^k.
    params = [np.array([2.0, -1.0, 0.5])]
    inner = keras.optimizers.SGD(0.25, momentum=0.5, weight_decay=0.5)
    weights = apply_steps(Cautious(inner), params, [[np.zeros(3)]] * 4)
    np.testing.assert_allclose(weights[0], params[0] * 0.875**4, rtol=1e-6)


def test_cautious_lion_matches_the_reference():
    params, grads = random_problem(STEPS, seed=4, mean=0.2, float32_values=True)
    options = {"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.984375, "weight_decay": 0.25}
    inner = keras.optimizers.Lion(options["learning_rate"], beta_1=options["beta_1"], beta_2=options["beta_2"],
                                  weight_decay=options["weight_decay"])
    expected = reference.cautious_lion(params, grads, **options)
    assert relative_error(expected, params) > 0.05
    assert_close(apply_steps(Cautious(inner), params, grads), expected)


@pytest.mark.parametrize("name", ["cautious_adamw", "cautious_lion", "cautious_radam"])
def test_registry_names(name):
    assert_registry_builds_the_wrapper(name, Cautious)


def test_cautious_goes_inside_the_other_wrappers():
    optimizer = get("lookahead_cautious_adam")
    assert type(optimizer) is Lookahead and type(optimizer.inner_optimizer) is Cautious
    message = "inner_optimizer must be an optimizer, not a wrapper (put the wrappers outside"
    with pytest.raises(ValueError, match=re.escape(message)):
        get("cautious_lookahead_adam")
    with pytest.raises(ValueError, match=re.escape(message)):
        Cautious(Lookahead("sgd"))


def test_config_round_trips():
    assert_wrapper_config_round_trips(Cautious(keras.optimizers.AdamW(0.25, weight_decay=0.5), fused_updates=False))


def test_docstring_example_runs():
    example = Cautious.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})


def test_keras_builds_it_by_name():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="cautious_adamw", loss="mse")
    assert type(model.optimizer) is Cautious and type(model.optimizer.inner_optimizer) is keras.optimizers.AdamW
