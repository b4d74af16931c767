"""The optimizer wrappers (Lookahead, averaging, accumulation, AGC, centralization, clipping) against
float64 references written from their papers, their limit cases, strategies, saving and precision."""

import os
import re
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.callbacks.weight_averaging import AverageWeightsForEvaluation
from lepton_keras.distribute import get_strategy
from lepton_keras.optimizers.adaptive_gradient_clipping import AdaptiveGradientClipping, adaptive_clip
from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation
from lepton_keras.optimizers.gradient_centralization import GradientCentralization, centralize_gradient
from lepton_keras.optimizers.gradient_clipping import GradientClipping, clip_gradients
from lepton_keras.optimizers.lookahead import Lookahead
from lepton_keras.optimizers.registry import get
from lepton_keras.optimizers.weight_averaging import (
    ExponentialMovingAverage,
    StochasticWeightAveraging,
    recompute_batch_norm_statistics,
)
from tests.cases_wrappers import dense_model, regression_data
from tests.harness import TrainingCase, max_difference, run_case, run_case_on_workers
from tests.optimizer_specs_wrappers import SPECS
from tests.reference import optimizers_wrappers as reference

SHAPES = [(3,), (4, 5), (2, 3, 4)]
STEPS = 15
STRATEGY_TOLERANCE = 1e-5


def random_problem(seed=0, steps=STEPS, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(steps)]
    return params, grads


def run_keras(optimizer, params, grads):
    """Applies `optimizer` eagerly to float32 variables; returns the variables."""
    variables = [keras.Variable(np.float32(p), name=f"v{i}") for i, p in enumerate(params)]
    for step_grads in grads:
        optimizer.apply([tf.constant(np.float32(g)) for g in step_grads], variables)
    return variables


def assert_close(actual, expected, tolerance):
    for a, e in zip(actual, expected):
        a = keras.ops.convert_to_numpy(a).astype(np.float64)
        assert np.max(np.abs(a - e) / np.maximum(1.0, np.abs(e))) < tolerance


# --- reference match (the shared table runs more; this is each row's own check) -----------


@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_matches_the_float64_reference(spec, decay):
    options = {**spec.options, **(spec.decay_options if decay else {})}
    params, grads = random_problem(seed=1)
    variables = run_keras(spec.make(**options), params, grads)
    assert_close(variables, spec.reference(params, grads, **options), spec.tolerance)


def test_averages_match_the_reference():
    params, grads = random_problem(seed=2)
    swa = StochasticWeightAveraging(keras.optimizers.SGD(0.125, momentum=0.5), start_step=3, average_period=4)
    expected = reference.Swa(reference.Sgd(0.125, 0.5), 3, 4)
    run_keras(swa, params, grads)
    reference.run(expected, params, grads)
    assert swa.average_count == len(expected.snapshots) == 4  # updates 3, 7, 11, 15
    assert_close(swa._averages, expected.average, 1e-6)

    for use_warmup in (False, True):
        adam = keras.optimizers.Adam(0.0625, beta_1=0.875, beta_2=1 - 2**-8)
        ema = ExponentialMovingAverage(adam, decay=0.875, start_step=4, use_warmup=use_warmup)
        expected = reference.Ema(reference.Adam(0.0625, 0.875, 1 - 2**-8), 0.875, 4, use_warmup)
        run_keras(ema, params, grads)
        reference.run(expected, params, grads)
        assert ema.average_count == STEPS - 3
        assert_close(ema._averages, expected.average, 1e-6)


def test_accumulated_averages_count_updates_not_micro_batches():
    params, grads = random_problem(seed=3, steps=12)
    inner = GradientAccumulation(keras.optimizers.SGD(0.125), steps=3)
    swa = StochasticWeightAveraging(inner, start_step=1, average_period=2)
    expected = reference.Swa(reference.Accumulation(reference.Sgd(0.125), 3), 1, 2)
    run_keras(swa, params, grads)
    reference.run(expected, params, grads)
    assert int(swa.iterations) == 12 and int(swa.innermost_optimizer.iterations) == 4
    assert swa.average_count == 2  # updates 1 and 3
    assert_close(swa._averages, expected.average, 1e-6)


