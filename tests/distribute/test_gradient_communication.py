"""GradientCommunication: buckets in backward order, 16-bit compression, and the one switch for any optimizer.

The bucket plan against its closed form; `sum_gradients` against NumPy's "cast, sum, cast back"
on 2 and 4 replicas; and training with buckets equal to Keras's single all-reduce (bitwise on 2
replicas, to float32 rounding on 4, and on 2 worker processes) for Keras's Adam, a wrapper
stack and SAM, with uneven buckets and a variable that gets no gradient.
"""

import functools

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import (
    GradientCommunication,
    get_strategy,
    gradient_communication,
    keras_compat,
    set_gradient_communication,
)
from lepton_keras.distribute.gradient_communication import (
    bucket_plan,
    payload_bytes,
    sum_gradients,
)
from tests.support.harness import (
    TrainingCase,
    max_difference,
    run_case,
    run_case_on_workers,
)
from tests.support.numerics import assert_close

FLOAT32_ROUNDING = 1e-6
# Uneven buckets for the tutorial CNN (its layers hold 3.5 KB to 4.2 MB of float32 gradient).
UNEVEN_BUCKETS = {"bucket_bytes": 300_000}


# --- the plan ---------------------------------------------------------------------------


def test_buckets_run_in_backward_order_and_close_before_passing_the_size():
    assert bucket_plan([4, 4, 4, 10, 1, 1], 8) == [[5, 4], [3], [2, 1], [0]]


def test_zero_bucket_bytes_is_one_bucket_of_everything_last_first():
    assert bucket_plan([4, 100, 7], 0) == [[2, 1, 0]]


def test_a_gradient_larger_than_a_bucket_gets_a_bucket_of_its_own():
    assert bucket_plan([1, 50, 1], 10) == [[2], [1], [0]]


@pytest.mark.parametrize("seed", range(5))
def test_every_gradient_is_in_exactly_one_bucket_and_no_bucket_of_two_passes_the_size(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.integers(1, 100, size=30)]
    plan = bucket_plan(sizes, 120)
    assert sorted(i for bucket in plan for i in bucket) == list(range(len(sizes)))
    assert [i for bucket in plan for i in bucket] == list(reversed(range(len(sizes))))
    assert all(len(bucket) == 1 or sum(sizes[i] for i in bucket) <= 120 for bucket in plan)


def test_payload_bytes_halve_with_compression_for_floating_gradients_only():
    sizes, dtypes = [10, 3], ["float32", "int32"]
    assert payload_bytes(sizes, dtypes, GradientCommunication()) == 52
    assert payload_bytes(sizes, dtypes, GradientCommunication(compression="bfloat16")) == 32


@pytest.mark.parametrize(
    "arguments",
    [{"bucket_bytes": -1}, {"bucket_bytes": 1.5}, {"compression": "int8"}, {"compression": 16},
     {"predivide_factor": 0.5}, {"predivide_factor": float("nan")}],
    ids=str,
)  # fmt: skip
def test_bad_settings_name_the_argument(arguments):
    (name,) = arguments
    with pytest.raises(ValueError, match=name):
        GradientCommunication(**arguments)


def test_the_setting_belongs_to_its_strategy_and_none_restores_keras_path():
    strategy = get_strategy("mirrored", cpu_replicas=2)
    other = get_strategy("mirrored", cpu_replicas=2)
    communication = GradientCommunication(bucket_bytes=1024)
    set_gradient_communication(strategy, communication)
    assert gradient_communication(strategy) == communication
    assert gradient_communication(other).is_keras_default
    with strategy.scope():
        assert gradient_communication() == communication
    set_gradient_communication(strategy, None)
    assert gradient_communication(strategy).is_keras_default
    with pytest.raises(ValueError, match="communication"):
        set_gradient_communication(strategy, {"bucket_bytes": 1024})
    with pytest.raises(ValueError, match="gradient_communication"):
        get_strategy("default", gradient_communication="float16")


def test_keras_gradient_sum_is_found_by_signature_and_public_methods_are_skipped():
    target = keras_compat.PatchTarget(
        "a sum", keras.optimizers.Optimizer.__mro__, ("self", "grads_and_vars"), private_only=True
    )
    assert target.attribute.startswith("_") and target.attribute != "apply_gradients"

    class OnlyPublic:
        def apply_gradients(self, grads_and_vars):
            return grads_and_vars

    assert keras_compat.PatchTarget("a sum", [OnlyPublic], ("self", "grads_and_vars"), private_only=True).missing


# --- the sum against NumPy ----------------------------------------------------------------

SHAPES = [(3, 4), (7,), (2, 2, 2), (5,)]


