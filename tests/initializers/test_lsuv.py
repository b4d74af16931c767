"""lsuv_initialize against the float64 NumPy reference of Mishkin and Matas (2016): the target variance on MLPs,
CNNs and functional models, the orthogonal start, warnings, bad arguments, and the same weights on 1 device,
2 and 4 replicas, and 2 workers."""

import functools
import json
import random
import re

import keras
import numpy as np
import pytest

from lepton_keras.distribute import get_strategy
from lepton_keras.initializers import kernel_layers, lsuv_initialize, lsuv_scale
from tests.initializers.reference import lsuv as reference
from tests.support.harness import launch_workers
from tests.support.numerics import relative_error
from tests.support.workers import lsuv_weights

MLP_BATCH = (2.0 * np.random.default_rng(1).normal(size=(128, 12))).astype(np.float32)


def mlp(activations, units=(32, 24, 16, 4), seed=0):
    """A Dense MLP with non-zero biases (so even ReLU layers need more than one rescaling)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((MLP_BATCH.shape[1],))]
        + [
            keras.layers.Dense(
                size, activation=activation, bias_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=i)
            )
            for i, (size, activation) in enumerate(zip(units, activations))
        ]
    )


def dense_layers(model, activations):
    """(kernel, bias, activation) of each Dense layer, for the NumPy reference."""
    return [(layer.kernel.numpy(), layer.bias.numpy(), name) for layer, name in zip(kernel_layers(model), activations)]


def output_variances(model, batch) -> list[float]:
    """The variance of each kernel layer's output, measured here with Keras sub-models."""
    return [
        float(np.var(np.asarray(keras.Model(model.inputs[0], layer.output)(batch), np.float64)))
        for layer in kernel_layers(model)
    ]


@pytest.mark.parametrize("target_variance", [0.5, 2.0])
def test_lsuv_reaches_the_target_on_a_dense_mlp(target_variance):
    activations = ("relu", "elu", "relu", "linear")
    model = mlp(activations)
    tolerance = 0.01
    before = [np.var(y) for y in reference.dense_forward(MLP_BATCH, dense_layers(model, activations))]
    assert any(abs(v - target_variance) >= tolerance for v in before)  # there is work to do

    report = lsuv_initialize(model, MLP_BATCH, target_variance=target_variance, tolerance=tolerance, seed=0)

    after = [np.var(y) for y in reference.dense_forward(MLP_BATCH, dense_layers(model, activations))]
    print(f"target {target_variance}: variances {np.round(after, 5)}, iterations {[r.iterations for r in report]}")
    assert [r.name for r in report] == [layer.name for layer in kernel_layers(model)]
    assert all(abs(v - target_variance) < tolerance for v in after)
    np.testing.assert_allclose([r.variance for r in report], after, rtol=1e-5)
    assert all(r.converged for r in report)


