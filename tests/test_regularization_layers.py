"""StochasticDepth, WeightNormalization and DropBlock2D against float64 references written from their papers."""

import copy
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import get_strategy
from lepton_keras.layers import DropBlock2D, StochasticDepth, WeightNormalization
from lepton_keras.layers import drop_block as drop_block_module
from lepton_keras.layers import stochastic_depth as stochastic_depth_module
from lepton_keras.layers import weight_normalization as weight_normalization_module
from tests.harness import TrainingCase, max_difference, run_case, run_case_on_workers
from tests.reference import regularization_layers as reference

STRATEGY_TOLERANCE = 1e-6  # data init alone: the statistics are summed in another order
TRAINING_TOLERANCE = 1e-5  # a few Adam steps, as tests/test_equivalence.py


def normal(*shape, seed=0, mean=0.0):
    return (np.random.default_rng(seed).normal(size=shape) + mean).astype(np.float32)


# StochasticDepth


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


# WeightNormalization

WRAPPED_LAYERS = {
    "dense": (lambda: keras.layers.Dense(4, activation="tanh"), (6, 5)),
    "dense_3d_input": (lambda: keras.layers.Dense(3), (4, 2, 5)),
    "conv1d_causal": (lambda: keras.layers.Conv1D(3, 2, padding="causal", activation="relu"), (4, 7, 2)),
    "conv2d": (lambda: keras.layers.Conv2D(3, 3, activation="tanh"), (4, 6, 6, 2)),
    "conv2d_channels_first": (lambda: keras.layers.Conv2D(3, 2, data_format="channels_first"), (4, 2, 5, 5)),
    "conv3d": (lambda: keras.layers.Conv3D(2, 2, strides=2), (3, 4, 4, 4, 2)),
}


@pytest.mark.parametrize("name", sorted(WRAPPED_LAYERS))
def test_weight_normalization_starts_as_the_wrapped_layer(name):
    make_layer, input_shape = WRAPPED_LAYERS[name]
    x = normal(*input_shape, seed=12)
    wrapped = WeightNormalization(make_layer())
    out = wrapped(x, training=False).numpy()
    plain = make_layer()
    plain(x)
    plain.set_weights(wrapped.layer.get_weights())
    np.testing.assert_allclose(out, plain(x), rtol=1e-5, atol=1e-6)  # g starts at ||v||: w = v
    assert not bool(wrapped.initialized.numpy())  # inference does not initialize


@pytest.mark.parametrize("name", sorted(WRAPPED_LAYERS))
def test_weight_normalization_computes_with_g_v_over_norm_v(name):
    make_layer, input_shape = WRAPPED_LAYERS[name]
    x = normal(*input_shape, seed=13)
    wrapped = WeightNormalization(make_layer(), data_init=False)
    wrapped(x)
    g = np.abs(normal(*wrapped.g.shape, seed=14)) + 0.5
    wrapped.g.assign(g)
    wrapped.layer.bias.assign(normal(*wrapped.layer.bias.shape, seed=15))
    plain = make_layer()
    plain(x)
    plain.set_weights([reference.weight_norm_kernel(wrapped.layer.kernel.numpy(), g), wrapped.layer.bias.numpy()])
    np.testing.assert_allclose(wrapped(x, training=True), plain(x), rtol=1e-5, atol=1e-5)


def test_weight_normalization_matches_the_numpy_forward():
    x, image = normal(6, 5, seed=16), normal(3, 6, 6, 2, seed=17)
    dense = WeightNormalization(keras.layers.Dense(4, activation="tanh", dtype="float64"), data_init=False)
    conv = WeightNormalization(keras.layers.Conv2D(3, 3, dtype="float64"), data_init=False)
    for layer, inputs, forward in ((dense, x, reference.dense), (conv, image, reference.conv2d_valid)):
        layer(inputs)
        g = np.abs(normal(*layer.g.shape, seed=18)) + 0.5
        bias = normal(*layer.layer.bias.shape, seed=19)
        layer.g.assign(g)
        layer.layer.bias.assign(bias)
        expected = forward(inputs, reference.weight_norm_kernel(layer.layer.kernel.numpy(), g), bias)
        if layer is dense:
            expected = np.tanh(expected)
        np.testing.assert_allclose(layer(inputs), expected, rtol=1e-12, atol=1e-12)


