"""Keras callbacks: adaptive learning rate, monitoring, fault handling and chief-aware checkpoints.

    model.fit(..., callbacks=[lepton_keras.callbacks.LearningRateWarmup(5), lepton_keras.callbacks.DivergenceGuard()])
"""

import importlib

_LAZY = {
    "AverageWeightsForEvaluation": "weight_averaging",
    "ChiefModelCheckpoint": "checkpoint",
    "CycleMomentum": "cycle_momentum",
    "DivergenceGuard": "divergence_guard",
    "LearningRateFinder": "lr_finder",
    "LearningRateMonitor": "monitor",
    "LearningRateWarmup": "warmup",
    "ReduceLROnPlateau": "reduce_lr_on_plateau",
    "TimeStopping": "time_stopping",
    "WorkerBackupAndRestore": "checkpoint",
    "find_learning_rate": "lr_finder",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
