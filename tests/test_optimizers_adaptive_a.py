"""RAdam, AdaBelief, Yogi, NovoGrad and LARS: what the shared table (tests/test_optimizer_table.py) does not check.

Limit cases against Keras's own optimizers or closed forms from the papers' equations, RAdam's
two branches, NovoGrad's first step and options, LARS's exclusion rule, Keras's Lamb exclusion,
argument validation and serialization.
"""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.adabelief import AdaBelief
from lepton_keras.optimizers.lars import LARS
from lepton_keras.optimizers.novograd import NovoGrad
from lepton_keras.optimizers.radam import RAdam
from lepton_keras.optimizers.yogi import Yogi
from tests.reference import optimizers_adaptive_a as reference

SHAPES = [(5,), (3, 4)]


def problem(steps, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=shape) for shape in SHAPES]
    grads = [[rng.normal(scale=scale, size=shape) for shape in SHAPES] for _ in range(steps)]
    return params, grads


def run(optimizer, params, grads, *, iterations=None, dtype="float32"):
    variables = [keras.Variable(np.asarray(p, np.float32), dtype=dtype) for p in params]
    optimizer.build(variables)
    if iterations is not None:
        optimizer.iterations.assign(iterations)
    for step_grads in grads:
        optimizer.apply([tf.cast(tf.constant(g, tf.float32), dtype) for g in step_grads], variables)
    return [np.asarray(v.numpy(), np.float64) for v in variables]


def assert_close(ours, expected, tolerance=1e-6):
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


def slot(optimizer, name_part):
    return next(np.array(v.numpy()) for v in optimizer.variables if name_part in v.name)


# RAdam


def test_radam_rho_crosses_4_between_steps_4_and_5_with_the_default_beta_2():
    assert reference.radam_rho(1, 0.999) == pytest.approx(1.0)
    assert reference.radam_rho(4, 0.999) <= 4.0 < reference.radam_rho(5, 0.999)


def test_radam_takes_un_adapted_momentum_steps_while_rho_is_at_most_4():
    # Scaling the gradients by 1000 scales the momentum steps by 1000; the rectified steps are
    # Adam-like and nearly scale-free. The first step is exactly -lr * g_1 (m_hat_1 = g_1).
    params, grads = problem(steps=4, seed=1)
    lr = 2**-7
    first = run(RAdam(lr), params, grads[:1])
    assert_close(first, [p - lr * g for p, g in zip(params, grads[0])])
    for scale in (1.0, 1000.0):
        scaled = [[scale * g for g in step] for step in grads]
        momentum_only = reference.radam(params, scaled, learning_rate=lr, beta_2=0.999, epsilon=0.0)
        assert_close(run(RAdam(lr), params, scaled), momentum_only, tolerance=1e-6 * scale)
        moved = max(np.max(np.abs(a - b)) for a, b in zip(momentum_only, params))
        assert moved > 0.01 * scale


def test_radam_rectifies_from_step_5_with_the_default_beta_2():
    # rho_5 = 4.996 > 4: with gradients of size ~1000 the 5th step is Adam-like (~lr), not ~1000 lr.
    params, grads = problem(steps=5, seed=1, scale=1000.0)
    lr = 2**-7
    before = run(RAdam(lr), params, grads[:4])
    after = run(RAdam(lr), params, grads)
    fifth_step = max(np.max(np.abs(a - b)) for a, b in zip(after, before))
    assert fifth_step < 2 * lr
    assert_close(after, reference.radam(params, grads, learning_rate=lr, beta_2=0.999), tolerance=1e-3)