def preactivations(layer, x):
    """w . x + b of a wrapped layer, recomputed by the plain layer with w = g v / ||v||."""
    config = layer.layer.get_config()
    plain = type(layer.layer).from_config({**config, "activation": None, "name": "plain"})
    plain(x)
    kernel = reference.weight_norm_kernel(layer.layer.kernel.numpy(), layer.g.numpy())
    plain.set_weights([kernel, layer.layer.bias.numpy()])
    return plain(x).numpy().astype(np.float64)


def unit_projections(layer, x):
    """t = v . x / ||v||, the paper's pre-activations before the init."""
    config = layer.layer.get_config()
    plain = type(layer.layer).from_config({**config, "activation": None, "use_bias": False, "name": "unit"})
    plain(x)
    plain.set_weights([reference.weight_norm_kernel(layer.layer.kernel.numpy(), np.ones(layer.g.shape))])
    return plain(x).numpy()


@pytest.mark.parametrize("name", sorted(WRAPPED_LAYERS))
def test_data_init_gives_zero_mean_unit_variance_preactivations(name):
    make_layer, input_shape = WRAPPED_LAYERS[name]
    x = normal(*input_shape, seed=20, mean=1.5)
    layer = WeightNormalization(make_layer())
    layer(x)  # build
    channel_axis = 1 if getattr(layer.layer, "data_format", None) == "channels_first" else -1
    expected_g, expected_bias = reference.data_init(unit_projections(layer, x), channel_axis)
    out = layer(x, training=True).numpy()
    assert bool(layer.initialized.numpy())
    np.testing.assert_allclose(layer.g.numpy(), expected_g, rtol=1e-4)
    np.testing.assert_allclose(layer.layer.bias.numpy(), expected_bias, rtol=1e-4, atol=1e-5)
    z = np.moveaxis(preactivations(layer, x), channel_axis, -1).reshape(-1, layer.g.shape[0])
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.var(axis=0), 1.0, atol=1e-4)
    activation = layer.layer.activation  # the init call's output already uses the new g and bias
    np.testing.assert_allclose(out, activation(preactivations(layer, x)), atol=1e-4)


def test_data_init_without_bias_sets_the_variance():
    x = normal(64, 5, seed=21, mean=1.0)
    layer = WeightNormalization(keras.layers.Dense(3, use_bias=False))
    layer(x, training=True)
    kernel = reference.weight_norm_kernel(layer.layer.kernel.numpy(), layer.g.numpy())
    np.testing.assert_allclose(reference.dense(x, kernel).var(axis=0), 1.0, atol=1e-4)


