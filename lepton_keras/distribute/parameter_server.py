"""Parameter-server training: the strategy, the servers, and the staleness of asynchronous steps.

A parameter-server cluster (TF_CONFIG with "ps" tasks) has three roles. The parameter servers
hold the variables; the workers run training steps; the chief runs the script and schedules
the steps on the workers through a `tf.distribute.coordinator.ClusterCoordinator`. Each step
runs on one worker, on one batch of that worker's own input, and never waits for the others:

    worker k, step t:   read  w_τ from the parameter servers      (τ <= t: the step it read)
                        g  =  ∇ L(w_τ; batch of worker k)
                        apply the optimizer's update with g on the parameter servers,
                        which meanwhile applied the steps of the other workers

The staleness of a step is the number of other workers' updates applied between its read and
its write, t - τ; `observed_staleness(model)` counts it for the last `fit`. With one worker it
is 0 and training is the single-process run of the same steps.

`get_strategy()` returns a `tf.distribute.ParameterServerStrategy` on the chief, and on a
worker or parameter server starts its `tf.distribute.Server` and serves until the process is
stopped (`serve`), so the same script runs on every task. `model.fit`, `evaluate`, `predict`
and `save` then run as `lepton_keras.distribute.coordinated_training` describes.

Reference: Dean et al., "Large Scale Distributed Deep Networks", NeurIPS 2012 (Downpour SGD);
Li et al., "Scaling Distributed Machine Learning with the Parameter Server", OSDI 2014.
"""

from __future__ import annotations

import collections
import os
import sys
import weakref

import tensorflow as tf

from lepton_keras.distribute import cluster
from lepton_keras.validation import invalid

# Fail RPCs to a dead task at once instead of retrying, so that the coordinator notices a lost
# worker (and reschedules its steps) or a lost parameter server (and stops) within seconds.
FAIL_FAST = {"GRPC_FAIL_FAST": "use_caller"}


def serve(cluster_resolver) -> None:
    """Runs this worker's or parameter server's `tf.distribute.Server` until the process is stopped.

    Called by `get_strategy()` on a "worker" or "ps" task of a parameter-server cluster; the
    chief's coordinator sends it the work. Exits the process with status 0 if the server ever
    returns (it does not, unless the process is stopped).

    Raises:
        ValueError: the resolver's task is not a worker or parameter server.
    """
    if cluster_resolver.task_type not in ("worker", "ps"):
        raise invalid("cluster_resolver.task_type", cluster_resolver.task_type, '"worker" or "ps"')
    server = tf.distribute.Server(
        cluster_resolver.cluster_spec(),
        job_name=cluster_resolver.task_type,
        task_index=int(cluster_resolver.task_id or 0),
        protocol=cluster_resolver.rpc_layer or "grpc",
        start=True,
    )
    print(f"lepton_keras: {cluster_resolver.task_type} {cluster_resolver.task_id} serving the chief", flush=True)
    server.join()
    sys.exit(0)


def new_strategy(cluster_resolver=None) -> tf.distribute.ParameterServerStrategy:
    """The chief's ParameterServerStrategy, with `model.fit` and friends routed to the coordinator.

    On a worker or parameter server this serves instead and never returns (`serve`).
    """
    resolver = cluster_resolver or tf.distribute.cluster_resolver.TFConfigClusterResolver()
    for name, value in FAIL_FAST.items():  # every task's, before its first connection
        os.environ.setdefault(name, value)
    if resolver.task_type in ("worker", "ps"):
        serve(resolver)
    if resolver.task_type != "chief":
        raise RuntimeError(
            f"parameter-server training runs the script on the chief; this task is {resolver.task_type!r}"
        )
    from lepton_keras.distribute import coordinated_training

    strategy = _ParameterServerStrategy(resolver)
    coordinated_training.install()
    return strategy


class _ParameterServerStrategy(tf.distribute.ParameterServerStrategy):
    """TensorFlow's strategy, answering `cluster_resolver` (TensorFlow's answers None), so that
    `task_info(strategy)` reads the cluster it runs on, TF_CONFIG's or Slurm's."""

    def __init__(self, cluster_resolver):
        super().__init__(cluster_resolver)
        self._resolver = cluster_resolver

    @property
    def cluster_resolver(self):
        return self._resolver


def is_parameter_server_strategy(strategy) -> bool:
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def number_of_workers(strategy) -> int:
    """The workers that run the steps of `strategy`'s cluster."""
    return cluster.task_info(strategy).num_workers


_staleness: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def record_staleness(model, staleness) -> None:
    """Counts one call's staleness for `model` (`coordinated_training` calls it)."""
    _staleness.setdefault(model, collections.Counter())[int(staleness)] += 1


def reset_staleness(model) -> None:
    _staleness[model] = collections.Counter()


def observed_staleness(model) -> dict[int, int]:
    """How stale the steps of `model`'s last parameter-server `fit` were: {staleness: steps}.

    A step's staleness is the number of updates of other workers that the parameter servers
    applied between the step's read of the weights (before its forward pass) and its own
    update, counted on a version of the weights that every update moves on. Empty for a model
    that has not been trained on a parameter-server strategy.

    Example:
        model.fit(dataset, epochs=2, steps_per_epoch=100)
        counts = lepton_keras.distribute.observed_staleness(model)
        mean = sum(s * n for s, n in counts.items()) / sum(counts.values())
    """
    import keras

    if not isinstance(model, keras.Model):
        raise invalid("model", model, "a keras.Model")
    return dict(sorted(_staleness.get(model, {}).items()))
