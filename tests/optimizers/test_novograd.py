"""NovoGrad: its table row, its first step and scale invariance, its options, its per-variable moment, arguments.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import textwrap

import keras
import numpy as np
import pytest

from lepton_keras.optimizers.novograd import NovoGrad
from tests.optimizers.reference import novograd as reference
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

SHAPES = ((5,), (3, 4))

SPECS = [
    OptimizerSpec(
        name="novograd",
        make=NovoGrad,
        reference=reference.novograd,
        # Float32 numbers, so the float64 reference compares at ~1e-7.
        options={"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.75, "epsilon": 2**-20},
        decay_options={"momentum_weight_decay": 0.125},
        # Its steps have a size set by the normalised gradient, not by the gradient's magnitude:
        # it reaches a minimum only with a decaying learning rate.
        converge_options={"learning_rate": keras.optimizers.schedules.CosineDecay(0.05, 2000)},
        cnn_overrides={"learning_rate": 0.03},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "beta_1": 0.95, "beta_2": 0.98, "epsilon": 1e-8},
    ),
]


def test_novograd_first_step_is_the_normalised_gradient_plus_decay():
    # v_1 = ||g_1||^2 and m_1 = g_1 / ||g_1|| + d w_0, per variable: each variable's step has
    # norm lr whatever its gradient's scale.
    params, grads = random_problem(1, shapes=SHAPES, seed=6)
    grads = [[1000.0 * grads[0][0], 0.001 * grads[0][1]]]
    lr, d = 2**-5, 0.125
    ours = apply_steps(NovoGrad(lr, epsilon=0.0, momentum_weight_decay=d), params, grads)
    expected = [w - lr * (g / np.linalg.norm(g) + d * w) for w, g in zip(params, grads[0])]
    assert_close(ours, expected)


def test_novograd_is_invariant_to_the_scale_of_the_gradients():
    params, grads = random_problem(10, shapes=SHAPES, seed=7)
    scaled = [[1024.0 * g for g in step] for step in grads]
    options = {"learning_rate": 2**-5, "epsilon": 0.0}
    assert_close(apply_steps(NovoGrad(**options), params, scaled), apply_steps(NovoGrad(**options), params, grads),
                 tolerance=1e-5)  # fmt: skip


@pytest.mark.parametrize("grad_averaging", [False, True])
def test_novograd_options_match_the_reference(grad_averaging):
    params, grads = random_problem(15, shapes=SHAPES, seed=8)
    options = {"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.75, "epsilon": 2**-20,
               "momentum_weight_decay": 0.0625, "grad_averaging": grad_averaging, "weight_decay": 0.25}
    assert_close(apply_steps(NovoGrad(**options), params, grads), reference.novograd(params, grads, **options))


def test_novograd_keeps_one_scalar_second_moment_per_variable():
    optimizer = NovoGrad()
    optimizer.build([keras.Variable(np.zeros((3, 4), np.float32)), keras.Variable(np.zeros((2,)), dtype="float16")])
    moments = [v for v in optimizer.variables if "layer_velocity" in v.name]
    assert [tuple(v.shape) for v in moments] == [(), ()]
    assert [v.dtype for v in moments] == ["float32", "float32"]  # half-precision norms would overflow


def test_step_count_follows_updates_under_gradient_accumulation():
    # t (the first step's v_1 = ||g_1||^2) counts updates, not micro-batches, so 2-step
    # accumulation equals one step on the mean gradient.
    params, grads = random_problem(12, shapes=SHAPES, seed=10)
    means = [[(a + b) / 2 for a, b in zip(grads[k], grads[k + 1])] for k in range(0, 12, 2)]
    accumulated = apply_steps(NovoGrad(2**-5, gradient_accumulation_steps=2), params, grads)
    assert_close(accumulated, apply_steps(NovoGrad(2**-5), params, means), tolerance=2e-6)


def test_layerwise_scaling_of_a_tiny_float16_gradient_stays_finite():
    # 1 / ||g|| ~ 1e6 is beyond float16's range; the scaled gradient is not.
    params = [np.linspace(-1, 1, 6)]
    grads = [[np.full(6, 1e-6)]] * 2
    ours = apply_steps(NovoGrad(2**-5), params, grads, dtype="float16")
    assert np.all(np.isfinite(ours[0])) and not np.allclose(ours[0], params[0], atol=1e-4)


@pytest.mark.parametrize(
    "argument, value", [("beta_1", 1.0), ("momentum_weight_decay", -0.1), ("grad_averaging", 1)]
)
def test_bad_arguments_name_the_argument_and_the_value(argument, value):
    with pytest.raises(ValueError) as raised:
        NovoGrad(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


def test_config_round_trips():
    optimizer = NovoGrad(0.04, beta_1=0.9, beta_2=0.95, epsilon=1e-7, momentum_weight_decay=0.002, grad_averaging=True)
    config = optimizer.get_config()
    assert NovoGrad.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is NovoGrad and restored.get_config() == config
    defaults = NovoGrad().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 4, changed  # the test really sets the new keys


def test_docstring_example_runs():
    example = NovoGrad.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