def test_lookahead_around_accumulation_synchronises_every_k_updates():
    params, grads = random_problem(seed=4, steps=12)
    optimizer = Lookahead(GradientAccumulation(keras.optimizers.SGD(0.125, momentum=0.5), steps=2), sync_period=2,
                          slow_step_size=0.5)
    variables = run_keras(optimizer, params, grads)
    expected = reference.Lookahead(reference.Accumulation(reference.Sgd(0.125, 0.5), 2), 2, 0.5)
    assert_close(variables, reference.run(expected, params, grads), 1e-6)


def test_agc_units_and_excluded_layers():
    rng = np.random.default_rng(5)
    for shape in [(), (3,), (4, 5), (3, 3, 2, 4)]:
        w, g = rng.normal(size=shape), 3 * rng.normal(size=shape)
        clipped = adaptive_clip(np.float32(g), np.float32(w), clipping=0.25, epsilon=1e-3)
        expected = g * np.minimum(1.0, 0.25 * np.maximum(reference.unit_norms(w), 1e-3) / reference.unit_norms(g))
        np.testing.assert_allclose(clipped, expected, rtol=1e-5, atol=1e-7)
    # Zero weights: the gradient is clipped to lambda * epsilon, so they can move.
    np.testing.assert_allclose(np.linalg.norm(adaptive_clip(np.ones(4, np.float32), np.zeros(4, np.float32),
                                                            clipping=0.5, epsilon=0.25)), 0.125, rtol=1e-6)
    model = dense_model("sgd", {"learning_rate": 0.1})
    optimizer = AdaptiveGradientClipping(keras.optimizers.SGD(0.1), clipping=1e-4, exclude=["head"])
    assert [optimizer.is_excluded(v) for v in model.trainable_variables] == [False, False, True, True]
    gradients = [tf.ones_like(v) * 100.0 for v in model.trainable_variables]
    out = optimizer.transform_gradients(gradients, model.trainable_variables)
    np.testing.assert_array_equal(out[2], gradients[2])
    assert float(tf.reduce_max(tf.abs(out[0]))) < 1.0


def test_centralization_of_dense_and_conv_kernels():
    rng = np.random.default_rng(6)
    for shape in [(4, 5), (3, 3, 2, 4)]:
        g = rng.normal(size=shape)
        out = keras.ops.convert_to_numpy(centralize_gradient(np.float32(g)))
        np.testing.assert_allclose(out, g - g.mean(axis=tuple(range(len(shape) - 1)), keepdims=True), atol=1e-6)
        np.testing.assert_allclose(out.sum(axis=tuple(range(len(shape) - 1))), 0.0, atol=1e-5)
    bias = tf.constant([1.0, 2.0, 6.0])
    kernel = tf.ones((2, 3))
    variables = [keras.Variable(np.zeros((2, 3), np.float32)), keras.Variable(np.zeros(3, np.float32))]
    kept = GradientCentralization("sgd").transform_gradients([kernel, bias], variables)
    np.testing.assert_array_equal(kept[1], bias)
    np.testing.assert_array_equal(kept[0], np.zeros((2, 3)))
    centred = GradientCentralization("sgd", exclude_rank_one=False).transform_gradients([kernel, bias], variables)
    np.testing.assert_allclose(centred[1], [-2.0, -1.0, 3.0])


# --- limit cases ---------------------------------------------------------------------------


def keras_inner(kind):
    return keras.optimizers.SGD(0.125, momentum=0.5) if kind == "sgd" else keras.optimizers.Adam(0.0625)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("sync_period", [1, 4])