def test_radam_with_beta_2_at_most_0_6_never_rectifies():
    # rho_inf = 2 / (1 - beta_2) - 1 <= 4: every step is the bias-corrected momentum step.
    params, grads = problem(steps=12, seed=2)
    lr, beta_1 = 2**-6, 0.75
    m = [np.zeros_like(p) for p in params]
    expected = [p.copy() for p in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            expected[i] = expected[i] - lr * m[i] / (1 - beta_1**t)
    assert_close(run(RAdam(lr, beta_1=beta_1, beta_2=0.5), params, grads), expected)


def test_radam_equals_adam_once_rho_reaches_its_limit():
    # At t = 10^5, beta_2^t = 0 in float32: rho_t = rho_inf, r_t = 1 and the rectified step is
    # Adam's (with epsilon = 0, where Keras's Adam and RAdam place epsilon differently).
    params, grads = problem(steps=6, seed=3)
    options = {"learning_rate": 2**-7, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 0.0}
    ours = run(RAdam(**options), params, grads, iterations=100_000)
    adam = run(keras.optimizers.Adam(**options), params, grads, iterations=100_000)
    assert_close(ours, adam)


def test_radam_float16_variables_cross_the_threshold_at_the_same_step():
    # rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t) cancels catastrophically in float16
    # (rho_inf ~ 2000, where float16 values are 2 apart); RAdam computes it in float32. Large
    # gradients make a momentum step ~16 times an adaptive one, so a wrong branch shows.
    params, grads = problem(steps=7, seed=4, scale=16.0)
    options = {"learning_rate": 2**-7, "beta_1": 0.875, "beta_2": 0.999, "epsilon": 2**-14}
    ours = run(RAdam(**options), params, grads, dtype="float16")
    assert_close(ours, reference.radam(params, grads, **options), tolerance=2e-2)


# AdaBelief


def test_adabelief_with_beta_1_0_is_sgd_with_a_fixed_rate():
    # m_t = g_t, so (g_t - m_t)^2 = 0, s_t only accumulates epsilon and
    # s_hat_t = epsilon / (1 - beta_2): w_t = w_{t-1} - lr g_t / (sqrt(epsilon / (1 - beta_2)) + epsilon).
    params, grads = problem(steps=5, seed=5)
    lr, beta_2, epsilon = 2**-4, 0.75, 2**-8
    rate = lr / (np.sqrt(epsilon / (1 - beta_2)) + epsilon)
    expected = [p - rate * sum(step[i] for step in grads) for i, p in enumerate(params)]
    assert_close(run(AdaBelief(lr, beta_1=0.0, beta_2=beta_2, epsilon=epsilon), params, grads), expected)


def test_adabelief_takes_larger_steps_than_adam_when_the_gradient_is_steady():
    # A constant gradient matches the belief m_t: s_t shrinks and the step grows past lr,
    # while Adam's bias-corrected step is exactly lr.
    params = [np.zeros(4)]
    steady = [[np.full(4, 0.5)] for _ in range(10)]
    ours = run(AdaBelief(0.01), params, steady)[0]
    adam = run(keras.optimizers.Adam(0.01, epsilon=1e-16), params, steady)[0]
    assert np.all(np.abs(ours) > np.abs(adam))
    assert_close([ours], reference.adabelief(params, steady, learning_rate=0.01), tolerance=1e-5)


# Yogi


def test_yogi_second_moment_holds_still_under_zero_gradients_where_adams_decays():
    params = [np.ones(3)]
    grads = [[np.full(3, 2.0)]] + [[np.zeros(3)]] * 5
    yogi = Yogi(beta_2=0.75, initial_accumulator_value=0.0)
    run(yogi, params, grads)
    # v_1 = 0 + (1 - beta_2) g^2 = 1, then sign(v - 0) * 0 = 0 leaves it unchanged.
    np.testing.assert_allclose(slot(yogi, "velocity"), np.full(3, 1.0), rtol=1e-6)
    adam = keras.optimizers.Adam(beta_2=0.75)
    run(adam, params, grads)
    np.testing.assert_allclose(slot(adam, "velocity"), np.full(3, 0.75**5), rtol=1e-6)


def test_yogi_second_moment_moves_by_at_most_1_minus_beta_2_times_g_squared():
    # From v_0 = 4 and |g| = 1 < 2: each step lowers v by exactly (1 - beta_2) g^2 = 0.25.
    params = [np.zeros(2)]
    grads = [[np.ones(2)]] * 3
    yogi = Yogi(beta_2=0.75, initial_accumulator_value=4.0)
    run(yogi, params, grads)
    np.testing.assert_allclose(slot(yogi, "velocity"), np.full(2, 4.0 - 3 * 0.25), rtol=1e-6)


def test_yogi_defaults_are_the_papers():
    config = Yogi().get_config()
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (0.9, 0.999, 1e-3)
    assert config["initial_accumulator_value"] == 1e-6
    assert config["learning_rate"] == pytest.approx(1e-2)


# NovoGrad


def test_novograd_first_step_is_the_normalised_gradient_plus_decay():
    # v_1 = ||g_1||^2 and m_1 = g_1 / ||g_1|| + d w_0, per variable: each variable's step has
    # norm lr whatever its gradient's scale.
    params, grads = problem(steps=1, seed=6)
    grads = [[1000.0 * grads[0][0], 0.001 * grads[0][1]]]
    lr, d = 2**-5, 0.125
    ours = run(NovoGrad(lr, epsilon=0.0, momentum_weight_decay=d), params, grads)
    expected = [w - lr * (g / np.linalg.norm(g) + d * w) for w, g in zip(params, grads[0])]
    assert_close(ours, expected)


def test_novograd_is_invariant_to_the_scale_of_the_gradients():
    params, grads = problem(steps=10, seed=7)
    scaled = [[1024.0 * g for g in step] for step in grads]
    options = {"learning_rate": 2**-5, "epsilon": 0.0}
    assert_close(run(NovoGrad(**options), params, scaled), run(NovoGrad(**options), params, grads), tolerance=1e-5)


@pytest.mark.parametrize("grad_averaging", [False, True])
def test_novograd_options_match_the_reference(grad_averaging):
    params, grads = problem(steps=15, seed=8)
    options = {"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.75, "epsilon": 2**-20,
               "momentum_weight_decay": 0.0625, "grad_averaging": grad_averaging, "weight_decay": 0.25}
    assert_close(run(NovoGrad(**options), params, grads), reference.novograd(params, grads, **options))


def test_novograd_keeps_one_scalar_second_moment_per_variable():
    optimizer = NovoGrad()
    optimizer.build([keras.Variable(np.zeros((3, 4), np.float32)), keras.Variable(np.zeros((2,)), dtype="float16")])
    moments = [v for v in optimizer.variables if "layer_velocity" in v.name]
    assert [tuple(v.shape) for v in moments] == [(), ()]
    assert [v.dtype for v in moments] == ["float32", "float32"]  # half-precision norms would overflow


# LARS


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
    np.testing.assert_allclose(layer.bias.numpy(), sgd_bias.numpy(), rtol=1e-6, atol=1e-6)


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
    zero_weights = run(LARS(lr, trust_coefficient=0.125, momentum_weight_decay=d), [np.zeros(3)], [[np.ones(3)]])
    np.testing.assert_allclose(zero_weights[0], -lr * np.ones(3), rtol=1e-6)
    zero_gradient = run(LARS(lr, trust_coefficient=0.125, momentum_weight_decay=d), [np.ones(3)], [[np.zeros(3)]])
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



@pytest.mark.parametrize(
    "make",
    [
        lambda **k: RAdam(2**-7, beta_2=0.96875, **k),
        lambda **k: AdaBelief(2**-7, **k),
        lambda **k: NovoGrad(2**-5, **k),
    ],
    ids=["RAdam", "AdaBelief", "NovoGrad"],
)
def test_step_count_follows_updates_under_gradient_accumulation(make):
    # t (bias correction, rho_t, NovoGrad's first step) counts updates, not micro-batches, so
    # 2-step accumulation equals one step on the mean gradient.
    params, grads = problem(steps=12, seed=10)
    means = [[(a + b) / 2 for a, b in zip(grads[k], grads[k + 1])] for k in range(0, 12, 2)]
    assert_close(run(make(gradient_accumulation_steps=2), params, grads), run(make(), params, means), tolerance=2e-6)

# Arguments and serialization


@pytest.mark.parametrize(
    "make, argument, value",
    [
        (RAdam, "beta_1", 1.0),
        (RAdam, "beta_2", -0.1),
        (RAdam, "epsilon", -1e-7),
        (AdaBelief, "beta_1", "0.9"),
        (AdaBelief, "beta_2", 1.5),
        (AdaBelief, "epsilon", float("nan")),
        (Yogi, "beta_2", True),
        (Yogi, "epsilon", -1.0),
        (Yogi, "initial_accumulator_value", -1e-6),
        (NovoGrad, "beta_1", 1.0),
        (NovoGrad, "momentum_weight_decay", -0.1),
        (NovoGrad, "grad_averaging", 1),
        (LARS, "momentum", 1.0),
        (LARS, "trust_coefficient", -0.001),
        (LARS, "momentum_weight_decay", float("inf")),
        (LARS, "epsilon", None),
        (LARS, "exclude_from_adaptation", "bias"),
        (LARS, "exclude_from_adaptation", ["bias", ""]),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(make, argument, value):
    with pytest.raises(ValueError) as raised:
        make(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RAdam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6, weight_decay=0.1),
        lambda: AdaBelief(0.02, beta_1=0.85, beta_2=0.995, epsilon=1e-12, clipnorm=1.0),
        lambda: Yogi(0.03, beta_1=0.7, beta_2=0.9, epsilon=1e-4, initial_accumulator_value=1e-3),
        lambda: NovoGrad(0.04, beta_1=0.9, beta_2=0.95, epsilon=1e-7, momentum_weight_decay=0.002,
                         grad_averaging=True),
        lambda: LARS(2.0, momentum=0.8, trust_coefficient=0.002, momentum_weight_decay=1e-4, epsilon=1e-9,
                     exclude_from_adaptation=("bias", "norm")),
    ],
    ids=["RAdam", "AdaBelief", "Yogi", "NovoGrad", "LARS"],
)
def test_config_round_trips(make):
    optimizer = make()
    config = optimizer.get_config()
    assert type(optimizer).from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer) and restored.get_config() == config
    defaults = type(optimizer)().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 4, changed  # the test really sets the new keys


@pytest.mark.parametrize("make", [RAdam, AdaBelief, Yogi, NovoGrad, LARS], ids=lambda make: make.__name__)
def test_docstring_example_runs(make):
    example = make.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})


@pytest.mark.parametrize(
    "make", [lambda: NovoGrad(2**-5), lambda: LARS(0.5, trust_coefficient=0.125)], ids=["NovoGrad", "LARS"]
)
def test_layerwise_scaling_of_a_tiny_float16_gradient_stays_finite(make):
    # 1 / ||g|| ~ 1e6 is beyond float16's range; the scaled gradient is not.
    params = [np.linspace(-1, 1, 6)]
    grads = [[np.full(6, 1e-6)]] * 2
    ours = run(make(), params, grads, dtype="float16")
    assert np.all(np.isfinite(ours[0])) and not np.allclose(ours[0], params[0], atol=1e-4)
