"""Keras callbacks: adaptive learning rate, monitoring, fault handling and chief-aware checkpoints.

    model.fit(..., callbacks=[lepton_keras.callbacks.LearningRateWarmup(5), lepton_keras.callbacks.DivergenceGuard()])
"""

from lepton_keras.callbacks.checkpoint import ChiefModelCheckpoint, WorkerBackupAndRestore
from lepton_keras.callbacks.cycle_momentum import CycleMomentum
from lepton_keras.callbacks.divergence_guard import DivergenceGuard
from lepton_keras.callbacks.lr_finder import LearningRateFinder, find_learning_rate
from lepton_keras.callbacks.monitor import LearningRateMonitor
from lepton_keras.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from lepton_keras.callbacks.schedule_free import ScheduleFreeEvaluation, schedule_free_eval
from lepton_keras.callbacks.time_stopping import TimeStopping
from lepton_keras.callbacks.warmup import LearningRateWarmup
from lepton_keras.callbacks.weight_averaging import AverageWeightsForEvaluation

__all__ = [
    "AverageWeightsForEvaluation",
    "ChiefModelCheckpoint",
    "CycleMomentum",
    "DivergenceGuard",
    "LearningRateFinder",
    "LearningRateMonitor",
    "LearningRateWarmup",
    "ReduceLROnPlateau",
    "ScheduleFreeEvaluation",
    "TimeStopping",
    "WorkerBackupAndRestore",
    "find_learning_rate",
    "schedule_free_eval",
]