def test_lookahead_with_slow_step_one_is_the_inner_optimizer(kind, sync_period):
    params, grads = random_problem(seed=7)
    wrapped = run_keras(Lookahead(keras_inner(kind), sync_period=sync_period, slow_step_size=1.0), params, grads)
    plain = run_keras(keras_inner(kind), params, grads)
    for a, b in zip(wrapped, plain):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_accumulation_of_one_step_is_the_inner_optimizer(kind):
    params, grads = random_problem(seed=8)
    wrapped = run_keras(GradientAccumulation(keras_inner(kind), steps=1), params, grads)
    plain = run_keras(keras_inner(kind), params, grads)
    for a, b in zip(wrapped, plain):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def fit(optimizer, batch_size, rows=32, seed=0, epochs=1, **compile_options):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse", **compile_options)
    x, y = regression_data(rows, seed)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, history


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_two_micro_batches_of_8_are_one_batch_of_16(kind):
    accumulated, _ = fit(GradientAccumulation(keras_inner(kind), steps=2), batch_size=8)
    plain, _ = fit(keras_inner(kind), batch_size=16)
    assert int(accumulated.optimizer.iterations) == 4
    assert int(accumulated.optimizer.inner_optimizer.iterations) == int(plain.optimizer.iterations) == 2
    for a, b in zip(accumulated.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_inner_schedule_sees_updates():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.125, 0.0])  # nothing after update 1
    model, _ = fit(GradientAccumulation(keras.optimizers.SGD(schedule), steps=2), batch_size=8, rows=16)
    once, _ = fit(keras.optimizers.SGD(0.125), batch_size=16, rows=16)
    for a, b in zip(model.get_weights(), once.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


# --- clipping (the lead's GradientClipping) -----------------------------------------------


def test_clip_gradients_matches_numpy():
    rng = np.random.default_rng(9)
    grads = [rng.normal(size=s) * 3 for s in SHAPES]
    by_value = clip_gradients([np.float32(g) for g in grads], value=0.5)
    for out, g in zip(by_value, grads):
        np.testing.assert_allclose(out, np.clip(g, -0.5, 0.5), rtol=1e-6)
    by_norm = clip_gradients([np.float32(g) for g in grads], norm=1.5)
    for out, g in zip(by_norm, grads):
        np.testing.assert_allclose(out, g * min(1.0, 1.5 / np.linalg.norm(g)), rtol=1e-6)
    total = np.sqrt(sum(np.sum(g * g) for g in grads))
    by_global = clip_gradients([np.float32(g) for g in grads], global_norm=2.0)
    for out, g in zip(by_global, grads):
        np.testing.assert_allclose(out, g * 2.0 / total, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(sum(np.sum(np.square(o)) for o in by_global)), 2.0, rtol=1e-6)


def test_clipping_with_a_huge_threshold_changes_nothing():
    params, grads = random_problem(seed=10)
    for options in ({"global_norm": 1e9}, {"norm": 1e9}, {"value": 1e9}):
        clipped = run_keras(GradientClipping(keras_inner("adam"), **options), params, grads)
        plain = run_keras(keras_inner("adam"), params, grads)
        for a, b in zip(clipped, plain):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def probe_case(optimizer, options, steps=6):
    return TrainingCase("tests.cases_wrappers:dense_model", "tests.cases_wrappers:regression_data", steps=steps,
                        global_batch_size=16, model_options={"optimizer": optimizer, "options": options})


def test_global_norm_clipping_is_the_same_on_1_2_and_4_replicas_unlike_keras():
    case = probe_case("clipping_adam", {"learning_rate": 0.01, "global_norm": 0.1})
    single = run_case(case)
    assert max_difference(single, run_case(case, replicas=2)) < STRATEGY_TOLERANCE
    assert max_difference(single, run_case(case, replicas=4)) < STRATEGY_TOLERANCE
    # Keras's global_clipnorm clips each replica's share before the sum: measured 0.026 away
    # after 6 steps (Keras 3.15). If this assertion fails, Keras has fixed it.
    keras_case = probe_case("adam", {"learning_rate": 0.01, "global_clipnorm": 0.1})
    assert max_difference(run_case(keras_case), run_case(keras_case, replicas=2)) > 1e-3


@pytest.mark.parametrize("optimizer", ["lookahead_accumulation_clipping_adam", "ema_agc_centralization_sgd"])
def test_compositions_are_the_same_on_1_and_2_replicas(optimizer):
    options = {"learning_rate": 0.0625, "sync_period": 2, "steps": 2, "global_norm": 0.5}
    if optimizer.startswith("ema"):
        options = {"learning_rate": 0.0625, "momentum": 0.5, "decay": 0.5, "clipping": 0.0625}
    # The shared table checks each row on 1, 2 and 4 replicas; here the nesting on 2.
    case = probe_case(optimizer, options, steps=7)
    assert max_difference(run_case(case), run_case(case, replicas=2)) < STRATEGY_TOLERANCE


@pytest.mark.multiworker
def test_lookahead_accumulation_and_clipping_on_two_workers():
    case = probe_case("lookahead_accumulation_clipping_sgd",
                      {"learning_rate": 0.0625, "momentum": 0.5, "sync_period": 2, "steps": 2, "global_norm": 0.5},
                      steps=7)
    single = run_case(case)
    for worker in run_case_on_workers(case):
        assert max_difference(single, worker) < STRATEGY_TOLERANCE


# --- using the average ---------------------------------------------------------------------


def trained_ema_model(strategy=None):
    with (strategy or tf.distribute.get_strategy()).scope():
        model = dense_model("ema_sgd", {"learning_rate": 0.0625, "decay": 0.5})
    x, y = regression_data(64, 0)
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    return model, x, y


def every_copy(strategy, variables):
    """The values of each device's copy of each variable."""
    return [[keras.ops.convert_to_numpy(c) for c in strategy.experimental_local_results(v.value)] for v in variables]


@pytest.mark.parametrize("replicas", [None, 2])
def test_swap_average_weights_uses_the_average_and_restores_bitwise(replicas):
    strategy = tf.distribute.get_strategy() if replicas is None else get_strategy("mirrored", cpu_replicas=replicas)
    model, x, y = trained_ema_model(strategy)
    optimizer = model.optimizer
    training = every_copy(strategy, model.trainable_variables)
    averages = [keras.ops.convert_to_numpy(a) for a in optimizer._averages]
    assert not any(np.array_equal(a, w[0]) for a, w in zip(averages, training))
    with optimizer.swap_average_weights(model):
        for average, copies in zip(averages, every_copy(strategy, model.trainable_variables)):
            for copy in copies:
                np.testing.assert_array_equal(copy, average)
        model.evaluate(x, y, verbose=0)
    for before, after in zip(training, every_copy(strategy, model.trainable_variables)):
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
    optimizer.assign_average_weights(model.trainable_variables)
    for average, copies in zip(averages, every_copy(strategy, model.trainable_variables)):
        for copy in copies:
            np.testing.assert_array_equal(copy, average)


def test_before_the_first_average_swapping_changes_nothing():
    optimizer = StochasticWeightAveraging(keras.optimizers.SGD(0.1), start_step=100)
    model = dense_model("sgd")
    model.compile(optimizer=optimizer, loss="mse")
    x, y = regression_data(32, 0)
    model.fit(x, y, batch_size=16, verbose=0)
    weights = model.get_weights()
    with optimizer.swap_average_weights(model):
        for a, b in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not built"):
        with StochasticWeightAveraging("sgd").swap_average_weights(model):
            pass


def test_the_callback_validates_with_the_average_and_can_assign_it():
    model, x, y = trained_ema_model()
    with model.optimizer.swap_average_weights(model):
        expected_loss = model.evaluate(x, y, verbose=0)
    training = model.get_weights()
    callback = AverageWeightsForEvaluation()
    callback.set_model(model)
    callback.on_test_begin()
    assert abs(model.evaluate(x, y, verbose=0) - expected_loss) < 1e-7
    callback.on_test_end()
    for a, b in zip(training, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = model.fit(x, y, batch_size=16, validation_data=(x, y), shuffle=False, verbose=0,
                        callbacks=[AverageWeightsForEvaluation(assign_at_end=True)])
    averages = [keras.ops.convert_to_numpy(a) for a in model.optimizer._averages]
    for a, w in zip(averages, model.get_weights()):
        np.testing.assert_array_equal(a, w)
    assert abs(history.history["val_loss"][-1] - model.evaluate(x, y, verbose=0)) < 1e-5
    assert AverageWeightsForEvaluation(assign_at_end=True).get_config() == {"assign_at_end": True}
    with pytest.raises(ValueError, match="ExponentialMovingAverage"):
        AverageWeightsForEvaluation(keras.optimizers.SGD())


@pytest.mark.parametrize("replicas", [None, 2])
def test_recompute_batch_norm_statistics_is_the_mean_of_the_batch_statistics(replicas):
    strategy = tf.distribute.get_strategy() if replicas is None else get_strategy("mirrored", cpu_replicas=replicas)
    with strategy.scope():
        model = dense_model("sgd", batch_norm=True)
    x, _ = regression_data(40, 11)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16)  # batches of 16, 16 and 8
    kernel, bias = (w.astype(np.float64) for w in model.layers[0].get_weights())
    hidden = np.tanh(x.astype(np.float64) @ kernel + bias)
    batches = [hidden[:16], hidden[16:32], hidden[32:]]
    batch_norm = model.layers[1]
    assert recompute_batch_norm_statistics(model, dataset) == 3
    np.testing.assert_allclose(batch_norm.moving_mean.numpy(), np.mean([b.mean(0) for b in batches], 0), atol=1e-6)
    np.testing.assert_allclose(batch_norm.moving_variance.numpy(), np.mean([b.var(0) for b in batches], 0), atol=1e-6)
    assert batch_norm.momentum == 0.99
    assert recompute_batch_norm_statistics(model, dataset.map(lambda b: (b, b)), steps=1) == 1
    np.testing.assert_allclose(batch_norm.moving_variance.numpy(), batches[0].var(0), atol=1e-6)
    assert recompute_batch_norm_statistics(dense_model("sgd"), dataset) == 0
    with pytest.raises(ValueError, match="steps must be an integer >= 1 or None, received: 0"):
        recompute_batch_norm_statistics(model, dataset, steps=0)


# --- saving ----------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer,options", [
    ("lookahead_accumulation_sgd", {"learning_rate": 0.0625, "momentum": 0.5, "sync_period": 2, "steps": 2}),
    ("swa_agc_adam", {"learning_rate": 0.0625, "start_step": 1, "clipping": 0.0625}),
    ("ema_centralization_clipping_adam", {"learning_rate": 0.0625, "decay": 0.5, "global_norm": 0.5}),
])
def test_saved_mid_training_and_resumed_equals_uninterrupted(optimizer, options):
    x, y = regression_data(6 * 8, 12)
    keras.utils.set_random_seed(0)
    uninterrupted = dense_model(optimizer, options)
    keras.utils.set_random_seed(0)
    first_half = dense_model(optimizer, options)
    uninterrupted.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    first_half.fit(x[:24], y[:24], batch_size=8, shuffle=False, verbose=0)  # 3 steps: mid-window, mid-period
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        first_half.save(path)
        resumed = keras.saving.load_model(path)
    assert type(resumed.optimizer) is type(first_half.optimizer)
    resumed.fit(x[24:], y[24:], batch_size=8, shuffle=False, verbose=0)
    for a, b in zip(uninterrupted.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-7)
    assert len(uninterrupted.optimizer.variables) == len(resumed.optimizer.variables)
    for a, b in zip(uninterrupted.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-7)


