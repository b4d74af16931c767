"""Choosing a `tf.distribute.Strategy` so the same script runs on 1 device, N GPUs or N machines.

`get_strategy("auto")` picks, in order:
1. `ParameterServerStrategy` when the cluster has "ps" tasks (on the chief; a worker or
   parameter server serves instead: `lepton_keras.distribute.parameter_server`), else
   `MultiWorkerMirroredStrategy` when a cluster is configured (TF_CONFIG, or a
   `tf.distribute.cluster_resolver.ClusterResolver` you pass, such as Slurm's);
2. `MirroredStrategy` when more than one GPU is visible, or when you ask for
   `cpu_replicas` > 1 (logical CPU devices: data parallelism without GPUs, for tests);
3. the default strategy (one device) otherwise.

TF_CONFIG is validated first (`cluster.parse_tf_config`), so a malformed cluster is an error,
never a strategy that hangs. `finish_job(strategy)`, called last on every worker, ends a
multi-worker job without TensorFlow's coordination-service errors.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import time

import tensorflow as tf

from lepton_keras.distribute import cluster, keras_compat
from lepton_keras.distribute.gradient_communication import GradientCommunication, set_gradient_communication
from lepton_keras.distribute.periodic_sync import PeriodicSync, set_periodic_sync
from lepton_keras.validation import check_choice, check_int, check_positive, check_strategy, invalid

STRATEGY_KINDS = ("auto", "default", "mirrored", "multi_worker", "parameter_server")
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
    count = check_int("count", count, minimum=1)
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


def configure_cpu_threads(cpus: int) -> None:
    """Sizes TensorFlow's thread pools for a process given `cpus` CPUs.

    Use it in a worker that shares its machine with other workers: a cluster engine (Ray,
    Slurm, Kubernetes) gives each worker a few CPUs, but TensorFlow sizes its pools to every
    core of the machine, so N workers run N times too many threads. Both pools get `cpus`
    threads, the choice TensorFlow makes on a machine with `cpus` cores:

        intra-op threads = inter-op threads = cpus

    Must run before TensorFlow's first op or strategy; asking again for the sizes already
    set changes nothing.

    Example:
        lepton_keras.distribute.configure_cpu_threads(2)
        strategy = lepton_keras.distribute.get_strategy()

    Raises:
        ValueError: `cpus` is not a positive integer.
        RuntimeError: TensorFlow already started with other pool sizes.
    """
    cpus = check_int("cpus", cpus, minimum=1)
    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() == threading.get_inter_op_parallelism_threads() == cpus:
        return
    try:
        threading.set_intra_op_parallelism_threads(cpus)
        threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:
        raise RuntimeError(
            f"cannot size TensorFlow's thread pools to {cpus} CPU(s): TensorFlow already started "
            f"with {threading.get_intra_op_parallelism_threads()} intra-op and "
            f"{threading.get_inter_op_parallelism_threads()} inter-op threads (0: one per core). Call "
            "configure_cpu_threads at the start of the program, before any TensorFlow op or strategy."
        ) from None


def slurm_cluster_resolver(port_base: int = 8888, ps: int = 0) -> tf.distribute.cluster_resolver.SlurmClusterResolver:
    """The cluster of the Slurm job step this process runs in, for `get_strategy(cluster_resolver=...)`.

    Use it in a script started by `srun` (one task per worker): every task becomes a
    "worker" (task 0 the chief), at `<node>:<port_base + its index on the node>`, from
    Slurm's SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST and
    SLURM_STEP_TASKS_PER_NODE. With `ps` > 0 the step is a parameter-server cluster: task 0
    is the chief, tasks 1 to `ps` the parameter servers, the rest the workers. TensorFlow's
    `SlurmClusterResolver` counts each node's GPUs
    with `nvidia-smi`, fails where there is none, and with 0 GPUs gives no task an address.
    On a node without GPUs (no `nvidia-smi`, no CUDA_VISIBLE_DEVICES) the resolver here
    counts one nominal device per task, which only numbers the ports, and sets no
    CUDA_VISIBLE_DEVICES; with GPUs, TensorFlow's resolver gives each task its share.

    Example (tutorials/slurm/cifar10.sbatch):
        strategy = lepton_keras.distribute.get_strategy(
            cluster_resolver=lepton_keras.distribute.slurm_cluster_resolver())

    Raises:
        ValueError: `port_base` is not a port number, `ps` not an integer >= 0, or the step has
            fewer than `ps` + 2 tasks (a chief and a worker besides the parameter servers).
        KeyError: not inside a Slurm job step (SLURM_PROCID is unset).
    """
    port_base = check_int("port_base", port_base, minimum=1, maximum=65535)
    ps = check_int("ps", ps, minimum=0)
    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)
    jobs = None
    if ps:
        if tasks < ps + 2:
            raise invalid("ps", ps, f"at most the step's {tasks} task(s) - 2 (a chief and a worker besides)")
        jobs = {"chief": 1, "ps": ps, "worker": tasks - 1 - ps}  # ranks in sorted order: chief, ps, worker
    if "CUDA_VISIBLE_DEVICES" in os.environ or shutil.which("nvidia-smi") is not None:
        return resolver(jobs=jobs, port_base=port_base)
    return resolver(jobs=jobs, port_base=port_base, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False)


def _cluster_configured(cluster_resolver) -> bool:
    if cluster_resolver is not None:
        return True
    return cluster.parse_tf_config(os.environ.get(cluster.TF_CONFIG_ENV)) is not None


def _has_parameter_servers(cluster_resolver) -> bool:
    if cluster_resolver is not None:
        return "ps" in cluster_resolver.cluster_spec().as_dict()
    return cluster.task_info().parameter_servers > 0


def _communication_options(communication: str, bytes_per_pack: int):
    communication = check_choice("communication", communication, COMMUNICATION_IMPLEMENTATIONS)
    bytes_per_pack = check_int("bytes_per_pack", bytes_per_pack, minimum=0)
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
    gradient_communication: GradientCommunication | None = None,
    periodic_sync: PeriodicSync | None = None,
) -> tf.distribute.Strategy:
    """Returns the strategy for this machine or cluster.

    Args:
        kind: "auto" (default), "default" (one device), "mirrored" (all local GPUs, or
            `cpu_replicas` logical CPUs), "multi_worker" (MultiWorkerMirroredStrategy) or
            "parameter_server" (ParameterServerStrategy: a cluster with "ps" tasks; on a worker
            or parameter server `get_strategy` serves the chief and never returns).
        cpu_replicas: split the CPU into this many logical devices and mirror over them
            (only for "auto" and "mirrored", and only on a machine without GPUs).
        cluster_resolver: a `tf.distribute.cluster_resolver.ClusterResolver` (such as
            `SlurmClusterResolver`) used instead of TF_CONFIG.
        communication: collective implementation for multi-worker all-reduce:
            "auto" (default), "ring" or "nccl".
        bytes_per_pack: pack the gradients of a multi-worker all-reduce into chunks of
            about this many bytes, one collective each (default 0: TensorFlow packs them
            into a single chunk). TensorFlow packs in the order Keras lists the gradients
            (first layers first); `gradient_communication`'s buckets go in backward order.
        gradient_communication: a `GradientCommunication` (buckets in backward order,
            16-bit compression) that every optimizer under this strategy, Keras's and
            lepton_keras's, sums its gradients with (default None: Keras's single
            all-reduce); see `lepton_keras.distribute.gradient_communication`.
        periodic_sync: a `PeriodicSync` (replicas that train on their own shards and average
            every H steps: local SGD, post-local SGD, DiLoCo) for every model trained under
            this strategy (default None: the gradient all-reduce of every step); see
            `lepton_keras.distribute.periodic_sync`.

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
        ValueError: unknown kind or communication, malformed TF_CONFIG (checked before
            TensorFlow sees it: see `cluster.validate_cluster`), "multi_worker" without a cluster,
            "parameter_server" without "ps" tasks or another kind with them, gradient_communication
            or periodic_sync under parameter-server training, or cpu_replicas with GPUs or a cluster.
        RuntimeError: cpu_replicas asked for after TensorFlow initialised its devices; this
            process is TF_CONFIG's evaluator task (`cluster.refuse_evaluator`).
    """
    kind = check_choice("kind", kind, STRATEGY_KINDS)
    cpu_replicas = check_int("cpu_replicas", cpu_replicas, minimum=1, allow_none=True)
    resolver_type = tf.distribute.cluster_resolver.ClusterResolver
    if cluster_resolver is not None and not isinstance(cluster_resolver, resolver_type):
        raise invalid("cluster_resolver", cluster_resolver, "a tf.distribute.cluster_resolver.ClusterResolver or None")
    options = _communication_options(communication, bytes_per_pack)
    has_cluster = _cluster_configured(cluster_resolver)  # validates TF_CONFIG
    if has_cluster and cluster_resolver is None:
        cluster.refuse_evaluator(cluster.task_info())
    has_parameter_servers = has_cluster and _has_parameter_servers(cluster_resolver)
    if kind == "auto":
        if has_parameter_servers:
            kind = "parameter_server"
        elif has_cluster:
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

    if gradient_communication is not None and not isinstance(gradient_communication, GradientCommunication):
        raise invalid("gradient_communication", gradient_communication, "a GradientCommunication or None")
    if periodic_sync is not None and not isinstance(periodic_sync, PeriodicSync):
        raise invalid("periodic_sync", periodic_sync, "a PeriodicSync or None")
    if (kind == "parameter_server") != has_parameter_servers:
        raise ValueError(
            'kind="parameter_server" needs a cluster with "ps" tasks (TF_CONFIG or cluster_resolver)'
            if kind == "parameter_server"
            else f'kind={kind!r} cannot run on a cluster with "ps" tasks: use kind="parameter_server" or "auto"'
        )
    if kind == "parameter_server":
        needs_all_reduce = {  # a setting that changes what the all-reduce of synchronous replicas does
            "gradient_communication": (
                gradient_communication is not None and not gradient_communication.is_keras_default
            ),
            "periodic_sync": periodic_sync is not None and not periodic_sync.is_synchronous,
        }
        for name in (name for name, refused in needs_all_reduce.items() if refused):
            raise ValueError(
                f"{name} applies to synchronous replicas (all-reduce); under parameter-server training "
                f"each step updates the parameter servers on its own: leave {name}=None"
            )
        gradient_communication, periodic_sync = None, None

    strategy = _new_strategy(kind, cpu_replicas, has_cluster, cluster_resolver, options)
    if gradient_communication is not None:
        set_gradient_communication(strategy, gradient_communication)
    if periodic_sync is not None:
        set_periodic_sync(strategy, periodic_sync)
    return strategy


def _new_strategy(kind, cpu_replicas, has_cluster, cluster_resolver, options) -> tf.distribute.Strategy:
    if kind == "parameter_server":
        from lepton_keras.distribute import parameter_server

        return parameter_server.new_strategy(cluster_resolver)
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


_barrier_ids = itertools.count()
WORKERS_OUTLIVE_JOB_ENV = "LEPTON_KERAS_WORKERS_OUTLIVE_JOB"


def finish_job(strategy=None, *, timeout_seconds: float = 600.0) -> None:
    """Ends a multi-worker job cleanly; call it last, on every worker, after training.

    TensorFlow's coordination service runs inside the chief (the leader task) and expects a
    heartbeat from every worker about every 5 seconds until the job ends, but it is never
    shut down when a Python process exits. When the chief exits first, a worker still alive
    logs "Failed to send RPC to coordination service"; when a worker exits first and the
    chief lives on for more than about 10 seconds (writing plots or checkpoints), the chief
    logs "The following tasks are unhealthy (stopped sending heartbeats)" and the task
    names on the next line. `finish_job` makes every worker wait at a coordination-service
    barrier until all have finished, then lets the others exit while the chief waits until
    their servers are gone, so the chief exits last. A no-op without a multi-worker cluster
    (and on an evaluator task, and under parameter-server training).

    Where the worker processes outlive the training function (Ray Train's workers are actors
    that Ray stops after the run), the environment variable `LEPTON_KERAS_WORKERS_OUTLIVE_JOB=1`
    (`lepton_keras.integrations.ray` sets it) keeps the barrier and skips the wait for the
    others' exit, which would never come; the engine then stops the processes together.

    Args:
        strategy: the strategy of the job (default: the current one).
        timeout_seconds: how long to wait for the other workers, at the barrier and again
            for their exit (default 600).

    Example:
        strategy = lepton_keras.distribute.get_strategy()
        ...
        model.fit(...)
        lepton_keras.distribute.finish_job(strategy)

    Raises:
        tf.errors.DeadlineExceededError: a worker did not reach the barrier in time.
        tf.errors.UnavailableError: a worker failed before reaching it.
    """
    timeout_seconds = check_positive("timeout_seconds", timeout_seconds)
    strategy = tf.distribute.get_strategy() if strategy is None else check_strategy("strategy", strategy)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type not in ("chief", "worker") or cluster.task_info(strategy).parameter_servers:
        return  # (parameter-server training has no coordination service: the launcher or engine stops the servers)
    from tensorflow.python.eager import context  # the only Python access to the coordination service

    context.context().wait_at_barrier(f"lepton_keras/finish_job/{next(_barrier_ids)}", int(timeout_seconds * 1000))
    if not cluster.task_info(strategy).is_chief or os.environ.get(WORKERS_OUTLIVE_JOB_ENV) == "1":
        return
    spec, own = resolver.cluster_spec(), (resolver.task_type, int(resolver.task_id or 0))
    others = [
        spec.task_address(kind, index)
        for kind in ("chief", "worker") if kind in spec.jobs
        for index in spec.task_indices(kind) if (kind, index) != own
    ]  # fmt: skip
    deadline = time.monotonic() + timeout_seconds
    while any(_accepts_connections(address) for address in others) and time.monotonic() < deadline:
        time.sleep(0.05)


def _accepts_connections(address: str) -> bool:
    """Whether a worker's TensorFlow server still listens at "host:port" (it closes with the process)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
    except OSError:
        return False
    return True
