"""Who am I in the cluster: TF_CONFIG parsing, the chief, and per-worker paths.

Nothing here imports TensorFlow, so the launcher and the CLI stay light. Every
function takes an optional `strategy`; without one it reads `TF_CONFIG`.

Under MultiWorkerMirroredStrategy every worker runs every callback. Files must
then be written either once (by the chief: checkpoints, TensorBoard logs, plots)
or once per worker (BackupAndRestore, which each worker restores from itself).
`chief_path` and `worker_path` give each worker a path that no other worker uses.
"""

from __future__ import annotations

import dataclasses
import json
import os

TF_CONFIG_ENV = "TF_CONFIG"
_WORKER_TASK_TYPES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """This process's place in the cluster.

    Attributes:
        task_type: "chief", "worker", "evaluator" or "ps"; "worker" when there is no cluster.
        task_index: index within `task_type`.
        num_workers: number of training processes (chief plus workers); 1 without a cluster.
        worker_index: position among the training processes (the chief first), the shard
            of the data this process reads.
        is_chief: True for the one process that writes shared files.
    """

    task_type: str
    task_index: int
    num_workers: int
    worker_index: int
    is_chief: bool


def parse_tf_config(text: str | None) -> dict | None:
    """Validates a TF_CONFIG string and returns it as a dict (None when empty).

    Raises:
        ValueError: the text is not JSON, has no cluster or task, or names a task outside the cluster.
    """
    if not text or not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{TF_CONFIG_ENV} is not valid JSON ({error}): {text!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{TF_CONFIG_ENV} must be a JSON object, received: {text!r}")
    cluster = config.get("cluster")
    task = config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f'{TF_CONFIG_ENV} needs a non-empty "cluster" object, received: {text!r}')
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ValueError(
                f'{TF_CONFIG_ENV} cluster["{task_type}"] must be a list of "host:port" strings, '
                f"received: {addresses!r}"
            )
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f'{TF_CONFIG_ENV} needs a "task" with "type" and "index", received: {text!r}')
    task_type, index = task["type"], task["index"]
    if task_type not in cluster:
        raise ValueError(
            f"{TF_CONFIG_ENV} task type {task_type!r} is not in the cluster (task types: {sorted(cluster)})"
        )
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise ValueError(
            f"{TF_CONFIG_ENV} task index {index!r} is outside the cluster: "
            f'"{task_type}" has {len(cluster[task_type])} address(es), so the index must be in '
            f"[0, {len(cluster[task_type]) - 1}]"
        )
    return config


def task_info(strategy=None) -> TaskInfo:
    """Describes this process: from `strategy`'s cluster resolver if given, else from TF_CONFIG."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is not None and resolver.task_type is not None:
        cluster = resolver.cluster_spec().as_dict()
        task_type, task_index = resolver.task_type, int(resolver.task_id or 0)
    else:
        config = parse_tf_config(os.environ.get(TF_CONFIG_ENV))
        if config is None:
            return TaskInfo("worker", 0, 1, 0, True)
        cluster, task_type, task_index = config["cluster"], config["task"]["type"], config["task"]["index"]
    has_chief = bool(cluster.get("chief"))
    num_workers = sum(len(cluster.get(t, [])) for t in _WORKER_TASK_TYPES)
    chief = task_type == "chief" if has_chief else (task_type == "worker" and task_index == 0)
    worker_index = task_index + (1 if has_chief and task_type == "worker" else 0)
    return TaskInfo(task_type, task_index, max(num_workers, 1), worker_index, chief)


def is_chief(strategy=None) -> bool:
    """True for the process that writes shared files: the "chief" task, or worker 0 without one."""
    return task_info(strategy).is_chief


def worker_path(path: str | os.PathLike, strategy=None) -> str:
    """A path of this worker's own under `path`, for state that every worker saves and restores.

    Use it for `keras.callbacks.BackupAndRestore(backup_dir=worker_path(dir))`: each worker
    backs up to and restores from `path/worker_<i>`. With a single process, `path` itself.
    """
    info = task_info(strategy)
    if info.num_workers == 1 and info.task_type == "worker":
        return os.fspath(path)
    return os.path.join(os.fspath(path), f"{info.task_type}_{info.task_index}")


def chief_path(path: str | os.PathLike, strategy=None) -> str:
    """`path` on the chief; a private scratch path on every other worker.

    Use it for files that should be written once, such as
    `keras.callbacks.ModelCheckpoint(chief_path("ckpt/model.keras"))` or
    `keras.callbacks.TensorBoard(chief_path("logs"))`. Non-chief workers must still run the
    callback (saving can involve collective operations), so they write to
    `<dirname>/.workers/<task>_<i>/<basename>`, which no one else uses.
    """
    info = task_info(strategy)
    path = os.fspath(path)
    if info.is_chief:
        return path
    head, tail = os.path.split(path.rstrip(os.sep)) if path.rstrip(os.sep) else ("", path)
    return os.path.join(head, ".workers", f"{info.task_type}_{info.task_index}", tail)