ALL_WRAPPERS = [
    Lookahead(keras.optimizers.Adam(0.25), sync_period=3, slow_step_size=0.25),
    StochasticWeightAveraging(keras.optimizers.SGD(0.5), start_step=7, average_period=3),
    ExponentialMovingAverage(keras.optimizers.SGD(0.5), decay=0.75, start_step=2, use_warmup=True),
    GradientAccumulation(keras.optimizers.SGD(0.5), steps=3),
    AdaptiveGradientClipping(keras.optimizers.SGD(0.5), clipping=0.125, epsilon=0.5, exclude=["head"]),
    GradientCentralization(keras.optimizers.SGD(0.5), exclude_rank_one=False),
    Lookahead(GradientClipping(keras.optimizers.Adam(0.25), global_norm=2.0)),
]


@pytest.mark.parametrize("optimizer", ALL_WRAPPERS, ids=lambda o: type(o).__name__)
def test_config_round_trips(optimizer):
    config = keras.optimizers.serialize(optimizer)
    restored = keras.optimizers.deserialize(config)
    assert type(restored) is type(optimizer)
    config, restored_config = optimizer.get_config(), restored.get_config()
    inner, restored_inner = config.pop("inner_optimizer"), restored_config.pop("inner_optimizer")
    assert restored_config == config
    assert restored_inner["config"] == inner["config"]


