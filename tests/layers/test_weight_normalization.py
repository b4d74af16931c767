"""WeightNormalization against the float64 reference of Salimans and Kingma (2016): w = g v / ||v|| for Dense and
Conv layers, the data-dependent init (once, eagerly or traced, all-reduced under MirroredStrategy and two workers),
the gradients to g and v; its argument errors and dtypes."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import get_strategy
from lepton_keras.layers import WeightNormalization
from lepton_keras.layers import weight_normalization as weight_normalization_module
from tests.layers.cases import gaussian_images, normal, wn_cnn_init_only
from tests.layers.reference import weight_normalization as reference
from tests.support.harness import TrainingCase, max_difference, run_case, run_case_on_workers
from tests.support.numerics import relative_error

STRATEGY_TOLERANCE = 1e-6  # data init alone: the statistics are summed in another order
TRAINING_TOLERANCE = 1e-5  # a few Adam steps, as tests/distribute/test_equivalence.py


def _cpu_runs_channels_first_conv2d() -> bool:
    """TensorFlow runs an NCHW Conv2D on the CPU only with oneDNN, which it enables by default on
    some x86 CPUs (with AVX-512) and not on others: asked by behaviour, on a plain Keras layer."""
    try:
        keras.layers.Conv2D(1, 1, data_format="channels_first")(np.zeros((1, 1, 2, 2), np.float32))
    except tf.errors.UnimplementedError:
        return False
    return True


CHANNELS_FIRST_ON_THIS_CPU = pytest.mark.skipif(
    not _cpu_runs_channels_first_conv2d(),
    reason="this CPU's TensorFlow runs no channels_first Conv2D (Keras's own layer fails the same way)",
)
WRAPPED_LAYERS = {
    "dense": (lambda: keras.layers.Dense(4, activation="tanh"), (6, 5)),
    "dense_3d_input": (lambda: keras.layers.Dense(3), (4, 2, 5)),
    "conv1d_causal": (lambda: keras.layers.Conv1D(3, 2, padding="causal", activation="relu"), (4, 7, 2)),
    "conv2d": (lambda: keras.layers.Conv2D(3, 3, activation="tanh"), (4, 6, 6, 2)),
    "conv2d_channels_first": (lambda: keras.layers.Conv2D(3, 2, data_format="channels_first"), (4, 2, 5, 5)),
    "conv3d": (lambda: keras.layers.Conv3D(2, 2, strides=2), (3, 4, 4, 4, 2)),
}
LAYER_NAMES = [pytest.param(name, marks=CHANNELS_FIRST_ON_THIS_CPU) if "channels_first" in name else name
               for name in sorted(WRAPPED_LAYERS)]  # fmt: skip


@pytest.mark.parametrize("name", LAYER_NAMES)
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


@pytest.mark.parametrize("name", LAYER_NAMES)
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


@pytest.mark.parametrize("name", LAYER_NAMES)
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


# Under MirroredStrategy and two workers (with StochasticDepth in the trained model)


def case(model_fn, steps):
    return TrainingCase(f"tests.layers.cases:{model_fn}", "tests.layers.cases:gaussian_images", steps=steps,
                        global_batch_size=16)  # fmt: skip


@functools.cache
def one_device_run(model_fn, steps):
    return run_case(case(model_fn, steps))


def initialized_weights(replicas):
    """The weights of `wn_cnn_init_only` after its one (init-only) step, with every replica's copy of each."""
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


@functools.cache
def initialized_on_one_device():
    return initialized_weights(None)


def test_the_data_init_changes_the_weights():
    # Guards the comparisons below: equal weights must not come from a run that did nothing.
    untrained, initialized, _ = initialized_on_one_device()
    assert relative_error(initialized, untrained) > 1e-2


@pytest.mark.parametrize("replicas", [2, 4])
def test_data_init_under_mirrored_strategy_matches_one_device_on_every_replica(replicas):
    _, expected, _ = initialized_on_one_device()
    _, initialized, copies = initialized_weights(replicas)
    difference = relative_error(initialized, expected)
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
    difference = relative_error(initialized, expected)
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



@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: WeightNormalization(keras.layers.Dense(2), data_init="yes"), "data_init must be True or False, received: 'yes'"),
        (lambda: WeightNormalization(keras.layers.LSTM(2)), r"layer must be a keras.layers.Dense, Conv1D, Conv2D or Conv3D, received: <LSTM"),
        (lambda: WeightNormalization(keras.layers.Conv2DTranspose(2, 3)), r"received: <Conv2DTranspose"),
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
    image = normal(8, 6, 6, 2, seed=36, mean=1.0)
    layer = WeightNormalization(keras.layers.Conv2D(3, 3, dtype=dtype))
    out = layer(image, training=True)
    assert out.dtype == compute_dtype and np.all(np.isfinite(np.asarray(out, np.float32)))
    assert layer.g.dtype == variable_dtype and layer.layer.kernel.dtype == variable_dtype
    assert bool(layer.initialized.numpy())