def test_data_init_happens_once_eagerly_and_in_a_traced_function():
    first, second = normal(16, 5, seed=22, mean=1.0), normal(16, 5, seed=23, mean=-3.0)
    eager = WeightNormalization(keras.layers.Dense(3))
    eager(first)
    initial_kernel_and_bias = eager.layer.get_weights()
    eager(first, training=True)
    after_init = [w.copy() for w in eager.get_weights()]
    eager(second, training=True)
    for before, after in zip(after_init, eager.get_weights()):
        np.testing.assert_array_equal(before, after)

    traced = WeightNormalization(keras.layers.Dense(3))
    traced(first)
    traced.layer.set_weights(initial_kernel_and_bias)  # the same v and b as `eager` before its init
    call = tf.function(lambda x: traced(x, training=True))
    call(first)
    call(second)  # same trace: the init branch is skipped
    for expected, actual in zip(after_init, traced.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


def test_steps_after_the_init_leave_g_and_the_bias_untouched_under_mixed_precision():
    # The step function traced before the init keeps the init branch; later steps must not
    # write g or b back (a write would round them to float16 here).
    x = normal(16, 5, seed=37, mean=1.0)
    layer = WeightNormalization(keras.layers.Dense(3, dtype="mixed_float16"))
    layer(x)
    step = tf.function(lambda x: layer(x, training=True))
    step(x)
    assert bool(layer.initialized.numpy())
    precise = 1.0 + np.arange(3, dtype=np.float32) * np.float32(1e-4)  # not float16 numbers
    layer.g.assign(precise)
    layer.layer.bias.assign(-precise)
    step(normal(16, 5, seed=38))
    np.testing.assert_array_equal(layer.g.numpy(), precise)
    np.testing.assert_array_equal(layer.layer.bias.numpy(), -precise)


def test_gradients_reach_g_and_v_as_in_the_paper():
    x = np.random.default_rng(24).normal(size=(7, 5))
    upstream = np.random.default_rng(25).normal(size=(7, 3))  # dL/dy for L = sum(y * upstream)
    layer = WeightNormalization(keras.layers.Dense(3, dtype="float64"), data_init=False)
    layer(x)
    layer.g.assign(np.abs(np.random.default_rng(26).normal(size=3)) + 0.5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) * upstream)
    grad_g, grad_v, grad_b = tape.gradient(loss, [layer.g.value, layer.layer.kernel.value, layer.layer.bias.value])
    grad_w = x.T @ upstream
    expected_g, expected_v = reference.weight_norm_gradients(layer.layer.kernel.numpy(), layer.g.numpy(), grad_w)
    np.testing.assert_allclose(grad_g, expected_g, rtol=1e-12)
    np.testing.assert_allclose(grad_v, expected_v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_b, upstream.sum(axis=0), rtol=1e-12)


def test_gradients_reach_g_and_v_of_a_convolution():
    x = normal(2, 5, 5, 2, seed=27)
    layer = WeightNormalization(keras.layers.Conv2D(3, 3))
    layer(x, training=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, training=True)))
    grad_g, grad_v = tape.gradient(loss, [layer.g.value, layer.layer.kernel.value])
    kernel = tf.Variable(reference.weight_norm_kernel(layer.layer.kernel.numpy(), layer.g.numpy()), dtype="float32")
    with tf.GradientTape() as tape:  # dL/dw of the plain convolution with the same w
        loss = tf.reduce_sum(tf.square(tf.nn.conv2d(x, kernel, 1, "VALID") + layer.layer.bias))
    expected_g, expected_v = reference.weight_norm_gradients(
        layer.layer.kernel.numpy(), layer.g.numpy(), tape.gradient(loss, kernel).numpy()
    )
    assert np.all(np.abs(grad_g) > 0) and np.all(np.isfinite(grad_v))
    np.testing.assert_allclose(grad_g, expected_g, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_v, expected_v, rtol=1e-4, atol=1e-5)


# WeightNormalization (and StochasticDepth) under MirroredStrategy and two workers


def case(model_fn, steps):
    return TrainingCase(f"tests.cases_regularization:{model_fn}", "tests.cases_regularization:gaussian_images",
                        steps=steps, global_batch_size=16)  # fmt: skip


@functools.cache
def one_device_run(model_fn, steps):
    return run_case(case(model_fn, steps))


def initialized_weights(replicas):
    """The weights of `wn_cnn_init_only` after its one (init-only) step, with every replica's copy of each."""
    from tests.cases_regularization import gaussian_images, wn_cnn_init_only

    strategy = tf.distribute.get_strategy() if replicas is None else get_strategy("mirrored", cpu_replicas=replicas)
    x, y = gaussian_images(16, 0)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = wn_cnn_init_only()
    untrained = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    wrappers = [layer for layer in model.layers if isinstance(layer, WeightNormalization)]
    assert len(wrappers) == 2 and all(bool(layer.initialized.numpy()) for layer in wrappers)
    copies = [[np.array(c) for c in strategy.experimental_local_results(w.value)] for w in model.weights]
    return untrained, model.get_weights(), copies


def largest_difference(arrays, others):
    """max |a - b| / max(|a|, 1): absolute for values up to 1, relative above (g can reach a few units)."""
    return max(
        float(np.max(np.abs(a.astype(np.float64) - b) / np.maximum(np.abs(a), 1.0)))
        for a, b in zip(arrays, others, strict=True)
    )


@functools.cache
def initialized_on_one_device():
    return initialized_weights(None)