@pytest.mark.parametrize("name,cls", [
    ("lookahead_sgd", Lookahead), ("swa_sgd", StochasticWeightAveraging), ("ema_adam", ExponentialMovingAverage),
    ("accumulation_adam", GradientAccumulation), ("agc_sgd", AdaptiveGradientClipping),
    ("centralization_sgd", GradientCentralization),
])
def test_registry_names(name, cls):
    optimizer = get(name)
    assert type(optimizer) is cls
    assert type(optimizer.inner_optimizer).__name__.lower() == name.split("_")[1]


# --- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("make,message", [
    (lambda: Lookahead("sgd", sync_period=0), "sync_period must be an integer >= 1, received: 0"),
    (lambda: Lookahead("sgd", sync_period=2.5), "sync_period must be an integer >= 1, received: 2.5"),
    (lambda: Lookahead("sgd", slow_step_size=0.0), "slow_step_size must be a number in (0, 1], received: 0.0"),
    (lambda: Lookahead("sgd", slow_step_size=1.5), "slow_step_size must be a number in (0, 1], received: 1.5"),
    (lambda: GradientAccumulation("sgd", steps=0), "steps must be an integer >= 1, received: 0"),
    (lambda: GradientAccumulation("sgd", steps=True), "steps must be an integer >= 1, received: True"),
    (lambda: StochasticWeightAveraging("sgd", start_step=-1), "start_step must be an integer >= 0, received: -1"),
    (lambda: StochasticWeightAveraging("sgd", average_period=0), "average_period must be an integer >= 1, received: 0"),
    (lambda: ExponentialMovingAverage("sgd", decay=1.0), "decay must be a number in [0, 1), received: 1.0"),
    (lambda: ExponentialMovingAverage("sgd", use_warmup=1), "use_warmup must be True or False, received: 1"),
    (lambda: AdaptiveGradientClipping("sgd", clipping=0), "clipping must be a finite number > 0, received: 0"),
    (lambda: AdaptiveGradientClipping("sgd", epsilon=-1.0), "epsilon must be a finite number > 0, received: -1.0"),
    (lambda: AdaptiveGradientClipping("sgd", exclude="head"),
     "exclude must be a list or tuple of non-empty strings, received: 'head'"),
    (lambda: GradientCentralization("sgd", exclude_rank_one="yes"),
     "exclude_rank_one must be True or False, received: 'yes'"),
    (lambda: AverageWeightsForEvaluation(assign_at_end=1), "assign_at_end must be True or False, received: 1"),
])
def test_bad_arguments_name_the_argument_and_value(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


@pytest.mark.parametrize("option,value", [("clipnorm", 1.0), ("global_clipnorm", 1.0), ("clipvalue", 1.0),
                                          ("gradient_accumulation_steps", 2), ("use_ema", True)])
def test_an_inner_optimizer_with_per_replica_options_is_rejected(option, value):
    with pytest.raises(ValueError, match=f"{option}={value!r}"):
        Lookahead(keras.optimizers.SGD(0.1, **{option: value}))


# --- precision and compilation -------------------------------------------------------------


def test_inside_a_loss_scale_optimizer_under_mixed_float16_the_loss_drops():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inner = GradientAccumulation(AdaptiveGradientClipping(GradientCentralization(keras.optimizers.Adam(0.03)),
                                                              clipping=0.5), steps=2)
        optimizer = keras.optimizers.LossScaleOptimizer(ExponentialMovingAverage(Lookahead(inner, sync_period=2),
                                                                                 decay=0.5))
        model, history = fit(optimizer, batch_size=8, rows=64, epochs=8)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.layers[0].compute_dtype == "float16"
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    assert all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in optimizer.variables)
    # LossScaleOptimizer skips the steps whose scaled gradients overflow float16.
    assert 0 < int(optimizer.inner_optimizer.innermost_optimizer.iterations) <= 8 * 64 // 16


