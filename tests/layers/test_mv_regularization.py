"""MVRegularization: the design documents' formula, exact on 1 device, N replicas and N workers."""

import copy
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import get_strategy, keras_compat
from lepton_keras.layers import MVRegularization
from tests.layers.cases import cnn_mv
from tests.layers.reference import mv_regularization as reference
from tests.support.cases import cifar10_sample
from tests.support.harness import TrainingCase, max_difference, run_case, run_case_on_workers

TOLERANCE = 1e-5


def case(model_fn, steps=5):
    return TrainingCase(f"tests.layers.cases:{model_fn}", "tests.support.cases:cifar10_sample", steps=steps,
                        global_batch_size=16)  # fmt: skip


@pytest.mark.parametrize(
    "make_layer, input_shape",
    [(lambda: keras.layers.Dense(5), (6, 7)), (lambda: keras.layers.Conv2D(4, 3), (3, 8, 8, 2))],
)
@pytest.mark.parametrize("per_example, include_bias", [(False, False), (True, False), (False, True)])
def test_penalty_matches_the_formula(make_layer, input_shape, per_example, include_bias):
    inputs = np.random.default_rng(0).normal(size=input_shape).astype(np.float32)
    layer = MVRegularization(make_layer(), lambda_=0.3, per_example=per_example, include_bias=include_bias)
    layer(inputs)
    (penalty,) = layer.losses
    bias = layer.layer.bias.numpy() if include_bias else None
    expected = reference.mv_penalty(
        layer.layer.kernel.numpy(), inputs, 0.3, bias=bias, per_example=per_example, epsilon=1e-7
    )
    assert float(penalty) == pytest.approx(expected, rel=1e-6)


def test_an_all_zero_batch_gives_a_finite_penalty():
    layer = MVRegularization(keras.layers.Dense(3), lambda_=1.0, epsilon=1e-3)
    layer(np.zeros((4, 2), np.float32))
    assert float(layer.losses[0]) == pytest.approx(reference.mv_penalty(layer.layer.kernel.numpy(), np.zeros((4, 2)), 1.0, epsilon=1e-3), rel=1e-6)


def test_the_gradient_is_lambda_w_over_the_input_energy():
    inputs = np.random.default_rng(1).normal(size=(5, 3))
    layer = MVRegularization(keras.layers.Dense(2, dtype="float64"), lambda_=0.7, dtype="float64")
    layer(inputs)
    kernel = layer.layer.kernel
    with tf.GradientTape() as tape:
        layer(inputs)
        penalty = layer.losses[0]
    analytic = tape.gradient(penalty, kernel).numpy()
    numeric = reference.finite_difference_gradient(lambda w: reference.mv_penalty(w, inputs, 0.7), kernel.numpy())
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-9)
    with tf.GradientTape() as tape:  # the input energy is a statistic: no gradient into the inputs
        x = tf.constant(inputs)
        tape.watch(x)
        layer(x)
        penalty = layer.losses[0]
    assert tape.gradient(penalty, x) is None


@functools.cache
def reference_run(model_fn):
    return run_case(case(model_fn))


@pytest.mark.parametrize("model_fn", ["cnn_mv", "cnn_mv_per_example", "cnn_mv_synchronized_batch_norm"])
@pytest.mark.parametrize("replicas", [2, 4])
def test_mirrored_training_matches_one_device_and_logs_the_penalty_once(model_fn, replicas):
    mirrored = run_case(case(model_fn), replicas=replicas)
    assert max_difference(reference_run(model_fn), mirrored) < TOLERANCE
    assert mirrored.loss == pytest.approx(reference_run(model_fn).loss, rel=1e-5)


def test_a_naive_penalty_differs_under_mirrored_strategy():
    # Shows the comparisons above can fail: dividing by each replica's own input energy.
    single = run_case(case("cnn_naive_mv"))
    assert max_difference(single, run_case(case("cnn_naive_mv"), replicas=2)) > 1e-3


@pytest.mark.parametrize("replicas", [None, 2])
def test_the_logged_loss_is_the_loss_plus_the_penalty_counted_once(replicas):
    x, y = cifar10_sample(16, 0)
    keras.utils.set_random_seed(0)
    model = cnn_mv()
    expected = float(keras.losses.categorical_crossentropy(y, model(x)).numpy().mean()) + float(sum(model.losses))
    assert len(model.losses) == 2
    logged = run_case(case("cnn_mv", steps=1), replicas=replicas).loss
    assert logged == pytest.approx(expected, rel=1e-5)


