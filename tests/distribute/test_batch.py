"""Global and per-replica batch sizes and the linear learning-rate scaling rule, with their errors."""

import pytest
import tensorflow as tf

from lepton_keras.distribute import get_strategy, global_batch_size, per_replica_batch_size, scale_learning_rate


def test_global_batch_is_replicas_times_per_replica_batch():
    assert global_batch_size(64) == 64
    assert global_batch_size(64, 4) == 256
    assert global_batch_size(32, get_strategy("mirrored", cpu_replicas=2)) == 64
    assert global_batch_size(32, tf.distribute.get_strategy()) == 32


def test_per_replica_batch_divides_the_global_batch():
    assert per_replica_batch_size(256, 4) == 64
    with pytest.raises(ValueError, match="multiple of the 4 replica"):
        per_replica_batch_size(250, 4)


def test_linear_scaling_rule_of_goyal_et_al():
    # Goyal et al. 2017: lr 0.1 for 256 images, so 8k images (32x) take lr 3.2.
    assert scale_learning_rate(0.1, 8192) == pytest.approx(3.2)
    assert scale_learning_rate(1e-3, 64, base_batch_size=128) == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: global_batch_size(0), "per_replica_batch_size must be an integer >= 1, received: 0"),
        (lambda: global_batch_size(True), "per_replica_batch_size must be an integer >= 1, received: True"),
        (lambda: global_batch_size(8, 0), "strategy must be a tf.distribute.Strategy, a replica count >= 1 or None"),
        (lambda: global_batch_size(8, True), "strategy must be a tf.distribute.Strategy, a replica count"),
        (lambda: global_batch_size(8, "two"), "strategy must be a tf.distribute.Strategy, a replica count"),
        (lambda: per_replica_batch_size(256.0, 4), "global_batch must be an integer >= 1, received: 256.0"),
        (lambda: per_replica_batch_size(250, 4), "global_batch must be a multiple of the 4 replica"),
        (lambda: scale_learning_rate(-1.0, 256), "base_learning_rate must be a finite number > 0, received: -1.0"),
        (lambda: scale_learning_rate(float("nan"), 256), "base_learning_rate must be a finite number > 0"),
        (lambda: scale_learning_rate("0.1", 256), "base_learning_rate must be a finite number > 0"),
        (lambda: scale_learning_rate(0.1, 0), "global_batch must be an integer >= 1, received: 0"),
        (lambda: scale_learning_rate(0.1, 256, base_batch_size=None), "base_batch_size must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
