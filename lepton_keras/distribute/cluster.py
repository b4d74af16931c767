"""Who am I in the cluster: TF_CONFIG parsing, the chief, and per-worker paths.

Nothing here imports TensorFlow, so the launcher and the CLI stay light. Every
function takes an optional `strategy`; without one it reads `TF_CONFIG`.

A cluster with "ps" tasks is a parameter-server cluster: the chief runs the script and
coordinates, the workers and parameter servers serve (`lepton_keras.distribute.parameter_server`).

Under MultiWorkerMirroredStrategy every worker runs every callback. Files must
then be written either once (by the chief: checkpoints, TensorBoard logs, plots)
or once per worker (BackupAndRestore, which each worker restores from itself).
`chief_path` and `worker_path` give each worker a path that no other worker uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from lepton_keras.validation import check_path, check_strategy, invalid

TF_CONFIG_ENV = "TF_CONFIG"
TASK_TYPES = ("chief", "worker", "evaluator", "ps")
_WORKER_TASK_TYPES = ("chief", "worker")
# A host name, an IPv4 address or a bracketed IPv6 address, then ":" and the port.
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]+)$")


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """This process's place in the cluster.

    Attributes:
        task_type: "chief", "worker", "evaluator" or "ps"; "worker" when there is no cluster.
        task_index: index within `task_type`.
        num_workers: number of training processes (chief plus workers; the workers alone in a
            parameter-server cluster, where the chief coordinates); 1 without a cluster.
        worker_index: position among the training processes (the chief first), the shard
            of the data this process reads; None on an evaluator, on a parameter server and on
            the coordinating chief of a parameter-server cluster, which train on no shard.
        is_chief: True for the one process that writes shared files.
        parameter_servers: number of "ps" tasks (0: no parameter-server training).
    """

    task_type: str
    task_index: int
    num_workers: int
    worker_index: int | None
    is_chief: bool
    parameter_servers: int = 0


def refuse_evaluator(info: TaskInfo) -> TaskInfo:
    """Returns `info` of a training process; refuses an evaluator task, which trains nothing.

    A cluster spec may name an "evaluator" (a Kubeflow TFJob's `Evaluator` replica).
    MultiWorkerMirroredStrategy trains on the chief and workers only, and lepton_keras runs
    no side-car evaluator: a training script started there would train alone on a data shard
    no one else reads. `get_strategy()` and the data shards refuse it instead.

    Raises:
        RuntimeError: on the evaluator, saying what to do instead.
    """
    if info.task_type == "evaluator":
        raise RuntimeError(
            f'this process is the "evaluator" task of {TF_CONFIG_ENV}, and lepton_keras trains on the "chief" '
            'and "worker" tasks only (it runs no side-car evaluator). Remove the evaluator from the cluster '
            "(in a TFJob, the Evaluator replica spec) and evaluate with fit's validation_data, or load the "
            "chief's checkpoints (ChiefModelCheckpoint) in a job of their own"
        )
    return info


def _check_address(name: str, address) -> str:
    match = _ADDRESS.match(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise invalid(name, address, 'a "host:port" address with a port in 1-65535')
    return address


def validate_cluster(cluster, task_type, task_index) -> None:
    """Checks a cluster and this process's task in it, before TensorFlow sees them.

    The cluster maps task types ("chief", "worker", "evaluator", "ps") to non-empty lists of
    "host:port" addresses; there is at least one chief or worker, at most one chief and one
    evaluator, "ps" tasks only beside a chief and a worker, and no address twice. The task type
    is in the cluster and the index in range.

    Raises:
        ValueError: naming TF_CONFIG, the offending entry and the value.
    """
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f'{TF_CONFIG_ENV} needs a non-empty "cluster" object, received: {cluster!r}')
    seen = {}
    for kind, addresses in cluster.items():
        if kind not in TASK_TYPES:
            known = ", ".join(TASK_TYPES)
            raise ValueError(f"{TF_CONFIG_ENV} cluster has an unknown task type {kind!r}; known: {known}")
        if not isinstance(addresses, list) or not addresses:
            raise invalid(f'{TF_CONFIG_ENV} cluster["{kind}"]', addresses, 'a non-empty list of "host:port" strings')
        for position, address in enumerate(addresses):
            name = f'{TF_CONFIG_ENV} cluster["{kind}"][{position}]'
            if _check_address(name, address) in seen:
                raise ValueError(
                    f"{TF_CONFIG_ENV}: the address {address!r} appears more than once ({seen[address]} and {name})"
                )
            seen[address] = name
    if not any(kind in cluster for kind in _WORKER_TASK_TYPES):
        raise ValueError(
            f"{TF_CONFIG_ENV} cluster needs at least one chief or worker task, received: {sorted(cluster)}"
        )
    if "ps" in cluster and not ("chief" in cluster and "worker" in cluster):
        missing = " and no ".join(f'"{kind}"' for kind in _WORKER_TASK_TYPES if kind not in cluster)
        raise ValueError(
            f'{TF_CONFIG_ENV} names "ps" tasks but has no {missing} task: parameter-server '
            'training needs one "chief" (it runs the script and coordinates) and at least one "worker" '
            f"(they run the steps), received: {sorted(cluster)}"
        )
    for kind in ("chief", "evaluator"):
        if len(cluster.get(kind, [])) > 1:
            raise ValueError(f"{TF_CONFIG_ENV} cluster may have at most one {kind}, received: {cluster[kind]!r}")
    if task_type not in cluster:
        raise ValueError(
            f"{TF_CONFIG_ENV} task type {task_type!r} is not in the cluster (task types: {sorted(cluster)})"
        )
    count = len(cluster[task_type])
    if not isinstance(task_index, int) or isinstance(task_index, bool) or not 0 <= task_index < count:
        raise ValueError(
            f"{TF_CONFIG_ENV} task index {task_index!r} is outside the cluster: "
            f'"{task_type}" has {count} address(es), so the index must be an integer in [0, {count - 1}]'
        )


def parse_tf_config(text: str | None) -> dict | None:
    """Validates a TF_CONFIG string and returns it as a dict (None when empty).

    The one check of TF_CONFIG: `task_info`, `is_chief` and `get_strategy` all call it, so a
    malformed cluster is an error that names the problem before TensorFlow tries to connect.

    Raises:
        ValueError: the text is not a JSON object, has no cluster or task, or fails
            `validate_cluster` (parameter servers without a chief and a worker, bad addresses,
            two chiefs, duplicates, a task outside the cluster).
    """
    if not text or not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{TF_CONFIG_ENV} is not valid JSON ({error}): {text!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{TF_CONFIG_ENV} must be a JSON object, received: {text!r}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f'{TF_CONFIG_ENV} needs a non-empty "cluster" object, received: {text!r}')
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f'{TF_CONFIG_ENV} needs a "task" with "type" and "index", received: {text!r}')
    validate_cluster(cluster, task["type"], task["index"])
    return config


def task_info(strategy=None) -> TaskInfo:
    """Describes this process: from `strategy`'s cluster resolver if given, else from TF_CONFIG."""
    resolver = getattr(check_strategy("strategy", strategy), "cluster_resolver", None)
    if resolver is not None and resolver.task_type is not None:
        cluster = resolver.cluster_spec().as_dict()
        task_type, task_index = resolver.task_type, int(resolver.task_id or 0)
    else:
        config = parse_tf_config(os.environ.get(TF_CONFIG_ENV))
        if config is None:
            return TaskInfo("worker", 0, 1, 0, True)
        cluster, task_type, task_index = config["cluster"], config["task"]["type"], config["task"]["index"]
    has_chief = bool(cluster.get("chief"))
    parameter_servers = len(cluster.get("ps", []))
    chief = task_type == "chief" if has_chief else (task_type == "worker" and task_index == 0)
    if parameter_servers:  # the chief coordinates; the workers train
        worker_index = task_index if task_type == "worker" else None
        return TaskInfo(task_type, task_index, len(cluster["worker"]), worker_index, chief, parameter_servers)
    num_workers = sum(len(cluster.get(t, [])) for t in _WORKER_TASK_TYPES)
    worker_index = None if task_type == "evaluator" else task_index + (1 if has_chief and task_type == "worker" else 0)
    return TaskInfo(task_type, task_index, max(num_workers, 1), worker_index, chief)


def is_chief(strategy=None) -> bool:
    """True for the process that writes shared files: the "chief" task, or worker 0 without one."""
    return task_info(strategy).is_chief


def worker_path(path: str | os.PathLike, strategy=None) -> str:
    """A path of this worker's own under `path`, for state that every worker saves and restores.

    Use it for `keras.callbacks.BackupAndRestore(backup_dir=worker_path(dir))`: each worker
    backs up to and restores from `path/worker_<i>`. With a single process, `path` itself.
    """
    path = check_path("path", path)
    info = task_info(strategy)
    if info.num_workers == 1 and info.task_type == "worker":
        return path
    return os.path.join(path, f"{info.task_type}_{info.task_index}")


def chief_path(path: str | os.PathLike, strategy=None) -> str:
    """`path` on the chief; a private scratch path on every other worker.

    Use it for files that should be written once, such as
    `keras.callbacks.ModelCheckpoint(chief_path("ckpt/model.keras"))` or
    `keras.callbacks.TensorBoard(chief_path("logs"))`. Non-chief workers must still run the
    callback (saving can involve collective operations), so they write to
    `<dirname>/.workers/<task>_<i>/<basename>`, which no one else uses.
    """
    path = check_path("path", path)
    info = task_info(strategy)
    if info.is_chief:
        return path
    head, tail = os.path.split(path.rstrip(os.sep)) if path.rstrip(os.sep) else ("", path)
    return os.path.join(head, ".workers", f"{info.task_type}_{info.task_index}", tail)
