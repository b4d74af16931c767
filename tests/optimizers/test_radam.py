"""RAdam: its table row, its two branches and the threshold between them, its limit at Adam, arguments and config.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import textwrap

import keras
import numpy as np
import pytest

from lepton_keras.optimizers.radam import RAdam
from tests.optimizers.reference import radam as reference
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

SHAPES = ((5,), (3, 4))

SPECS = [
    OptimizerSpec(
        name="radam",
        make=RAdam,
        reference=reference.radam,
        # Float32 numbers, so the float64 reference compares at ~1e-7. The 15 reference steps cross
        # the rectification threshold (beta_2 = 0.96875: rho_4 = 3.92, rho_5 = 4.87).
        options={"learning_rate": 2**-7, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25},
        # Its first 4 steps are un-adapted momentum steps: a larger learning rate throws
        # Rosenbrock's iterate far up the walls of the valley before the adaptive steps start.
        converge_options={"learning_rate": 0.005, "beta_2": 0.99},
        cnn_overrides={"learning_rate": 0.003},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    ),
]


def test_radam_rho_crosses_4_between_steps_4_and_5_with_the_default_beta_2():
    assert reference.radam_rho(1, 0.999) == pytest.approx(1.0)
    assert reference.radam_rho(4, 0.999) <= 4.0 < reference.radam_rho(5, 0.999)


def test_radam_takes_un_adapted_momentum_steps_while_rho_is_at_most_4():
    # Scaling the gradients by 1000 scales the momentum steps by 1000; the rectified steps are
    # Adam-like and nearly scale-free. The first step is exactly -lr * g_1 (m_hat_1 = g_1).
    params, grads = random_problem(4, shapes=SHAPES, seed=1)
    lr = 2**-7
    first = apply_steps(RAdam(lr), params, grads[:1])
    assert_close(first, [p - lr * g for p, g in zip(params, grads[0])])
    for scale in (1.0, 1000.0):
        scaled = [[scale * g for g in step] for step in grads]
        momentum_only = reference.radam(params, scaled, learning_rate=lr, beta_2=0.999, epsilon=0.0)
        assert_close(apply_steps(RAdam(lr), params, scaled), momentum_only, tolerance=1e-6 * scale)
        moved = max(np.max(np.abs(a - b)) for a, b in zip(momentum_only, params))
        assert moved > 0.01 * scale


def test_radam_rectifies_from_step_5_with_the_default_beta_2():
    # rho_5 = 4.996 > 4: with gradients of size ~1000 the 5th step is Adam-like (~lr), not ~1000 lr.
    params, grads = random_problem(5, shapes=SHAPES, seed=1, scale=1000.0)
    lr = 2**-7
    before = apply_steps(RAdam(lr), params, grads[:4])
    after = apply_steps(RAdam(lr), params, grads)
    fifth_step = max(np.max(np.abs(a - b)) for a, b in zip(after, before))
    assert fifth_step < 2 * lr
    assert_close(after, reference.radam(params, grads, learning_rate=lr, beta_2=0.999), tolerance=1e-3)


def test_radam_with_beta_2_at_most_0_6_never_rectifies():
    # rho_inf = 2 / (1 - beta_2) - 1 <= 4: every step is the bias-corrected momentum step.
    params, grads = random_problem(12, shapes=SHAPES, seed=2)
    lr, beta_1 = 2**-6, 0.75
    m = [np.zeros_like(p) for p in params]
    expected = [p.copy() for p in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            expected[i] = expected[i] - lr * m[i] / (1 - beta_1**t)
    assert_close(apply_steps(RAdam(lr, beta_1=beta_1, beta_2=0.5), params, grads), expected)


def test_radam_equals_adam_once_rho_reaches_its_limit():
    # At t = 10^5, beta_2^t = 0 in float32: rho_t = rho_inf, r_t = 1 and the rectified step is
    # Adam's (with epsilon = 0, where Keras's Adam and RAdam place epsilon differently).
    params, grads = random_problem(6, shapes=SHAPES, seed=3)
    options = {"learning_rate": 2**-7, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 0.0}
    ours = apply_steps(RAdam(**options), params, grads, iterations=100_000)
    adam = apply_steps(keras.optimizers.Adam(**options), params, grads, iterations=100_000)
    assert_close(ours, adam)


def test_radam_float16_variables_cross_the_threshold_at_the_same_step():
    # rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t) cancels catastrophically in float16
    # (rho_inf ~ 2000, where float16 values are 2 apart); RAdam computes it in float32. Large
    # gradients make a momentum step ~16 times an adaptive one, so a wrong branch shows.
    params, grads = random_problem(7, shapes=SHAPES, seed=4, scale=16.0)
    options = {"learning_rate": 2**-7, "beta_1": 0.875, "beta_2": 0.999, "epsilon": 2**-14}
    ours = apply_steps(RAdam(**options), params, grads, dtype="float16")
    assert_close(ours, reference.radam(params, grads, **options), tolerance=2e-2)


def test_step_count_follows_updates_under_gradient_accumulation():
    # t (bias correction, rho_t) counts updates, not micro-batches, so 2-step accumulation equals
    # one step on the mean gradient.
    params, grads = random_problem(12, shapes=SHAPES, seed=10)
    means = [[(a + b) / 2 for a, b in zip(grads[k], grads[k + 1])] for k in range(0, 12, 2)]
    accumulated = apply_steps(RAdam(2**-7, beta_2=0.96875, gradient_accumulation_steps=2), params, grads)
    assert_close(accumulated, apply_steps(RAdam(2**-7, beta_2=0.96875), params, means), tolerance=2e-6)


@pytest.mark.parametrize("argument, value", [("beta_1", 1.0), ("beta_2", -0.1), ("epsilon", -1e-7)])
def test_bad_arguments_name_the_argument_and_the_value(argument, value):
    with pytest.raises(ValueError) as raised:
        RAdam(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


def test_config_round_trips():
    optimizer = RAdam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6, weight_decay=0.1)
    config = optimizer.get_config()
    assert RAdam.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is RAdam and restored.get_config() == config
    defaults = RAdam().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 4, changed  # the test really sets the new keys


def test_docstring_example_runs():
    example = RAdam.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