@pytest.mark.parametrize("name,options", [
    ("lookahead_accumulation_clipping_adam", {"learning_rate": 0.0625, "sync_period": 2, "steps": 2,
                                              "global_norm": 0.5}),
    ("ema_agc_centralization_sgd", {"learning_rate": 0.0625, "decay": 0.5, "clipping": 0.0625}),
    ("swa_sgd", {"learning_rate": 0.0625, "start_step": 2, "average_period": 2}),
])
def test_jit_compiled_equals_not_compiled(name, options):
    compiled, _ = fit(get(name, **options), batch_size=8, rows=48, jit_compile=True)
    plain, _ = fit(get(name, **options), batch_size=8, rows=48, jit_compile=False)
    for a, b in zip(compiled.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(compiled.optimizer.variables, plain.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6)


# --- one pass through a stack ------------------------------------------------------------------


def count_context_switches(monkeypatch, strategy):
    """Counts merge_call entries, call_for_each_replica entries and batched all-reduces (counting only)."""
    counts = {"merge_call": 0, "call_for_each_replica": 0, "batch_reduce_to": 0}

    def counted(name, method):
        def call(*args, **kwargs):
            counts[name] += 1
            return method(*args, **kwargs)
        return call

    monkeypatch.setattr(tf.distribute.ReplicaContext, "merge_call",
                        counted("merge_call", tf.distribute.ReplicaContext.merge_call))
    for name in ("call_for_each_replica", "batch_reduce_to"):
        monkeypatch.setattr(strategy.extended, name, counted(name, getattr(strategy.extended, name)))
    return counts


@pytest.mark.parametrize("make", [
    lambda: Lookahead(GradientClipping(keras.optimizers.Adam(0.0625), global_norm=0.5), sync_period=2),
    lambda: Lookahead(GradientAccumulation(GradientClipping(keras.optimizers.Adam(0.0625), global_norm=0.5)),
                      sync_period=2),
], ids=["lookahead_clipping_adam", "lookahead_accumulation_clipping_adam"])
def test_a_three_level_stack_enters_cross_replica_context_once_per_step(make, monkeypatch):
    strategy = get_strategy("mirrored", cpu_replicas=2)
    params, grads = random_problem(seed=13, steps=1)
    with strategy.scope():
        variables = [keras.Variable(np.float32(p)) for p in params]
        optimizer = make()
        optimizer.build(variables)

    @tf.function(autograph=False)
    def step(step_grads):
        # Each replica holds half of the global gradient (distinct tensors, as in training).
        strategy.run(lambda *gs: optimizer.apply([g / 2 for g in gs], variables), args=tuple(step_grads))

    counts = count_context_switches(monkeypatch, strategy)
    step([tf.constant(np.float32(g)) for g in grads[0]])  # traced once: the counts are one step's
    all_reduces = counts["batch_reduce_to"]
    assert all_reduces == 1, counts  # the gradients, summed across replicas once
    # Every replica thread calls merge_call for one entry into cross-replica context. On CPU devices
    # the all-reduce itself is one such entry; the update of the whole stack is the one other.
    assert counts["merge_call"] % strategy.num_replicas_in_sync == 0, counts
    assert counts["merge_call"] // strategy.num_replicas_in_sync - all_reduces == 1, counts
    assert counts["call_for_each_replica"] == 1, counts  # strategy.run's own; no level re-enters replica context