def test_the_data_init_changes_the_weights():
    # Guards the comparisons below: equal weights must not come from a run that did nothing.
    untrained, initialized, _ = initialized_on_one_device()
    assert largest_difference(untrained, initialized) > 1e-2


@pytest.mark.parametrize("replicas", [2, 4])
def test_data_init_under_mirrored_strategy_matches_one_device_on_every_replica(replicas):
    _, expected, _ = initialized_on_one_device()
    _, initialized, copies = initialized_weights(replicas)
    difference = largest_difference(expected, initialized)
    print(f"data init, MirroredStrategy x{replicas}: largest difference {difference:.3g}")
    assert difference < STRATEGY_TOLERANCE
    for variable_copies in copies:
        assert len(variable_copies) == replicas
        for replica_copy in variable_copies[1:]:
            np.testing.assert_array_equal(replica_copy, variable_copies[0])


def test_statistics_of_each_replica_s_own_share_would_differ(monkeypatch):
    # Shows the comparison above can fail: without the all-reduce, each replica initializes
    # from its own share of the batch (its copies then differ too).
    monkeypatch.setattr(weight_normalization_module, "global_sum", lambda value: value)
    _, expected, _ = initialized_on_one_device()
    _, initialized, copies = initialized_weights(2)
    difference = largest_difference(expected, initialized)
    print(f"data init from per-replica statistics, MirroredStrategy x2: largest difference {difference:.3g}")
    assert difference > 1e-2
    assert any(np.any(c[0] != c[1]) for c in copies)


@pytest.mark.parametrize("replicas", [2, 4])
def test_training_under_mirrored_strategy_matches_one_device(replicas):
    reference_run = one_device_run("wn_stochastic_depth_cnn_adam", 4)
    difference = max_difference(reference_run, run_case(case("wn_stochastic_depth_cnn_adam", 4), replicas))
    print(f"4 Adam steps, MirroredStrategy x{replicas}: largest difference {difference:.3g}")
    assert difference < TRAINING_TOLERANCE


@pytest.mark.multiworker
def test_two_workers_match_one_device_and_each_other():
    worker_0, worker_1 = run_case_on_workers(case("wn_stochastic_depth_cnn_adam", 4), workers=2)
    difference = max_difference(one_device_run("wn_stochastic_depth_cnn_adam", 4), worker_0)
    print(f"2 workers: largest difference {difference:.3g}")
    assert difference < TRAINING_TOLERANCE
    assert max_difference(worker_0, worker_1) == 0.0


def test_a_reloaded_model_is_not_initialized_again(tmp_path):
    first, second = normal(16, 5, seed=28, mean=1.0), normal(16, 5, seed=29, mean=-2.0)
    model = keras.Sequential([keras.Input((5,)), WeightNormalization(keras.layers.Dense(3))])
    model(first, training=True)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert bool(loaded.layers[0].initialized.numpy())
    loaded(second, training=True)
    for expected, actual in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(actual, expected)


# DropBlock2D


def dropped_mask(out):
    return out == 0.0


@pytest.mark.parametrize("rate, block_size", [(0.1, 7), (0.25, 3), (0.15, 1)])
def test_drop_block_drops_the_expected_fraction(rate, block_size):
    layer = DropBlock2D(rate, block_size, seed=3)
    x = np.ones((16, 48, 48, 8), np.float32)
    fractions = np.array([dropped_mask(layer(x, training=True).numpy()).mean() for _ in range(8)])
    expected = reference.expected_dropped_fraction(rate, block_size, 48, 48)
    standard_error = fractions.std(ddof=1) / np.sqrt(len(fractions))
    assert abs(fractions.mean() - expected) < 5 * standard_error + 1e-4, (fractions, expected)
    # Eq. (1) counts the pixels where blocks overlap twice, so the fraction is a little below the rate.
    assert 0.85 * rate < expected <= rate + 1e-12


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("block_size", [2, 3, 5])
def test_drop_block_drops_whole_blocks_and_renormalises(data_format, block_size):
    x = np.abs(normal(4, 20, 18, 3, seed=30)) + 0.1
    layer = DropBlock2D(0.2, block_size, seed=5, data_format=data_format)
    if data_format == "channels_first":
        out = np.transpose(layer(np.transpose(x, (0, 3, 1, 2)), training=True).numpy(), (0, 2, 3, 1))
    else:
        out = layer(x, training=True).numpy()
    dropped = dropped_mask(out)
    assert 0.05 < dropped.mean() < 0.4
    np.testing.assert_array_equal(reference.whole_block_cover(dropped, block_size), dropped)
    np.testing.assert_allclose(out, reference.drop_block(x, ~dropped), rtol=1e-5)


