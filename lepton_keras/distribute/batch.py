"""Batch-size arithmetic for data-parallel training.

With R replicas each computing gradients on a per-replica batch b, one step sees the
global batch B = R * b. Keras datasets are batched by the *global* batch size; the
strategy splits every batch between replicas.

The linear scaling rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training
ImageNet in 1 Hour", arXiv:1706.02677): when the global batch grows by a factor k,
multiply the learning rate by k,

    lr(B) = lr_base * B / B_base,

and warm the learning rate up over the first epochs for large k.
"""

from __future__ import annotations

import numbers

from lepton_keras.validation import check_int, check_positive, invalid


def _replica_count(strategy_or_count) -> int:
    if strategy_or_count is None:
        return 1
    if isinstance(strategy_or_count, numbers.Integral) and not isinstance(strategy_or_count, bool):
        count = int(strategy_or_count)
    else:
        count = getattr(strategy_or_count, "num_replicas_in_sync", 0)
    if count < 1:
        raise invalid("strategy", strategy_or_count, "a tf.distribute.Strategy, a replica count >= 1 or None")
    return count


def global_batch_size(per_replica_batch_size: int, strategy=None) -> int:
    """Global batch size B = replicas * per-replica batch size.

    Args:
        per_replica_batch_size: examples each replica processes per step.
        strategy: a `tf.distribute.Strategy` or a replica count; None means 1 replica.

    Example:
        >>> global_batch_size(64, 4)
        256
    """
    per_replica_batch_size = check_int("per_replica_batch_size", per_replica_batch_size, minimum=1)
    return per_replica_batch_size * _replica_count(strategy)


def per_replica_batch_size(global_batch: int, strategy=None) -> int:
    """Per-replica batch size b = B / replicas; B must divide evenly.

    Example:
        >>> per_replica_batch_size(256, 4)
        64
    """
    return check_global_batch("global_batch", global_batch, _replica_count(strategy))


def check_global_batch(name: str, global_batch, replicas: int) -> int:
    """The per-replica batch of `global_batch`, an integer >= 1 and a multiple of `replicas`.

    Raises:
        ValueError: naming `name`, when `global_batch` is not.
    """
    global_batch = check_int(name, global_batch, minimum=1)
    if global_batch % replicas:
        raise invalid(name, global_batch, f"a multiple of the {replicas} replica(s)")
    return global_batch // replicas


def scale_learning_rate(base_learning_rate: float, global_batch: int, base_batch_size: int = 256) -> float:
    """The linear scaling rule lr = lr_base * B / B_base (Goyal et al. 2017).

    Args:
        base_learning_rate: learning rate tuned for `base_batch_size`.
        global_batch: the global batch size you train with.
        base_batch_size: the batch size `base_learning_rate` was tuned for (default 256).

    Example:
        >>> scale_learning_rate(0.1, 1024)
        0.4
    """
    base_learning_rate = check_positive("base_learning_rate", base_learning_rate)
    global_batch = check_int("global_batch", global_batch, minimum=1)
    base_batch_size = check_int("base_batch_size", base_batch_size, minimum=1)
    return base_learning_rate * global_batch / base_batch_size
