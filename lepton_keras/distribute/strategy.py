"""Choosing a `tf.distribute.Strategy` so the same script runs on 1 device, N GPUs or N machines.

`get_strategy("auto")` picks, in order:
1. `MultiWorkerMirroredStrategy` when a cluster is configured (TF_CONFIG, or a
   `tf.distribute.cluster_resolver.ClusterResolver` you pass, such as Slurm's);
2. `MirroredStrategy` when more than one GPU is visible, or when you ask for
   `cpu_replicas` > 1 (logical CPU devices: data parallelism without GPUs, for tests);
3. the default strategy (one device) otherwise.
"""

from __future__ import annotations

import os

import tensorflow as tf

from lepton_keras.distribute import cluster, keras_compat

STRATEGY_KINDS = ("auto", "default", "mirrored", "multi_worker")
COMMUNICATION_IMPLEMENTATIONS = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


def configure_cpu_devices(count: int) -> list[str]:
    """Makes at least `count` logical CPU devices; returns the names of all of them.

    Splits the physical CPU into `count` logical devices, so that a MirroredStrategy can
    run data parallelism without GPUs. Must run before TensorFlow initialises its devices
    (before the first op or strategy); once they exist, asking for `count` or fewer is
    harmless and changes nothing.

    Raises:
        ValueError: `count` is not a positive integer.
        RuntimeError: TensorFlow already initialised fewer than `count` CPU devices.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive integer, received: {count!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu) or [None]
    if len(configured) < count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            )
        except RuntimeError:
            available = len(tf.config.list_logical_devices("CPU"))
            raise RuntimeError(
                f"cannot split the CPU into {count} logical devices: TensorFlow already initialised "
                f"its devices ({available} logical CPU device(s)). Call "
                "configure_cpu_devices (or get_strategy(cpu_replicas=...)) at the start of the "
                "program, before any TensorFlow op or strategy is created."
            ) from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def _cluster_configured(cluster_resolver) -> bool:
    if cluster_resolver is not None:
        return True
    return cluster.parse_tf_config(os.environ.get(cluster.TF_CONFIG_ENV)) is not None


def _communication_options(communication: str, bytes_per_pack: int):
    if communication not in COMMUNICATION_IMPLEMENTATIONS:
        raise ValueError(
            f"communication must be one of {sorted(COMMUNICATION_IMPLEMENTATIONS)}, "
            f"received: {communication!r}"
        )
    if not isinstance(bytes_per_pack, int) or isinstance(bytes_per_pack, bool) or bytes_per_pack < 0:
        raise ValueError(f"bytes_per_pack must be a non-negative integer, received: {bytes_per_pack!r}")
    return tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=bytes_per_pack, implementation=COMMUNICATION_IMPLEMENTATIONS[communication]
    )


def get_strategy(
    kind: str = "auto",
    *,
    cpu_replicas: int | None = None,
    cluster_resolver=None,
    communication: str = "auto",
    bytes_per_pack: int = 0,
) -> tf.distribute.Strategy:
    """Returns the strategy for this machine or cluster.

    Args:
        kind: "auto" (default), "default" (one device), "mirrored" (all local GPUs, or
            `cpu_replicas` logical CPUs) or "multi_worker" (MultiWorkerMirroredStrategy).
        cpu_replicas: split the CPU into this many logical devices and mirror over them
            (only for "auto" and "mirrored", and only on a machine without GPUs).
        cluster_resolver: a `tf.distribute.cluster_resolver.ClusterResolver` (such as
            `SlurmClusterResolver`) used instead of TF_CONFIG.
        communication: collective implementation for multi-worker all-reduce:
            "auto" (default), "ring" or "nccl".
        bytes_per_pack: pack the gradients of a multi-worker all-reduce into chunks of
            about this many bytes, one collective each (default 0: TensorFlow packs them
            into a single chunk). Smaller packs start communicating before the whole backward
            pass is done; measure with benchmarks/scaling.py.

    For multi-worker strategies the Keras compatibility fixes of
    `lepton_keras.distribute.keras_compat` are applied, so `model.fit`, `evaluate` and
    `predict` work unchanged.

    Example:
        strategy = lepton_keras.distribute.get_strategy()
        with strategy.scope():
            model = make_model()
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(dataset_batched_by_global_batch, epochs=10)

    Raises:
        ValueError: unknown kind or communication, malformed TF_CONFIG, a task index outside
            the cluster, "multi_worker" without a cluster, or cpu_replicas with GPUs or a cluster.
        RuntimeError: cpu_replicas asked for after TensorFlow initialised its devices.
    """
    if kind not in STRATEGY_KINDS:
        raise ValueError(f"kind must be one of {STRATEGY_KINDS}, received: {kind!r}")
    if cpu_replicas is not None and (
        not isinstance(cpu_replicas, int) or isinstance(cpu_replicas, bool) or cpu_replicas < 1
    ):
        raise ValueError(f"cpu_replicas must be a positive integer, received: {cpu_replicas!r}")
    options = _communication_options(communication, bytes_per_pack)
    has_cluster = _cluster_configured(cluster_resolver)  # validates TF_CONFIG
    if kind == "auto":
        if has_cluster:
            kind = "multi_worker"
        elif cpu_replicas is not None and cpu_replicas > 1:
            kind = "mirrored"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if cpu_replicas is not None and kind != "mirrored":
        raise ValueError(
            f"cpu_replicas applies to a MirroredStrategy on one machine, not to kind={kind!r}"
            + (" (a cluster is configured)" if has_cluster else "")
        )

    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if cpu_replicas is None:
            return tf.distribute.MirroredStrategy()
        if tf.config.list_physical_devices("GPU"):
            raise ValueError("cpu_replicas is for machines without GPUs; GPUs are visible here")
        devices = configure_cpu_devices(cpu_replicas)[:cpu_replicas]
        # Reduce on one device rather than with collective ops: collective groups of
        # MirroredStrategies with different device counts collide within one process.
        return tf.distribute.MirroredStrategy(
            devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0])
        )
    if not has_cluster:
        raise ValueError(
            'kind="multi_worker" needs a cluster: set TF_CONFIG (lepton-keras launch does) '
            "or pass cluster_resolver"
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=cluster_resolver, communication_options=options
    )
    keras_compat.patch_keras_for_multi_worker(strategy)
    return strategy