def small_cnn():
    """Conv2D, pooling, Conv2D, Conv1D and Dense kernels."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same", activation="elu"),
            keras.layers.Reshape((25, 16)),
            keras.layers.Conv1D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


CNN_BATCH = np.random.default_rng(2).normal(size=(32, 12, 12, 3)).astype(np.float32)


def test_lsuv_reaches_the_target_on_a_small_cnn():
    model = small_cnn()
    tolerance = 0.01
    assert any(abs(v - 1.0) >= tolerance for v in output_variances(model, CNN_BATCH))
    report = lsuv_initialize(model, CNN_BATCH, tolerance=tolerance, seed=0)
    variances = output_variances(model, CNN_BATCH)
    print(f"CNN variances {np.round(variances, 5)}, iterations {[r.iterations for r in report]}")
    assert [r.name for r in report] == [layer.name for layer in kernel_layers(model)]
    assert len(report) == 4
    assert all(abs(v - 1.0) < tolerance for v in variances)
    np.testing.assert_allclose([r.variance for r in report], variances, rtol=1e-5)


def test_lsuv_on_a_functional_model_with_two_inputs():
    keras.utils.set_random_seed(0)
    left, right = keras.Input((8,), name="left"), keras.Input((4,), name="right")
    hidden = keras.layers.Dense(16, activation="relu", name="left_dense")(left)
    other = keras.layers.Dense(8, activation="tanh", name="right_dense")(right)
    joined = keras.layers.Concatenate()([hidden, other])
    model = keras.Model({"left": left, "right": right}, keras.layers.Dense(3, name="head")(joined))
    rng = np.random.default_rng(3)
    batch = {
        "left": rng.normal(size=(64, 8)).astype(np.float32),
        "right": (5 * rng.normal(size=(64, 4))).astype(np.float32),
    }
    report = lsuv_initialize(model, batch, target_variance=0.5, tolerance=0.01, seed=0)
    assert {r.name for r in report} == {"left_dense", "right_dense", "head"}
    assert report[-1].name == "head"  # after both branches
    for layer in report:
        probe = keras.Model(model.input, model.get_layer(layer.name).output)
        assert abs(np.var(np.asarray(probe(batch), np.float64)) - 0.5) < 0.01


@pytest.mark.parametrize("orthogonal_start", [False, True])
def test_lsuv_matches_the_numpy_float64_reference(orthogonal_start):
    activations = ("relu", "tanh", "elu", "linear")
    model = mlp(activations)
    start = dense_layers(model, activations)
    if orthogonal_start:  # documented: layer i starts from keras.initializers.Orthogonal(seed=seed + i)
        start = [
            (np.asarray(keras.initializers.Orthogonal(seed=10 + i)(kernel.shape)), bias, name)
            for i, (kernel, bias, name) in enumerate(start)
        ]
    options = {"target_variance": 0.5, "tolerance": 0.01, "max_iterations": 10}

    report = lsuv_initialize(model, MLP_BATCH, orthogonal_start=orthogonal_start, seed=10, **options)
    kernels, variances, iterations = reference.lsuv_dense(MLP_BATCH, start, **options)

    print(f"reference iterations {iterations}, variances {np.round(variances, 6)}")
    assert max(iterations) > 1  # the loop really iterates (tanh and biases are not homogeneous)
    assert [r.iterations for r in report] == iterations
    np.testing.assert_allclose([r.variance for r in report], variances, rtol=1e-5)
    for layer, expected, (_, bias, _) in zip(kernel_layers(model), kernels, start):
        np.testing.assert_allclose(layer.kernel.numpy(), expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(layer.bias.numpy(), bias)  # biases are left alone


def test_orthogonal_start_gives_scaled_orthonormal_kernels_from_the_seed():
    first, second, other = small_cnn(), small_cnn(), small_cnn()
    for model, seed in ((first, 3), (second, 3), (other, 4)):
        lsuv_initialize(model, CNN_BATCH, seed=seed)
    for layer in kernel_layers(first):
        kernel = layer.kernel.numpy()
        flat = kernel.reshape(-1, kernel.shape[-1])  # Keras's Orthogonal flattens all but the output axis
        assert reference.proportional_to_semi_orthogonal_error(flat) < 1e-5
    for a, b, c in zip(first.get_weights(), second.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    kernels = [(layer.kernel.numpy(), o.kernel.numpy()) for layer, o in zip(kernel_layers(first), kernel_layers(other))]
    assert all(np.abs(a - c).max() > 1e-3 for a, c in kernels)


@functools.cache
def single_device_lsuv():
    """The worker program's model and LSUV run in this process, without a strategy."""
    model = lsuv_weights.build_model()
    report = lsuv_weights.run_lsuv(model)
    return [np.asarray(w) for w in model.get_weights()], report


