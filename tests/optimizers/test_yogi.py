"""Yogi: its table row, its additive second moment against Adam's, the paper's defaults, arguments and config.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import textwrap

import keras
import numpy as np
import pytest

from lepton_keras.optimizers.yogi import Yogi
from tests.optimizers.reference import yogi as reference
from tests.support.numerics import apply_steps
from tests.support.optimizer_spec import OptimizerSpec

SPECS = [
    OptimizerSpec(
        name="yogi",
        make=Yogi,
        reference=reference.yogi,
        # Float32 numbers, so the float64 reference compares at ~1e-7.
        options={"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-10,
                 "initial_accumulator_value": 2**-20},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 0.05},
        cnn_overrides={"learning_rate": 0.01},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-3,
                         "initial_accumulator_value": 1e-6},
    ),
]


def slot(optimizer, name_part):
    return next(np.array(v.numpy()) for v in optimizer.variables if name_part in v.name)


def test_yogi_second_moment_holds_still_under_zero_gradients_where_adams_decays():
    params = [np.ones(3)]
    grads = [[np.full(3, 2.0)]] + [[np.zeros(3)]] * 5
    yogi = Yogi(beta_2=0.75, initial_accumulator_value=0.0)
    apply_steps(yogi, params, grads)
    # v_1 = 0 + (1 - beta_2) g^2 = 1, then sign(v - 0) * 0 = 0 leaves it unchanged.
    np.testing.assert_allclose(slot(yogi, "velocity"), np.full(3, 1.0), rtol=1e-6)
    adam = keras.optimizers.Adam(beta_2=0.75)
    apply_steps(adam, params, grads)
    np.testing.assert_allclose(slot(adam, "velocity"), np.full(3, 0.75**5), rtol=1e-6)


def test_yogi_second_moment_moves_by_at_most_1_minus_beta_2_times_g_squared():
    # From v_0 = 4 and |g| = 1 < 2: each step lowers v by exactly (1 - beta_2) g^2 = 0.25.
    params = [np.zeros(2)]
    grads = [[np.ones(2)]] * 3
    yogi = Yogi(beta_2=0.75, initial_accumulator_value=4.0)
    apply_steps(yogi, params, grads)
    np.testing.assert_allclose(slot(yogi, "velocity"), np.full(2, 4.0 - 3 * 0.25), rtol=1e-6)


def test_yogi_defaults_are_the_papers():
    config = Yogi().get_config()
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (0.9, 0.999, 1e-3)
    assert config["initial_accumulator_value"] == 1e-6
    assert config["learning_rate"] == pytest.approx(1e-2)


@pytest.mark.parametrize(
    "argument, value", [("beta_2", True), ("epsilon", -1.0), ("initial_accumulator_value", -1e-6)]
)
def test_bad_arguments_name_the_argument_and_the_value(argument, value):
    with pytest.raises(ValueError) as raised:
        Yogi(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


def test_config_round_trips():
    optimizer = Yogi(0.03, beta_1=0.7, beta_2=0.9, epsilon=1e-4, initial_accumulator_value=1e-3)
    config = optimizer.get_config()
    assert Yogi.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is Yogi and restored.get_config() == config
    defaults = Yogi().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 4, changed  # the test really sets the new keys


def test_docstring_example_runs():
    example = Yogi.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