def _replica_gradients(replicas: int, seed: int = 0) -> list[list[np.ndarray]]:
    """gradients[r][i]: replica r's gradient of variable i (float32), of different magnitudes."""
    rng = np.random.default_rng(seed)
    return [[(rng.normal(size=shape) * 10.0 ** rng.integers(-3, 3)).astype(np.float32) for shape in SHAPES]
            for _ in range(replicas)]  # fmt: skip


def _summed_by_strategy(replicas: int, gradients, communication, *, with_none: bool = False) -> list:
    strategy = get_strategy("mirrored", cpu_replicas=replicas)

    def step():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        mine = [tf.gather(tf.stack([g[i] for g in gradients]), replica) for i in range(len(SHAPES))]
        if with_none:
            mine[1] = None
        return [tf.zeros(()) if s is None else s for s in sum_gradients(mine, communication)]

    results = strategy.run(tf.function(step))
    return [strategy.experimental_local_results(r)[0].numpy() for r in results]


def _reference_sum(gradients, dtype, factor=1.0) -> list[np.ndarray]:
    """Each replica's gradient cast to `dtype` (after / factor), summed in `dtype` replica by replica, cast back."""
    sums = []
    for i in range(len(SHAPES)):
        total = np.zeros(SHAPES[i], dtype)
        for replica in gradients:
            total = (total + (replica[i] / np.float32(factor)).astype(dtype)).astype(dtype)
        sums.append(total.astype(np.float64) * factor)
    return sums


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("bucket_bytes", [0, 40, 10_000])
def test_uncompressed_buckets_give_the_float32_sum(replicas, bucket_bytes):
    gradients = _replica_gradients(replicas)
    ours = _summed_by_strategy(replicas, gradients, GradientCommunication(bucket_bytes=bucket_bytes))
    expected = _reference_sum(gradients, np.float32)
    if replicas == 2:  # one addition: exactly rounded whatever the order
        for a, e in zip(ours, expected):
            np.testing.assert_array_equal(a, e.astype(np.float32))
    else:
        assert_close(ours, expected, FLOAT32_ROUNDING)


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("compression, dtype, epsilon", [("float16", np.float16, 2**-10),
                                                         ("bfloat16", ml_dtypes.bfloat16, 2**-7)])  # fmt: skip
@pytest.mark.parametrize("factor", [1.0, 4.0])
def test_compressed_sum_is_cast_sum_cast_back(replicas, compression, dtype, epsilon, factor):
    gradients = _replica_gradients(replicas, seed=1)
    communication = GradientCommunication(bucket_bytes=40, compression=compression, predivide_factor=factor)
    ours = _summed_by_strategy(replicas, gradients, communication)
    expected = _reference_sum(gradients, dtype, factor)
    if replicas == 2:  # one 16-bit addition: exactly rounded
        for a, e in zip(ours, expected):
            np.testing.assert_array_equal(a, e.astype(np.float32))
    else:  # another order of 16-bit additions: within a few roundings of the sum
        for a, e in zip(ours, expected):
            np.testing.assert_allclose(a, e, rtol=3 * epsilon, atol=3 * epsilon * factor * np.max(np.abs(e)))
    uncompressed = _reference_sum(gradients, np.float32)
    assert max(np.max(np.abs(a - u)) for a, u in zip(ours, uncompressed)) > 0, "the compression changed nothing"


def test_a_gradient_of_none_stays_none_and_the_rest_are_summed():
    gradients = _replica_gradients(2, seed=2)
    ours = _summed_by_strategy(2, gradients, GradientCommunication(bucket_bytes=40), with_none=True)
    expected = _reference_sum(gradients, np.float32)
    assert ours[1].shape == ()
    for i in (0, 2, 3):
        np.testing.assert_array_equal(ours[i], expected[i].astype(np.float32))


def test_one_replica_and_no_strategy_leave_the_gradients_as_they_are():
    gradients = [tf.constant([1.0, 2.0]), None]
    assert sum_gradients(gradients, GradientCommunication(compression="float16")) == gradients


# --- training: the same weights as Keras's single all-reduce ----------------------------------


def _cnn_case(model_fn: str, communication=None, steps: int = 3) -> TrainingCase:
    return TrainingCase(model_fn, "tests.support.cases:cifar10_sample", steps=steps, global_batch_size=16,
                        gradient_communication=communication)  # fmt: skip


@functools.cache
def _on_replicas(model_fn: str, replicas: int, communication: tuple = (), steps: int = 3):
    """run_case on `replicas` CPU replicas, once per process for each (model, replicas, setting)."""
    return run_case(_cnn_case(model_fn, dict(communication) or None, steps), replicas=replicas)


def _setting(**communication) -> tuple:
    return tuple(sorted(communication.items()))


