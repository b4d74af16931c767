"""The one place where lepton_keras touches Keras internals (`keras.src`).

Keras 3's TensorFlow trainer breaks `model.fit`, `evaluate` and `predict` under a
multi-worker `tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585):

1. `_maybe_symbolic_build` takes the first distributed batch and averages it across
   replicas with `strategy.reduce`, which multi-worker strategies cannot do for a
   nested batch ("Attempt to convert a value (PerReplica...)"). The build only needs
   the batch's structure and shapes, so the fix builds from this worker's first local
   replica's batch.
2. `reduce_per_replica(..., "mean")` reduces every logged value with
   `strategy.reduce("MEAN", v, axis=0)`, which fails on the scalar losses and metrics
   ("Invalid reduction dimension 0 for input with 0 dimensions") and would average over
   the batch axis otherwise. The fix averages across replicas only (`axis=None`), as
   Keras does for a single worker.

Each fix is applied only when a probe shows the bug, by behaviour, on the strategy at
hand; once Keras is fixed the probes pass and nothing is patched. Applying is
idempotent. The probes run no collective operation while the bug is present, and the
same ones on every worker, so they cannot leave the workers out of step.
"""

from __future__ import annotations

import threading

import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer

_lock = threading.Lock()
_ORIGINAL_SYMBOLIC_BUILD = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
_ORIGINAL_REDUCE_PER_REPLICA = tf_trainer.reduce_per_replica


def _is_multi_worker(strategy) -> bool:
    extended = getattr(strategy, "extended", None)
    in_multi_worker_mode = getattr(extended, "_in_multi_worker_mode", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        in_multi_worker_mode and in_multi_worker_mode()
    )


def _first_local_value(value, strategy):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _symbolic_build_from_local_batch(self, iterator=None, data_batch=None):
    """`_maybe_symbolic_build` that builds from this worker's first replica's batch."""
    strategy = self._distribute_strategy
    if iterator is not None and strategy is not None and _is_multi_worker(strategy):
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(
                lambda value: _first_local_value(value, strategy), next(batches)
            )
            break
        iterator = None
    return _ORIGINAL_SYMBOLIC_BUILD(self, iterator=iterator, data_batch=data_batch)


def _reduce_per_replica_across_replicas(values, strategy, reduction):
    """`reduce_per_replica` whose multi-worker "mean" averages across replicas only."""
    if reduction == "auto" and not isinstance(strategy, tf.distribute.TPUStrategy):
        reduction = "mean"
    if reduction == "mean" and _is_multi_worker(strategy):
        return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
    return _ORIGINAL_REDUCE_PER_REPLICA(values, strategy, reduction)


class _BuildRecorder:
    """Stands in for a model in the symbolic-build probe: records what it is built from."""

    def __init__(self, strategy):
        self._distribute_strategy = strategy
        self.distribute_strategy = strategy
        self.built_from = None

    def _symbolic_build(self, data_batch=None):
        self.built_from = data_batch


def symbolic_build_is_broken(strategy) -> bool:
    """True when Keras cannot build a model from a batch distributed by `strategy`."""
    batch = strategy.experimental_distribute_values_from_function(
        lambda context: (tf.zeros((2, 1)), tf.zeros((2, 1)))
    )
    recorder = _BuildRecorder(strategy)
    try:
        _ORIGINAL_SYMBOLIC_BUILD(recorder, iterator=[(0, 0, iter([batch]))])
    except (ValueError, TypeError):
        return True
    return recorder.built_from is None


def scalar_mean_is_broken(strategy) -> bool:
    """True when Keras cannot average a per-replica scalar (a loss) under `strategy`."""
    scalar = strategy.experimental_distribute_values_from_function(lambda context: tf.constant(1.0))
    try:
        mean = _ORIGINAL_REDUCE_PER_REPLICA(scalar, strategy, "mean")
    except (ValueError, TypeError, tf.errors.InvalidArgumentError):
        return True
    return mean.shape.rank != 0


def patch_keras_for_multi_worker(strategy) -> list[str]:
    """Applies the fixes that `strategy` needs; returns the names of those now active.

    Called by `lepton_keras.distribute.get_strategy` for multi-worker strategies; call it
    yourself when you create a `MultiWorkerMirroredStrategy` directly. Calling it again
    changes nothing. Does nothing for single-worker strategies.
    """
    with _lock:
        if _is_multi_worker(strategy):
            if (
                tf_trainer.TensorFlowTrainer._maybe_symbolic_build is _ORIGINAL_SYMBOLIC_BUILD
                and symbolic_build_is_broken(strategy)
            ):
                tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _symbolic_build_from_local_batch
            if (
                tf_trainer.reduce_per_replica is _ORIGINAL_REDUCE_PER_REPLICA
                and scalar_mean_is_broken(strategy)
            ):
                tf_trainer.reduce_per_replica = _reduce_per_replica_across_replicas
        return active_patches()


def active_patches() -> list[str]:
    """Names of the Keras fixes currently applied."""
    active = []
    if tf_trainer.TensorFlowTrainer._maybe_symbolic_build is not _ORIGINAL_SYMBOLIC_BUILD:
        active.append("symbolic_build_from_local_batch")
    if tf_trainer.reduce_per_replica is not _ORIGINAL_REDUCE_PER_REPLICA:
        active.append("mean_across_replicas")
    return active


def active_functions() -> tuple:
    """The trainer functions Keras currently uses (to check that patching twice changes nothing)."""
    return (tf_trainer.TensorFlowTrainer._maybe_symbolic_build, tf_trainer.reduce_per_replica)


def unpatch_keras() -> None:
    """Restores Keras's own functions (for tests)."""
    with _lock:
        tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _ORIGINAL_SYMBOLIC_BUILD
        tf_trainer.reduce_per_replica = _ORIGINAL_REDUCE_PER_REPLICA