def test_drop_block_masks_follow_the_seed_and_differ_between_calls():
    x = np.ones((2, 16, 16, 2), np.float32)
    first, again, other = (DropBlock2D(0.3, 3, seed=seed) for seed in (1, 1, 2))
    masks = [dropped_mask(layer(x, training=True).numpy()) for layer in (first, again, other)]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert np.any(masks[0] != masks[2])
    assert np.any(masks[0] != dropped_mask(first(x, training=True).numpy()))


def test_drop_block_larger_than_the_map_is_clipped_to_the_whole_map():
    x = np.ones((64, 5, 5, 4), np.float32)
    dropped = dropped_mask(DropBlock2D(0.5, 7, seed=4)(x, training=True).numpy())
    per_map = dropped.mean(axis=(1, 2))
    assert np.all(np.isin(per_map, [0.0, 1.0])) and 0 < per_map.mean() < 1


@pytest.mark.parametrize("training, rate", [(False, 0.3), (None, 0.3), (True, 0.0)])
def test_drop_block_is_the_identity_at_inference_and_at_rate_zero(training, rate):
    x = normal(2, 9, 9, 3, seed=31)
    np.testing.assert_array_equal(DropBlock2D(rate, 3)(x, training=training), x)


@pytest.mark.parametrize("block_size", [1, 2, 3, 4])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_drop_block_math_matches_the_paper(block_size, data_format):
    assert drop_block_module.drop_block_gamma(0.1, block_size, 12.0, 10.0) == pytest.approx(
        reference.drop_block_gamma(0.1, block_size, 12, 10), rel=1e-12
    )
    seeds = (np.random.default_rng(block_size).uniform(size=(2, 13 - block_size, 11 - block_size, 3)) < 0.05)
    expected = reference.block_keep_mask(seeds, block_size)
    if data_format == "channels_first":
        mask = drop_block_module.block_keep_mask(np.transpose(seeds, (0, 3, 1, 2)).astype("float32"), block_size,
                                                 "channels_first")  # fmt: skip
        mask = np.transpose(mask, (0, 2, 3, 1))
    else:
        mask = drop_block_module.block_keep_mask(seeds.astype("float32"), block_size)
    np.testing.assert_array_equal(mask, expected)
    x = normal(*expected.shape, seed=32)
    np.testing.assert_allclose(drop_block_module.drop_block(x, expected), reference.drop_block(x, expected), rtol=1e-6)


# Shared: serialization, arguments, dtypes

LAYERS = {
    "StochasticDepth": (
        lambda: StochasticDepth(0.6, per_example=True, seed=4),
        lambda: [keras.Input((4, 3)), keras.Input((4, 3))],
        {"survival_probability": 0.6, "per_example": True, "seed": 4},
    ),
    "WeightNormalization": (
        lambda: WeightNormalization(keras.layers.Conv2D(3, 3, activation="relu"), data_init=True),
        lambda: keras.Input((6, 6, 2)),
        {"data_init": True},
    ),
    "DropBlock2D": (
        lambda: DropBlock2D(0.2, 3, seed=8, data_format="channels_last"),
        lambda: keras.Input((8, 8, 2)),
        {"rate": 0.2, "block_size": 3, "seed": 8, "data_format": "channels_last"},
    ),
}


def test_every_regularization_layer_is_in_the_shared_table():
    modules = (stochastic_depth_module, weight_normalization_module, drop_block_module)
    public = {
        name
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, keras.layers.Layer) and value.__module__ == module.__name__
    }
    assert public == set(LAYERS)


