"""LARS: its table row, which variables it adapts and the step the others get, its zero-norm rule, Keras's Lamb.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
Keras's own Lamb is checked here too: the "Keras's Lamb" section of LARS's docstring says how it
excludes variables from weight decay.
"""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.lars import LARS
from tests.optimizers.reference import lars as reference
from tests.support.numerics import apply_steps, assert_close
from tests.support.optimizer_spec import OptimizerSpec

SPECS = [
    OptimizerSpec(
        name="lars",
        make=LARS,
        reference=reference.lars,
        # Float32 numbers, so the float64 reference compares at ~1e-7.
        options={"learning_rate": 0.5, "momentum": 0.875, "trust_coefficient": 0.125, "epsilon": 2**-20},
        decay_options={"momentum_weight_decay": 0.0625},
        # Its steps have a size set by the weights, not by the gradient's magnitude: it reaches a
        # minimum only with a decaying learning rate.
        converge_options={
            "learning_rate": keras.optimizers.schedules.CosineDecay(0.003, 2000),
            "trust_coefficient": 1.0,
        },
        cnn_overrides={"learning_rate": 0.2, "trust_coefficient": 0.01, "momentum": 0.9, "epsilon": 1e-08},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 0.25, "momentum": 0.9, "trust_coefficient": 0.1, "epsilon": 1e-8},
    ),
]


def dense_layer():
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(3, name="dense")
    layer.build((None, 4))
    layer.bias.assign(np.linspace(-1, 1, 3).astype(np.float32))
    return layer


def lars_problem(steps=6):
    rng = np.random.default_rng(9)
    return [[rng.normal(scale=0.5, size=(4, 3)), rng.normal(scale=0.5, size=(3,))] for _ in range(steps)]


def test_lars_excludes_biases_by_path_and_gives_them_the_plain_momentum_sgd_step():
    grads = lars_problem()
    options = {"learning_rate": 0.5, "momentum": 0.875, "trust_coefficient": 0.125, "momentum_weight_decay": 0.0625}
    layer = dense_layer()
    start = [layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)]
    optimizer = LARS(**options)
    optimizer.build(layer.trainable_variables)
    assert [optimizer.adapts(v) for v in (layer.kernel, layer.bias)] == [True, False]
    for step in grads:
        optimizer.apply([tf.constant(g, tf.float32) for g in step], [layer.kernel, layer.bias])
    expected = reference.lars(start, grads, adapted=[True, False], **options)
    assert_close([layer.kernel.numpy(), layer.bias.numpy()], expected)

    sgd_bias = keras.Variable(start[1].astype(np.float32))
    sgd = keras.optimizers.SGD(options["learning_rate"], momentum=options["momentum"])
    for step in grads:
        sgd.apply([tf.constant(step[1], tf.float32)], [sgd_bias])
    assert_close([layer.bias.numpy()], [sgd_bias.numpy()])


def test_lars_with_no_exclusion_adapts_every_variable():
    grads = lars_problem()
    layer = dense_layer()
    start = [layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)]
    optimizer = LARS(0.5, trust_coefficient=0.125, exclude_from_adaptation=())
    run_steps = [[tf.constant(g, tf.float32) for g in step] for step in grads]
    for step in run_steps:
        optimizer.apply(step, [layer.kernel, layer.bias])
    expected = reference.lars(start, grads, learning_rate=0.5, trust_coefficient=0.125)
    assert_close([layer.kernel.numpy(), layer.bias.numpy()], expected)


def test_lars_default_exclusion_covers_biases_and_normalisation_layers_not_model_names():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="dense"),
            keras.layers.BatchNormalization(name="batch_normalization"),
            keras.layers.LayerNormalization(name="layer_normalization"),
        ],
        name="beta_gamma_model",
    )
    optimizer = LARS()
    adapted = {v.path: optimizer.adapts(v) for v in model.trainable_variables}
    assert adapted == {
        "beta_gamma_model/dense/kernel": True,
        "beta_gamma_model/dense/bias": False,
        "beta_gamma_model/batch_normalization/gamma": False,
        "beta_gamma_model/batch_normalization/beta": False,
        "beta_gamma_model/layer_normalization/gamma": False,
        "beta_gamma_model/layer_normalization/beta": False,
    }, adapted
    kernel = model.trainable_variables[0]
    assert LARS(exclude_from_adaptation=["dense"]).adapts(kernel) is False
    assert LARS(exclude_from_adaptation=["dense/k"]).adapts(kernel) is False
    assert LARS(exclude_from_adaptation=["beta_gamma_model"]).adapts(kernel) is True


def test_lars_trust_ratio_is_1_when_a_norm_is_0():
    # Zero weights: the step is lr * g (times 1); zero gradient: the step is lr * d * w.
    lr, d = 0.25, 0.5
    zero_weights = apply_steps(LARS(lr, trust_coefficient=0.125, momentum_weight_decay=d), [np.zeros(3)],
                               [[np.ones(3)]])  # fmt: skip
    np.testing.assert_allclose(zero_weights[0], -lr * np.ones(3), rtol=1e-6)
    zero_gradient = apply_steps(LARS(lr, trust_coefficient=0.125, momentum_weight_decay=d), [np.ones(3)],
                                [[np.zeros(3)]])  # fmt: skip
    np.testing.assert_allclose(zero_gradient[0], (1 - lr * d) * np.ones(3), rtol=1e-6)


def test_keras_lamb_excludes_biases_from_weight_decay_by_name():
    # The "Keras's Lamb" section of LARS's docstring: a zero gradient makes Lamb's own step 0,
    # so only the decoupled decay moves the weights, and not the excluded bias.
    layer = dense_layer()
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    lamb = keras.optimizers.Lamb(learning_rate=0.5, weight_decay=0.25)
    lamb.exclude_from_weight_decay(var_names=["bias"])
    lamb.apply([tf.zeros((4, 3)), tf.zeros((3,))], [layer.kernel, layer.bias])
    np.testing.assert_allclose(layer.kernel.numpy(), kernel * (1 - 0.5 * 0.25), rtol=1e-6)
    np.testing.assert_array_equal(layer.bias.numpy(), bias)


def test_layerwise_scaling_of_a_tiny_float16_gradient_stays_finite():
    # 1 / ||g|| ~ 1e6 is beyond float16's range; the scaled gradient is not.
    params = [np.linspace(-1, 1, 6)]
    grads = [[np.full(6, 1e-6)]] * 2
    ours = apply_steps(LARS(0.5, trust_coefficient=0.125), params, grads, dtype="float16")
    assert np.all(np.isfinite(ours[0])) and not np.allclose(ours[0], params[0], atol=1e-4)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("momentum", 1.0),
        ("trust_coefficient", -0.001),
        ("momentum_weight_decay", float("inf")),
        ("epsilon", None),
        ("exclude_from_adaptation", "bias"),
        ("exclude_from_adaptation", ["bias", ""]),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(argument, value):
    with pytest.raises(ValueError) as raised:
        LARS(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


def test_config_round_trips():
    optimizer = LARS(2.0, momentum=0.8, trust_coefficient=0.002, momentum_weight_decay=1e-4, epsilon=1e-9,
                     exclude_from_adaptation=("bias", "norm"))  # fmt: skip
    config = optimizer.get_config()
    assert LARS.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is LARS and restored.get_config() == config
    defaults = LARS().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 4, changed  # the test really sets the new keys


def test_docstring_example_runs():
    example = LARS.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
