"""Strategies, cluster and chief helpers, batch arithmetic, large-batch scaling and the local launcher.

The TensorFlow-free parts (cluster, batch, large-batch scaling, input plan, launcher, the
gradient-communication and periodic-sync settings) import immediately; the strategy helpers load on first use, so the `lepton-keras`
command, which skips the package's eager imports, launches workers without loading TensorFlow.
"""

import importlib

from lepton_keras.distribute.batch import global_batch_size, per_replica_batch_size, scale_learning_rate
from lepton_keras.distribute.cluster import TaskInfo, chief_path, is_chief, task_info, worker_path
from lepton_keras.distribute.gradient_communication import (
    GradientCommunication,
    gradient_communication,
    set_gradient_communication,
)
from lepton_keras.distribute.large_batch import ScaledRecipe, scale_recipe
from lepton_keras.distribute.periodic_sync import PeriodicSync, periodic_sync, set_periodic_sync

_LAZY = {
    "get_strategy": "strategy",
    "configure_cpu_devices": "strategy",
    "configure_cpu_threads": "strategy",
    "finish_job": "strategy",
    "slurm_cluster_resolver": "strategy",
    "patch_keras_for_multi_worker": "keras_compat",
    "synchronize_replicas": "replica_averaging",
    "observed_staleness": "parameter_server",
}

__all__ = [
    "GradientCommunication",
    "PeriodicSync",
    "ScaledRecipe",
    "TaskInfo",
    "chief_path",
    "global_batch_size",
    "gradient_communication",
    "is_chief",
    "per_replica_batch_size",
    "periodic_sync",
    "scale_recipe",
    "scale_learning_rate",
    "set_gradient_communication",
    "set_periodic_sync",
    "task_info",
    "worker_path",
    *_LAZY,
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    except Exception as error:
        # `from lepton_keras.distribute import name` would turn an AttributeError raised while
        # importing into "cannot import name", hiding its cause: name the cause instead.
        raise ImportError(f"{__name__}.{_LAZY[name]} failed to import: {type(error).__name__}: {error}") from error
    return getattr(module, name)
