"""Adan, AdEMAMix, MADGRAD and Prodigy: limit cases, branches and options the shared table does not reach.

The shared tests (reference match, replicas, save/resume, convergence, dtypes, jit) run over
the rows of tests/optimizer_specs_adaptive_b.py in tests/test_optimizer_table.py.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import get_strategy
from lepton_keras.optimizers.adan import Adan
from lepton_keras.optimizers.ademamix import AdEMAMix, ademamix_schedules
from lepton_keras.optimizers.madgrad import MADGRAD
from lepton_keras.optimizers.prodigy import Prodigy
from tests.reference import optimizers_adaptive_b as reference

SHAPES = [(4,), (3, 2), ()]
STEPS = 15


def problem(seed=0, mean=0.0, steps=STEPS):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
    grads = [[(rng.normal(size=shape) + mean).astype(np.float32) for shape in SHAPES] for _ in range(steps)]
    return params, grads


def run(optimizer, params, grads, every_step=None):
    """Applies grads[t] step by step; returns the final weights (and every_step(optimizer) after each step)."""
    variables = [keras.Variable(p) for p in params]
    optimizer.build(variables)
    seen = []
    for step_grads in grads:
        optimizer.apply([None if g is None else tf.constant(g) for g in step_grads], variables)
        if every_step is not None:
            seen.append(every_step(optimizer))
    weights = [v.numpy().astype(np.float64) for v in variables]
    return (weights, seen) if every_step is not None else weights


def assert_close(ours, expected, tolerance=1e-6):
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=tolerance * max(1.0, float(np.max(np.abs(b)))))


def moved(params, weights):
    return max(float(np.max(np.abs(np.asarray(w) - p))) for w, p in zip(weights, params))


# AdEMAMix


@pytest.mark.parametrize("weight_decay", [None, 0.25])
def test_ademamix_with_alpha_0_is_adam(weight_decay):
    params, grads = problem(seed=1)
    options = {"learning_rate": 0.01, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 1e-7, "weight_decay": weight_decay}
    adam = keras.optimizers.AdamW(**options) if weight_decay else keras.optimizers.Adam(**options)
    expected = run(adam, params, grads)
    ours = run(AdEMAMix(alpha=0.0, beta_3=0.9921875, **options), params, grads)
    assert moved(params, expected) > 0.05
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


@pytest.mark.parametrize("make, reference_of, options", [
    (AdEMAMix, reference.ademamix, {"learning_rate": 2**-7, "beta_3": 0.9999, "alpha_beta3_warmup_steps": 10}),
    (Prodigy, reference.prodigy, {"d0": 0.01, "bias_correction": True, "growth_rate": 1.02}),
], ids=["ademamix_warmups", "prodigy_bias_correction_growth"])  # fmt: skip
def test_float64_variables_follow_the_float64_reference_to_1e_7(make, reference_of, options):
    # Everyday hyperparameters (the defaults 0.9, 0.999) with float64 variables: no float32 on the way.
    params, grads = problem(seed=14)
    params = [p.astype(np.float64) for p in params]
    variables = [keras.Variable(p, dtype="float64") for p in params]
    optimizer = make(**options)
    optimizer.build(variables)
    for step_grads in grads:
        optimizer.apply([tf.constant(g, tf.float64) for g in step_grads], variables)
    expected = reference_of(params, grads, **options)
    displacement = max(float(np.max(np.abs(e - p))) for e, p in zip(expected, params))
    error = max(float(np.max(np.abs(v.numpy() - e))) for v, e in zip(variables, expected))
    assert displacement > 1e-3 and error < 1e-7 * displacement


def test_ademamix_warmup_changes_the_steps():
    params, grads = problem(seed=2)
    options = {"learning_rate": 2**-6, "beta_1": 0.875, "beta_2": 0.96875, "beta_3": 0.9921875, "alpha": 4.0}
    plain = run(AdEMAMix(**options), params, grads)
    warm = run(AdEMAMix(alpha_beta3_warmup_steps=100, **options), params, grads)
    assert_close(plain, reference.ademamix(params, grads, **options))
    assert_close(warm, reference.ademamix(params, grads, alpha_beta3_warmup_steps=100, **options))
    assert moved(plain, warm) > 1e-3


# Adan


def test_adan_without_the_difference_term_is_adam():
    # beta_2 = 0 drops v and makes n the EMA of g^2: Adam with Adan's beta_3 as Adam's beta_2.
    params, grads = problem(seed=3)
    expected = run(keras.optimizers.Adam(0.01, beta_1=0.875, beta_2=0.96875, epsilon=1e-7), params, grads)
    ours = run(Adan(0.01, beta_1=0.875, beta_2=0.0, beta_3=0.96875, epsilon=1e-7), params, grads)
    assert moved(params, expected) > 0.05
    assert_close(ours, expected, 1e-6)


def test_adan_first_step_takes_the_gradient_difference_as_zero():
    params, grads = problem(seed=4, steps=1)
    optimizer = Adan(2**-5, beta_1=0.875, beta_2=0.75, beta_3=0.9375)
    run(optimizer, params, grads)
    for g, v, n, previous in zip(grads[0], optimizer._v, optimizer._n, optimizer._previous_gradients):
        np.testing.assert_array_equal(np.array(v), 0.0)
        np.testing.assert_allclose(np.array(n), 0.0625 * g.astype(np.float64) ** 2, rtol=1e-6)
        np.testing.assert_array_equal(np.array(previous), g)


def test_adan_weight_decay_is_the_proximal_form():
    # With zero gradients the step is 0 and only the decay acts: w_k = w_0 / (1 + lr wd)^k
    # (Keras's form would give w_0 (1 - lr wd)^k).
    params = [np.full((3,), 2.0, np.float32)]
    optimizer = Adan(0.5, weight_decay=0.5)
    weights = run(optimizer, params, [[np.zeros(3, np.float32)]] * 4)
    np.testing.assert_allclose(weights[0], 2.0 / 1.25**4, rtol=1e-6)


def test_adan_honours_exclude_from_weight_decay():
    params, grads = problem(seed=5)
    optimizer = Adan(2**-5, weight_decay=0.5)
    variables = [keras.Variable(p, name=f"w{i}") for i, p in enumerate(params)]
    optimizer.exclude_from_weight_decay(var_names=["w1"])
    optimizer.build(variables)
    for step_grads in grads:
        optimizer.apply([tf.constant(g) for g in step_grads], variables)
    decayed = reference.adan(params, grads, learning_rate=2**-5, weight_decay=0.5)
    plain = reference.adan(params, grads, learning_rate=2**-5)
    assert_close([v.numpy() for v in variables], [decayed[0], plain[1], decayed[2]])


# MADGRAD


@pytest.mark.parametrize("decoupled", [True, False])
def test_madgrad_weight_decay_forms_match_the_reference(decoupled):
    params, grads = problem(seed=6)
    options = {"learning_rate": 2**-5, "momentum": 0.875, "epsilon": 2**-20, "weight_decay": 0.5,
               "decoupled_weight_decay": decoupled}
    ours = run(MADGRAD(**options), params, grads)
    assert_close(ours, reference.madgrad(params, grads, **options))
    other = reference.madgrad(params, grads, **{**options, "decoupled_weight_decay": not decoupled})
    assert moved(ours, other) > 1e-4, "the two decay forms must differ, or the test proves nothing"


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_madgrad_decoupled_decay_is_the_authors_after_the_step_and_acts_without_momentum(momentum):
    # Keras's decay before the step is scaled by 1 - c and, without momentum (x = z), lost.
    params, grads = problem(seed=13)
    options = {"learning_rate": 2**-5, "momentum": momentum, "epsilon": 2**-20}
    decayed = run(MADGRAD(weight_decay=0.5, **options), params, grads)
    assert_close(decayed, reference.madgrad(params, grads, weight_decay=0.5, **options))
    assert moved(decayed, run(MADGRAD(**options), params, grads)) > 1e-3, "the decay must act"


@pytest.mark.parametrize("decoupled", [True, False])
def test_madgrad_honours_exclude_from_weight_decay(decoupled):
    params, grads = problem(seed=15)
    options = {"learning_rate": 2**-5, "momentum": 0.875, "epsilon": 2**-20}
    optimizer = MADGRAD(weight_decay=0.5, decoupled_weight_decay=decoupled, **options)
    variables = [keras.Variable(p, name=f"w{i}") for i, p in enumerate(params)]
    optimizer.exclude_from_weight_decay(var_names=["w1"])
    optimizer.build(variables)
    for step_grads in grads:
        optimizer.apply([tf.constant(g) for g in step_grads], variables)
    decayed = reference.madgrad(params, grads, weight_decay=0.5, decoupled_weight_decay=decoupled, **options)
    plain = reference.madgrad(params, grads, **options)
    assert_close([v.numpy() for v in variables], [decayed[0], plain[1], decayed[2]])


def test_madgrad_without_momentum_is_dual_averaging_and_keeps_its_start():
    params, grads = problem(seed=7)
    optimizer = MADGRAD(2**-4, momentum=0.0, epsilon=0.0)
    ours = run(optimizer, params, grads)
    assert_close(ours, reference.madgrad(params, grads, learning_rate=2**-4, momentum=0.0, epsilon=0.0))
    for x0, p in zip(optimizer._x0, params):
        np.testing.assert_array_equal(np.array(x0), p)
    # x_k = x_0 - s_k / nu_k^(1/3) exactly, from the slots
    for x, x0, s, nu in zip(ours, params, optimizer._s, optimizer._nu):
        np.testing.assert_allclose(x, x0 - np.array(s) / np.cbrt(np.array(nu, np.float64)), rtol=1e-5, atol=1e-6)


def test_madgrad_with_zero_epsilon_and_zero_gradients_stays_finite():
    params = [np.ones((2,), np.float32)]
    weights = run(MADGRAD(0.1, epsilon=0.0), params, [[np.array([0.0, 1.0], np.float32)]] * 3)
    assert np.all(np.isfinite(weights[0])) and weights[0][0] == 1.0 and weights[0][1] < 1.0


def test_madgrad_copies_its_starting_point_once_inside_fit():
    # Without a strategy Keras builds the optimizer while tracing the train step.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=MADGRAD(0.05), loss="mse")
    start = [w.copy() for w in model.get_weights()]
    model.fit(np.ones((16, 3), np.float32), np.zeros((16, 2), np.float32), batch_size=4, verbose=0)
    for x0, w in zip(model.optimizer._x0, start):
        np.testing.assert_array_equal(np.array(x0), w)
    assert moved(start, model.get_weights()) > 1e-3


# Prodigy

PRODIGY = {"beta_1": 0.875, "beta_2": 0.96875, "beta_3": 0.984375, "epsilon": 2**-20, "d0": 2**-8}


def d_after_each_step(optimizer):
    return float(np.array(optimizer.d))


@pytest.mark.parametrize(
    "options",
    [{}, {"growth_rate": 1.0625}, {"safeguard_warmup": True, "learning_rate": 0.5}, {"bias_correction": True},
     {"weight_decay": 0.25, "decoupled_weight_decay": False}, {"d_coef": 0.5, "weight_decay": 0.125}],
    ids=["default", "growth_rate", "safeguard_warmup", "bias_correction", "coupled_decay", "d_coef_decay"],
)
def test_prodigy_d_estimate_follows_the_reference_one_step_behind(options):
    params, grads = problem(seed=8, mean=1.0)
    options = {**PRODIGY, **options}
    ours, ds = run(Prodigy(**options), params, grads, every_step=d_after_each_step)
    expected, d_history = reference.prodigy(params, grads, return_d=True, **options)
    # After step k the slot holds d_k, the d that step used; d_{k+1} waits for the next apply.
    np.testing.assert_allclose(ds, d_history[:STEPS], rtol=2e-5)
    assert d_history[STEPS - 1] > 1.25 * PRODIGY["d0"], "d must grow, or the estimate is not exercised"
    assert_close(ours, expected, 1e-5)


def test_prodigy_growth_rate_bounds_the_growth_of_d():
    params, grads = problem(seed=8, mean=1.0)
    _, ds = run(Prodigy(growth_rate=1.0625, **PRODIGY), params, grads, every_step=d_after_each_step)
    changes = np.array(ds[1:]) / np.array(ds[:-1])
    jumps = np.flatnonzero(changes > 1.0)
    assert len(jumps) >= 2
    # the first move away from d0 is unbounded (the authors' rule); later ones grow by at most growth_rate
    np.testing.assert_array_less(changes[jumps[1:]], 1.0625 * (1 + 1e-6))


def test_prodigy_with_d_fixed_at_d0_is_adam():
    # d_coef so small that d_hat never exceeds d0: the step is Adam's with lr d0.
    params, grads = problem(seed=9)
    optimizer = Prodigy(1.0, beta_1=0.875, beta_2=0.96875, epsilon=1e-7, d0=2**-6, d_coef=2**-100,
                        bias_correction=True)  # fmt: skip
    ours = run(optimizer, params, grads)
    expected = run(keras.optimizers.Adam(2**-6, beta_1=0.875, beta_2=0.96875, epsilon=1e-7), params, grads)
    assert float(np.array(optimizer.d)) == 2**-6
    assert moved(params, expected) > 0.05
    assert_close(ours, expected, 1e-6)


def test_prodigy_steps_with_zero_learning_rate_change_nothing():
    params, grads = problem(seed=10, mean=1.0, steps=8)
    rates = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0]
    optimizer = Prodigy(**PRODIGY)
    variables = [keras.Variable(p) for p in params]
    optimizer.build(variables)
    for rate, step_grads in zip(rates, grads):
        optimizer.learning_rate = rate
        optimizer.apply([tf.constant(g) for g in step_grads], variables)
    expected = reference.prodigy(params, grads, **{**PRODIGY, "learning_rate": rates})
    assert_close([v.numpy() for v in variables], expected, 1e-5)


def test_prodigy_finalises_d_when_the_first_variable_has_no_gradient():
    params, grads = problem(seed=11, mean=1.0)
    without_first = [[None, *step[1:]] for step in grads]
    optimizer = Prodigy(**PRODIGY)
    ours, ds = run(optimizer, params, without_first, every_step=d_after_each_step)
    expected, d_history = reference.prodigy(params[1:], [step[1:] for step in grads], return_d=True, **PRODIGY)
    np.testing.assert_array_equal(ours[0], params[0])
    assert_close(ours[1:], expected, 1e-5)
    np.testing.assert_allclose(ds, d_history[:STEPS], rtol=2e-5)


def regression_model():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=Prodigy(d0=2**-8), loss="mse")
    return model


def test_prodigy_d_is_identical_on_every_replica_and_equals_one_device():
    rng = np.random.default_rng(12)
    inputs = rng.normal(size=(64, 6)).astype(np.float32)
    targets = (inputs @ rng.normal(size=(6, 1)) + 1.0).astype(np.float32)
    results = []
    for replicas in (None, 4):
        strategy = tf.distribute.get_strategy() if replicas is None else get_strategy("mirrored", cpu_replicas=replicas)
        keras.utils.set_random_seed(3)
        with strategy.scope():
            model = regression_model()
        model.fit(inputs, targets, batch_size=16, shuffle=False, verbose=0)
        local = [float(x) for x in strategy.experimental_local_results(model.optimizer.d.value)]
        assert len(local) == (replicas or 1) and len(set(local)) == 1, f"d differs between replicas: {local}"
        results.append((local[0], model.get_weights()))
    (d_single, weights_single), (d_mirrored, weights_mirrored) = results
    assert d_single > 2**-8, "d must have grown, or the test proves nothing"
    assert d_mirrored == pytest.approx(d_single, rel=1e-5)
    for a, b in zip(weights_single, weights_mirrored):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_prodigy_keeps_its_state_in_float32_for_16_bit_variables(dtype):
    optimizer = Prodigy()
    variable = keras.Variable(np.linspace(-1, 1, 6), dtype=dtype)
    optimizer.build([variable])
    for _ in range(3):
        optimizer.apply([tf.cast(tf.fill((6,), 0.5), dtype)], [variable])
    assert variable.dtype == dtype
    assert all(slot.dtype == "float32" for slot in (*optimizer._m, *optimizer._v, *optimizer._s, *optimizer._x0))
    assert np.all(np.isfinite(np.array(optimizer._m[0]))) and np.any(np.array(optimizer._v[0]) > 0)


# Arguments and serialization


@pytest.mark.parametrize(
    "make, argument, value",
    [
        (Adan, "beta_1", 1.0), (Adan, "beta_2", -0.1), (Adan, "beta_3", "0.9"), (Adan, "epsilon", -1.0),
        (Adan, "weight_decay", -0.5),
        (AdEMAMix, "beta_1", 1.5), (AdEMAMix, "beta_2", 1.0), (AdEMAMix, "beta_3", -0.5), (AdEMAMix, "alpha", -1.0),
        (AdEMAMix, "alpha_beta3_warmup_steps", 0), (AdEMAMix, "alpha_beta3_warmup_steps", 2.5),
        (AdEMAMix, "epsilon", True),
        (MADGRAD, "momentum", 1.0), (MADGRAD, "epsilon", -1e-6), (MADGRAD, "weight_decay", -0.1),
        (MADGRAD, "decoupled_weight_decay", "yes"),
        (Prodigy, "beta_1", 1.0), (Prodigy, "beta_2", -0.5), (Prodigy, "beta_3", 1.0), (Prodigy, "epsilon", -1.0),
        (Prodigy, "d0", 0.0), (Prodigy, "d_coef", -1.0), (Prodigy, "growth_rate", 1.0),
        (Prodigy, "safeguard_warmup", 1), (Prodigy, "bias_correction", None), (Prodigy, "weight_decay", -0.1),
        (Prodigy, "decoupled_weight_decay", 0),
    ],
)  # fmt: skip
def test_bad_hyperparameters_raise_an_error_naming_them(make, argument, value):
    with pytest.raises(ValueError, match=rf"{argument} must .*received: {value!r}"):
        make(**{argument: value})


def test_ademamix_warmup_needs_a_positive_beta_1():
    AdEMAMix(beta_1=0.0)
    with pytest.raises(ValueError, match=r"beta_1 must be a number in \(0, 1\), received: 0.0"):
        AdEMAMix(beta_1=0.0, alpha_beta3_warmup_steps=10)


@pytest.mark.parametrize(
    "optimizer",
    [
        Adan(0.002, beta_1=0.9, beta_2=0.8, beta_3=0.95, epsilon=1e-6, weight_decay=0.02, clipnorm=1.0),
        AdEMAMix(0.003, beta_3=0.999, alpha=8.0, alpha_beta3_warmup_steps=500, weight_decay=0.1),
        MADGRAD(0.02, momentum=0.5, epsilon=0.0, weight_decay=0.01, decoupled_weight_decay=False),
        MADGRAD(0.02, weight_decay=0.01),
        Prodigy(0.5, beta_3=0.99, d0=1e-5, d_coef=0.5, growth_rate=1.02, safeguard_warmup=True, bias_correction=True,
                weight_decay=0.01, decoupled_weight_decay=False),
        Prodigy(),
    ],
    ids=["adan", "ademamix", "madgrad_coupled", "madgrad_decoupled", "prodigy", "prodigy_defaults"],
)
def test_get_config_round_trips(optimizer):
    config = optimizer.get_config()
    rebuilt = type(optimizer).from_config(config)
    assert rebuilt.get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"].startswith("lepton_keras>")
    again = keras.optimizers.deserialize(serialized)
    assert type(again) is type(optimizer) and again.get_config() == config


def test_weight_decay_reads_back_in_every_form():
    assert Adan(weight_decay=0.5).get_config()["weight_decay"] == 0.5
    for decoupled in (True, False):  # MADGRAD applies both forms itself, Keras's decay stays off
        madgrad = MADGRAD(weight_decay=0.5, decoupled_weight_decay=decoupled)
        assert madgrad.weight_decay is None and madgrad.get_config()["weight_decay"] == 0.5
    assert Prodigy(weight_decay=0.5).get_config()["weight_decay"] == 0.5
    assert math.isinf(Prodigy().get_config()["growth_rate"])
