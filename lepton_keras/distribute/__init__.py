"""Strategies, cluster and chief helpers, batch arithmetic and the local multi-worker launcher.

The TensorFlow-free parts (cluster, batch, launcher) import immediately; the strategy
helpers load TensorFlow on first use.
"""

import importlib

from lepton_keras.distribute.batch import global_batch_size, per_replica_batch_size, scale_learning_rate
from lepton_keras.distribute.cluster import TaskInfo, chief_path, is_chief, task_info, worker_path

_LAZY = {
    "get_strategy": "strategy",
    "configure_cpu_devices": "strategy",
    "patch_keras_for_multi_worker": "keras_compat",
}

__all__ = [
    "TaskInfo",
    "chief_path",
    "global_batch_size",
    "is_chief",
    "per_replica_batch_size",
    "scale_learning_rate",
    "task_info",
    "worker_path",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