@pytest.mark.parametrize("replicas, how", [(2, "in scope"), (4, "in scope"), (2, "strategy="), (4, "from model")])
def test_lsuv_under_mirrored_strategy_matches_one_device(replicas, how):
    expected_weights, expected_report = single_device_lsuv()
    strategy = get_strategy("mirrored", cpu_replicas=replicas)
    with strategy.scope():
        model = lsuv_weights.build_model()
        if how == "in scope":
            report = lsuv_weights.run_lsuv(model)
    if how == "strategy=":
        report = lsuv_weights.run_lsuv(model, strategy=strategy)
    elif how == "from model":  # outside the scope: the strategy the model was built under
        report = lsuv_weights.run_lsuv(model)

    difference = relative_error(model.get_weights(), expected_weights)
    print(f"MirroredStrategy x{replicas} ({how}): largest weight difference {difference:.3g}")
    assert sum(r.iterations for r in expected_report) > len(expected_report)  # LSUV changed the weights
    assert difference < 1e-6
    assert [r.iterations for r in report] == [r.iterations for r in expected_report]
    np.testing.assert_allclose([r.variance for r in report], [r.variance for r in expected_report], rtol=1e-6)
    for variable in model.weights:
        copies = [np.asarray(copy) for copy in strategy.experimental_local_results(variable.value)]
        assert len(copies) == replicas
        for copy in copies[1:]:
            np.testing.assert_array_equal(copy, copies[0])


@pytest.mark.multiworker
def test_lsuv_on_two_workers_matches_one_device_and_each_other(tmp_path):
    launch_workers("tests.support.workers.lsuv_weights", ["--out", str(tmp_path)], workers=2)
    records = [json.loads((tmp_path / f"worker_{worker}.json").read_text()) for worker in range(2)]
    assert all(r["replicas"] == 2 and r["strategy"] == "CollectiveAllReduceStrategy" for r in records)

    def weights(worker, scenario):
        with np.load(tmp_path / f"worker_{worker}_{scenario}.npz") as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]

    # Every worker passes the same batch: bitwise equal to each other, equal to one device.
    expected_weights, expected_report = single_device_lsuv()
    difference = relative_error(weights(0, "same_batch"), expected_weights)
    print(f"2 workers: largest weight difference to one device {difference:.3g}")
    assert relative_error(weights(1, "same_batch"), weights(0, "same_batch")) == 0.0
    assert difference < 1e-6
    assert [r["iterations"] for r in records[0]["same_batch"]] == [r.iterations for r in expected_report]
    np.testing.assert_allclose(
        [r["variance"] for r in records[0]["same_batch"]], [r.variance for r in expected_report], rtol=1e-6
    )

    # Each worker its own batch: still the same weights, and each reported variance is the mean of
    # the two workers' variances (measured here with the final weights).
    assert relative_error(weights(1, "own_batch"), weights(0, "own_batch")) == 0.0
    assert records[0]["own_batch"] == records[1]["own_batch"]
    model = lsuv_weights.build_model()
    model.set_weights(weights(0, "own_batch"))
    mean_variances = np.mean([output_variances(model, lsuv_weights.make_batch(w)) for w in range(2)], axis=0)
    np.testing.assert_allclose([r["variance"] for r in records[0]["own_batch"]], mean_variances, rtol=1e-5)
    assert all(abs(v - lsuv_weights.TARGET_VARIANCE) < lsuv_weights.TOLERANCE for v in mean_variances)

    # Unseeded, with different orthonormal starts per worker: worker 0's start wins everywhere.
    assert relative_error(weights(1, "unseeded"), weights(0, "unseeded")) == 0.0
    assert relative_error(weights(0, "same_batch"), weights(0, "unseeded")) > 1e-3
    model = lsuv_weights.build_model()
    random.seed(lsuv_weights.UNSEEDED_BASE)
    lsuv_weights.run_lsuv(model, seed=None)
    assert relative_error(model.get_weights(), weights(0, "unseeded")) < 1e-6