def cnn_with_unused_branch_adam():
    """The tutorial CNN plus a Dense layer that the loss never sees (its gradient is None), Keras's Adam."""
    from tests.support.cases import tutorial_module

    cnn = tutorial_module().build_model()
    inputs = keras.Input(cnn.input_shape[1:])
    unused = keras.layers.Dense(3, name="unused")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, [cnn(inputs), unused])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=["categorical_crossentropy", None])
    return model


def cnn_lookahead_clipped_radam():
    """The tutorial CNN under Lookahead(GradientClipping(RAdam)): a wrapper stack."""
    from lepton_keras.optimizers import GradientClipping, Lookahead, RAdam
    from tests.support.cases import tutorial_module

    model = tutorial_module().build_model()
    optimizer = Lookahead(GradientClipping(RAdam(1e-3), global_norm=1.0), sync_period=2)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    return model


def cnn_sam_sgd():
    """The tutorial CNN inside SharpnessAwareModel, SGD with momentum."""
    from lepton_keras.optimizers.sam import SharpnessAwareModel
    from tests.support.cases import tutorial_module

    model = SharpnessAwareModel(tutorial_module().build_model(), rho=0.05)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="categorical_crossentropy")
    return model


MODELS = {
    "keras_adam_with_an_unused_variable": "tests.distribute.test_gradient_communication:cnn_with_unused_branch_adam",
    "wrapper_stack": "tests.distribute.test_gradient_communication:cnn_lookahead_clipped_radam",
    "sam": "tests.distribute.test_gradient_communication:cnn_sam_sgd",
}


@pytest.mark.parametrize("model", MODELS)
def test_buckets_on_2_replicas_give_bitwise_keras_weights(model):
    keras_path = _on_replicas(MODELS[model], 2)
    bucketed = _on_replicas(MODELS[model], 2, _setting(**UNEVEN_BUCKETS))
    untrained = _on_replicas(MODELS[model], 2, steps=0)
    assert max_difference(keras_path, untrained) > 1e-4, "the case did not train: equal weights would prove nothing"
    assert max_difference(bucketed, keras_path) == 0.0


@pytest.mark.parametrize("model", MODELS)
def test_every_path_follows_the_setting_compression_moves_the_weights_by_float16_rounding(model):
    # Keras's Adam (through keras_compat's routing), the wrapper stack and SAM all read the setting.
    keras_path = _on_replicas(MODELS[model], 2)
    compressed = _on_replicas(MODELS[model], 2, _setting(**UNEVEN_BUCKETS, compression="float16"))
    assert 0.0 < max_difference(compressed, keras_path) < 1e-2


@pytest.mark.parametrize("model", MODELS)
def test_buckets_on_4_replicas_give_keras_weights_to_float32_rounding(model):
    keras_path = _on_replicas(MODELS[model], 4)
    bucketed = _on_replicas(MODELS[model], 4, _setting(**UNEVEN_BUCKETS))
    assert max_difference(bucketed, keras_path) < 1e-5


@pytest.mark.multiworker
@pytest.mark.parametrize("model", MODELS)
def test_buckets_on_2_workers_give_keras_weights(model):
    keras_path = _on_replicas(MODELS[model], 2)
    workers = run_case_on_workers(_cnn_case(MODELS[model], UNEVEN_BUCKETS))
    assert max_difference(workers[0], workers[1]) == 0.0
    assert max_difference(workers[0], keras_path) < 1e-5


@pytest.mark.multiworker
def test_compressed_buckets_on_2_workers_train_as_the_replicas_do_and_near_float32():
    communication = {**UNEVEN_BUCKETS, "compression": "float16"}
    model = MODELS["keras_adam_with_an_unused_variable"]
    replicas = _on_replicas(model, 2, _setting(**communication))
    workers = run_case_on_workers(_cnn_case(model, communication))
    assert max_difference(workers[0], workers[1]) == 0.0
    assert max_difference(workers[0], replicas) < 1e-5
    assert 0.0 < max_difference(replicas, _on_replicas(model, 2)) < 1e-2


def mixed_precision_cnn_loss_scaled_adam():
    """The tutorial CNN under mixed_float16 with Keras's LossScaleOptimizer(Adam)."""
    from tests.support.cases import tutorial_module

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tutorial_module().build_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)),
                  loss="categorical_crossentropy")  # fmt: skip
    return model


@pytest.mark.parametrize("compression", ["float16", "bfloat16"])
def test_compression_composes_with_loss_scaling_and_mixed_precision(compression):
    model = "tests.distribute.test_gradient_communication:mixed_precision_cnn_loss_scaled_adam"
    plain = _on_replicas(model, 2)
    compressed = _on_replicas(model, 2, _setting(**UNEVEN_BUCKETS, compression=compression))
    assert all(np.all(np.isfinite(w)) for w in compressed.weights)
    assert 0.0 < max_difference(compressed, plain) < 1e-2