@pytest.mark.multiworker
@pytest.mark.parametrize("model_fn", ["cnn_mv", "cnn_mv_synchronized_batch_norm"])
def test_two_workers_match_one_device(model_fn):
    worker_0, worker_1 = run_case_on_workers(case(model_fn), workers=2)
    assert max_difference(reference_run(model_fn), worker_0) < TOLERANCE
    assert worker_0.loss == pytest.approx(reference_run(model_fn).loss, rel=1e-5)
    assert max_difference(worker_0, worker_1) == 0.0


def test_config_and_keras_file_round_trip(tmp_path):
    layer = MVRegularization(keras.layers.Dense(3), lambda_=0.2, per_example=True, epsilon=1e-5, include_bias=True)
    config = layer.get_config()
    assert {k: config[k] for k in ("lambda_", "per_example", "epsilon", "include_bias")} == {
        "lambda_": 0.2, "per_example": True, "epsilon": 1e-5, "include_bias": True,
    }  # fmt: skip
    clone = MVRegularization.from_config(copy.deepcopy(config))  # from_config consumes "layer"
    assert clone.get_config() == config
    model = keras.Sequential([keras.Input((4,)), layer])
    x = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    model(x)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded(x), model(x), rtol=0, atol=0)
    assert float(loaded.losses[0]) == pytest.approx(float(model.losses[0]), rel=1e-7)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MVRegularization(keras.layers.Dense(2), lambda_=-1.0), "lambda_ must be a finite number >= 0, received: -1.0"),
        (lambda: MVRegularization(keras.layers.Dense(2), lambda_=float("nan")),
         "lambda_ must be a finite number >= 0, received: nan"),
        (lambda: MVRegularization(keras.layers.Dense(2), lambda_=float("inf")),
         "lambda_ must be a finite number >= 0, received: inf"),
        (lambda: MVRegularization(keras.layers.Dense(2), epsilon=0), "epsilon must be a finite number > 0, received: 0"),
        (lambda: MVRegularization(keras.layers.Dense(2), epsilon=float("inf")),
         "epsilon must be a finite number > 0, received: inf"),
        (lambda: MVRegularization(keras.layers.Dense(2), per_example="False"),
         "per_example must be True or False, received: 'False'"),
        (lambda: MVRegularization("dense"), "layer must be a keras.layers.Layer with a kernel .*, received: 'dense'"),
        (lambda: MVRegularization(keras.layers.ReLU(name="relu_1"))(np.ones((2, 2))), "'relu_1' \\(ReLU\\) has none"),
        (
            lambda: MVRegularization(keras.layers.Dense(2, use_bias=False, name="d"), include_bias=True)(np.ones((2, 2))),
            "include_bias=True, but 'd' has no bias",
        ),
    ],
)
def test_bad_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_each_thread_keeps_its_own_penalty():
    # The Keras behaviour that miscounts the penalty across replica threads, and the fix.
    layer = MVRegularization(keras.layers.Dense(2))
    if keras_compat.add_loss_is_shared_between_threads():
        assert isinstance(layer._losses, keras_compat._PerThreadList)
    assert not keras_compat.add_loss_is_shared_between_threads(layer)
    assert keras_compat.isolate_losses_per_thread(layer) is False  # idempotent


def test_losses_stay_shared_where_keras_already_isolates_them(monkeypatch):
    # The "Keras is fixed" path: the probe says the list is not shared, nothing is replaced.
    monkeypatch.setattr(keras_compat, "_ADD_LOSS_SHARED", False)
    layer = MVRegularization(keras.layers.Dense(2))
    assert not isinstance(layer._losses, keras_compat._PerThreadList)


def test_inside_a_strategy_scope_on_one_replica():
    strategy = get_strategy("mirrored", cpu_replicas=2)
    with strategy.scope():
        layer = MVRegularization(keras.layers.Dense(2), lambda_=1.0)
        x = np.ones((4, 3), np.float32)
        layer(x)  # cross-replica context: the whole batch is here
    assert float(layer.losses[0]) == pytest.approx(reference.mv_penalty(layer.layer.kernel.numpy(), x, 1.0), rel=1e-6)