def sample_inputs(inputs, seed):
    arrays = [np.abs(normal(8, *i.shape[1:], seed=seed + k)) + 0.1 for k, i in enumerate(keras.tree.flatten(inputs))]
    return arrays if isinstance(inputs, list) else arrays[0]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_and_keras_file_round_trip(name, tmp_path):
    make, make_inputs, expected_config = LAYERS[name]
    layer = make()
    config = layer.get_config()
    assert {key: config[key] for key in expected_config} == expected_config
    clone = type(layer).from_config(copy.deepcopy(config))
    assert clone.get_config() == config

    inputs = make_inputs()
    model = keras.Model(inputs, layer(inputs))
    x = sample_inputs(inputs, seed=33)
    model(x, training=True)  # advances the seed state; initializes WeightNormalization
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.layers[-1]) is type(layer)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    # The saved state (the seed state, the init flag) goes on where the original was.
    for _ in range(3):
        np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: StochasticDepth(1.5), r"survival_probability must be a number in \[0, 1\], received: 1.5"),
        (lambda: StochasticDepth("0.5"), r"survival_probability must be a number in \[0, 1\], received: '0.5'"),
        (lambda: StochasticDepth(0.5, per_example=1), "per_example must be True or False, received: 1"),
        (lambda: StochasticDepth(0.5, seed=1.5), "seed must be an integer or None, received: 1.5"),
        (lambda: StochasticDepth()(np.ones((2, 3))), r"called on \[shortcut, residual\]"),
        (lambda: StochasticDepth()([np.ones((2, 3)), np.ones((2, 4))]), r"same shape, received: \(2, 3\) and \(2, 4\)"),
        (lambda: WeightNormalization(keras.layers.Dense(2), data_init="yes"), "data_init must be True or False, received: 'yes'"),
        (lambda: WeightNormalization(keras.layers.LSTM(2)), r"layer must be a keras.layers.Dense, Conv1D, Conv2D or Conv3D, received: <LSTM"),
        (lambda: WeightNormalization(keras.layers.Conv2DTranspose(2, 3)), r"received: <Conv2DTranspose"),
        (lambda: DropBlock2D(rate=1.0), r"rate must be a number in \[0, 1\), received: 1.0"),
        (lambda: DropBlock2D(rate=-0.1), r"rate must be a number in \[0, 1\), received: -0.1"),
        (lambda: DropBlock2D(block_size=0), "block_size must be an integer >= 1, received: 0"),
        (lambda: DropBlock2D(block_size=2.0), "block_size must be an integer >= 1, received: 2.0"),
        (lambda: DropBlock2D(seed="1"), "seed must be an integer or None, received: '1'"),
        (lambda: DropBlock2D(data_format="NHWC"), r"data_format must be one of .*, received: 'NHWC'"),
        (lambda: DropBlock2D()(np.ones((2, 4, 4))), r"DropBlock2D needs 4D feature maps \(NHWC\), received shape: \(2, 4, 4\)"),
    ],
)  # fmt: skip
def test_bad_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_lora_layer_is_refused():
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    dense.enable_lora(1)
    with pytest.raises(ValueError, match="layer must not use LoRA or quantization"):
        WeightNormalization(dense)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16", "mixed_float16"])
def test_float_dtypes_are_kept(dtype):
    compute_dtype = keras.DTypePolicy(dtype).compute_dtype
    variable_dtype = keras.DTypePolicy(dtype).variable_dtype
    shortcut, residual = normal(4, 3, seed=34), normal(4, 3, seed=35)
    image = normal(8, 6, 6, 2, seed=36, mean=1.0)
    for training in (True, False):
        assert StochasticDepth(0.5, dtype=dtype)([shortcut, residual], training=training).dtype == compute_dtype
        assert DropBlock2D(0.2, 2, dtype=dtype)(image, training=training).dtype == compute_dtype
    layer = WeightNormalization(keras.layers.Conv2D(3, 3, dtype=dtype))
    out = layer(image, training=True)
    assert out.dtype == compute_dtype and np.all(np.isfinite(np.asarray(out, np.float32)))
    assert layer.g.dtype == variable_dtype and layer.layer.kernel.dtype == variable_dtype
    assert bool(layer.initialized.numpy())
