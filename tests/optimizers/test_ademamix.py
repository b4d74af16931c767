"""AdEMAMix: its table row, its limit at Adam, its alpha and beta_3 warm-ups, float64 warm-ups, arguments and config.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.ademamix import AdEMAMix, ademamix_schedules
from tests.optimizers.reference import ademamix as reference
from tests.support.numerics import (
    apply_steps,
    assert_close,
    error_relative_to_the_displacement,
    random_problem,
    relative_error,
)
from tests.support.optimizer_spec import OptimizerSpec

SHAPES = ((4,), (3, 2), ())
STEPS = 15

SPECS = [
    OptimizerSpec(
        name="ademamix",
        make=AdEMAMix,
        reference=reference.ademamix,
        # Float32 numbers, so the float64 reference compares at ~1e-7; the 15 reference steps run
        # through the alpha and beta_3 warm-ups (T = 10).
        options={"learning_rate": 2**-6, "beta_1": 0.875, "beta_2": 0.96875, "beta_3": 0.9921875, "alpha": 4.0,
                 "alpha_beta3_warmup_steps": 10, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 2**-7, "alpha": 2.0, "beta_3": 0.99, "alpha_beta3_warmup_steps": 200},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "beta_3": 0.9999, "alpha": 5.0,
                         "epsilon": 1e-8},
    ),
]


@pytest.mark.parametrize("weight_decay", [None, 0.25])
def test_ademamix_with_alpha_0_is_adam(weight_decay):
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=1, scale=1.0)
    options = {"learning_rate": 0.01, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 1e-7, "weight_decay": weight_decay}
    adam = keras.optimizers.AdamW(**options) if weight_decay else keras.optimizers.Adam(**options)
    expected = apply_steps(adam, params, grads)
    ours = apply_steps(AdEMAMix(alpha=0.0, beta_3=0.9921875, **options), params, grads)
    assert relative_error(expected, params) > 0.05
    assert_close(ours, expected, 1e-6)


def test_ademamix_warmups_follow_the_papers_schedulers():
    # beta_3 = 0.99 rather than 0.9999: a float32 beta that near 1 pins its half-life only to ~1e-3.
    alpha, beta_1, beta_3, warmup = 8.0, 0.5, 0.9921875, 100
    steps = np.array([1.0, 10.0, 50.0, 99.0, 100.0, 150.0])
    alpha_t, beta_3_t = (np.array(a, np.float64) for a in ademamix_schedules(
        tf.constant(steps, tf.float32), alpha=tf.constant(alpha), beta_1=tf.constant(beta_1),
        beta_3=tf.constant(beta_3), warmup_steps=warmup))  # fmt: skip
    np.testing.assert_allclose(alpha_t, np.minimum(steps * alpha / warmup, alpha), rtol=1e-6)
    assert np.all(np.diff(beta_3_t) >= 0) and beta_3_t[0] < 0.9
    # beta_3's half-life ln(0.5) / ln(beta) grows linearly from beta_1's to beta_3's over the warm-up.
    def half_life(beta):
        return np.log(0.5) / np.log(beta)

    fraction = np.minimum(steps / warmup, 1.0)
    expected = (1 - fraction) * half_life(beta_1) + fraction * half_life(beta_3)
    np.testing.assert_allclose(half_life(beta_3_t), expected, rtol=1e-4)
    assert beta_3_t[-1] == pytest.approx(beta_3, abs=1e-7) and beta_3_t[-2] == pytest.approx(beta_3, abs=1e-7)
    assert ademamix_schedules(steps, alpha=alpha, beta_1=beta_1, beta_3=beta_3, warmup_steps=None) == (alpha, beta_3)


def test_float64_variables_follow_the_float64_reference_to_1e_7():
    # Everyday hyperparameters (the defaults 0.9, 0.999) and the warm-ups with float64 variables:
    # no float32 on the way. apply_steps passes float32 numbers, so the reference gets the same ones.
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=14, scale=1.0, float32_values=True)
    options = {"learning_rate": 2**-7, "beta_3": 0.9999, "alpha_beta3_warmup_steps": 10}
    ours = apply_steps(AdEMAMix(**options), params, grads, dtype="float64")
    expected = reference.ademamix(params, grads, **options)
    assert max(float(np.max(np.abs(e - p))) for e, p in zip(expected, params)) > 1e-3
    assert error_relative_to_the_displacement(ours, expected, params) < 1e-7


def test_ademamix_warmup_changes_the_steps():
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=2, scale=1.0)
    options = {"learning_rate": 2**-6, "beta_1": 0.875, "beta_2": 0.96875, "beta_3": 0.9921875, "alpha": 4.0}
    plain = apply_steps(AdEMAMix(**options), params, grads)
    warm = apply_steps(AdEMAMix(alpha_beta3_warmup_steps=100, **options), params, grads)
    assert_close(plain, reference.ademamix(params, grads, **options))
    assert_close(warm, reference.ademamix(params, grads, alpha_beta3_warmup_steps=100, **options))
    assert relative_error(warm, plain) > 1e-3


def test_ademamix_warmup_needs_a_positive_beta_1():
    AdEMAMix(beta_1=0.0)
    with pytest.raises(ValueError, match=r"beta_1 must be a number in \(0, 1\), received: 0.0"):
        AdEMAMix(beta_1=0.0, alpha_beta3_warmup_steps=10)


@pytest.mark.parametrize(
    "argument, value",
    [("beta_1", 1.5), ("beta_2", 1.0), ("beta_3", -0.5), ("alpha", -1.0), ("alpha_beta3_warmup_steps", 0),
     ("alpha_beta3_warmup_steps", 2.5), ("epsilon", True)],
)  # fmt: skip
def test_bad_hyperparameters_raise_an_error_naming_them(argument, value):
    with pytest.raises(ValueError, match=rf"{argument} must .*received: {value!r}"):
        AdEMAMix(**{argument: value})


def test_get_config_round_trips():
    optimizer = AdEMAMix(0.003, beta_3=0.999, alpha=8.0, alpha_beta3_warmup_steps=500, weight_decay=0.1)
    config = optimizer.get_config()
    assert AdEMAMix.from_config(config).get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"].startswith("lepton_keras>")
    again = keras.optimizers.deserialize(serialized)
    assert type(again) is AdEMAMix and again.get_config() == config