def test_lsuv_warns_when_the_target_is_out_of_reach():
    model = mlp(("tanh",), units=(8,))
    with pytest.warns(UserWarning, match="outside target_variance 1.5"):
        report = lsuv_initialize(model, MLP_BATCH, target_variance=1.5, max_iterations=3, seed=0)
    assert report[0].iterations == 3 and not report[0].converged and report[0].variance < 1.0


def test_lsuv_refuses_a_constant_output_naming_the_layer():
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(4, kernel_initializer="zeros", name="dead")])
    with pytest.raises(ValueError, match="variance must be a finite number > 0 \\(the output variance of layer 'dead'\\)"):
        lsuv_initialize(model, MLP_BATCH, orthogonal_start=False)
    assert np.all(model.layers[0].kernel.numpy() == 0.0)  # left as it was
    with pytest.raises(ValueError, match="layer 'conv'.*received: 0.0"):
        lsuv_scale(0.0, layer="conv")


@pytest.mark.parametrize("batch", [np.zeros((0, 12), np.float32), [np.zeros((0, 12), np.float32)], 3, None, "x"],
                         ids=["empty", "empty_list", "number", "none", "string"])
def test_lsuv_refuses_a_batch_without_examples_before_touching_the_model(batch):
    model = mlp(("relu",), units=(4,))
    kernel = model.layers[0].kernel.numpy()
    with pytest.raises(ValueError, match="^batch must be model inputs"):
        lsuv_initialize(model, batch, seed=0)
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), kernel)


def test_lsuv_warns_about_nested_models():
    inner = keras.Sequential([keras.Input((12,)), keras.layers.Dense(6)])
    inputs = keras.Input((12,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    with pytest.warns(UserWarning, match="nested model"):
        report = lsuv_initialize(model, MLP_BATCH, seed=0)
    assert len(report) == 1


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


@pytest.mark.parametrize(
    "make_model, kwargs, message",
    [
        (lambda: keras.Sequential([keras.Input((12,)), keras.layers.Activation("relu")]), {}, "no layer with a kernel"),
        (lambda: mlp(("relu",), units=(4,)), {"tolerance": 0.0}, "tolerance must be a finite number > 0, received: 0.0"),
        (lambda: mlp(("relu",), units=(4,)), {"tolerance": -0.1}, "tolerance must be a finite number > 0, received: -0.1"),
        (lambda: mlp(("relu",), units=(4,)), {"max_iterations": 0}, "max_iterations must be an integer >= 1, received: 0"),
        (lambda: mlp(("relu",), units=(4,)), {"max_iterations": 2.5}, "max_iterations must be an integer >= 1, received: 2.5"),
        (lambda: mlp(("relu",), units=(4,)), {"target_variance": 0}, "target_variance must be a finite number > 0, received: 0"),
        (lambda: mlp(("relu",), units=(4,)), {"target_variance": float("inf")}, "target_variance must be a finite number > 0, received: inf"),
        (lambda: mlp(("relu",), units=(4,)), {"seed": "a"}, "seed must be an integer or None, received: 'a'"),
        (lambda: mlp(("relu",), units=(4,)), {"strategy": "mirrored"}, "strategy must be a tf.distribute.Strategy or None, received: 'mirrored'"),
        (lambda: mlp(("relu",), units=(4,)), {"orthogonal_start": "False"},
         "orthogonal_start must be True or False, received: 'False'"),
        (lambda: keras.Sequential([keras.layers.Dense(2)]), {}, "keras.Input(shape)"),
        (Subclassed, {}, "of type Subclassed"),
        (lambda: "not a model", {}, "model must be a keras.Model"),
    ],
)
def test_lsuv_bad_arguments(make_model, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        lsuv_initialize(make_model(), MLP_BATCH, **kwargs)


def test_lsuv_rejects_a_batch_with_nan():
    batch = MLP_BATCH.copy()
    batch[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite variance"):
        lsuv_initialize(mlp(("relu",), units=(4,)), batch, seed=0)
