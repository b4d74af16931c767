"""Optimizers Keras 3 lacks, wrappers that are correct under distribution, SAM, and a registry.

    optimizer = lepton_keras.optimizers.get("lookahead_radam", learning_rate=1e-3)
    lepton_keras.optimizers.list_optimizers("ada*")
    model.compile(optimizer="radam", ...)   # every registry name, after `import lepton_keras`
"""

from lepton_keras.optimizers.adabelief import AdaBelief
from lepton_keras.optimizers.adan import Adan
from lepton_keras.optimizers.adaptive_gradient_clipping import AdaptiveGradientClipping
from lepton_keras.optimizers.ademamix import AdEMAMix
from lepton_keras.optimizers.base import LeptonOptimizer
from lepton_keras.optimizers.fused_updates import FusedUpdates
from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation
from lepton_keras.optimizers.gradient_centralization import GradientCentralization
from lepton_keras.optimizers.gradient_clipping import GradientClipping
from lepton_keras.optimizers.lars import LARS
from lepton_keras.optimizers.lookahead import Lookahead
from lepton_keras.optimizers.madgrad import MADGRAD
from lepton_keras.optimizers.novograd import NovoGrad
from lepton_keras.optimizers.prodigy import Prodigy
from lepton_keras.optimizers.radam import RAdam
from lepton_keras.optimizers.registry import get, list_optimizers, register_keras_names
from lepton_keras.optimizers.sam import SharpnessAwareModel
from lepton_keras.optimizers.weight_averaging import (
    ExponentialMovingAverage,
    StochasticWeightAveraging,
    recompute_batch_norm_statistics,
)
from lepton_keras.optimizers.wrapper import OptimizerWrapper
from lepton_keras.optimizers.yogi import Yogi

register_keras_names()

__all__ = [
    "AdEMAMix",
    "AdaBelief",
    "Adan",
    "AdaptiveGradientClipping",
    "ExponentialMovingAverage",
    "FusedUpdates",
    "GradientAccumulation",
    "GradientCentralization",
    "GradientClipping",
    "LARS",
    "LeptonOptimizer",
    "Lookahead",
    "MADGRAD",
    "NovoGrad",
    "OptimizerWrapper",
    "Prodigy",
    "RAdam",
    "SharpnessAwareModel",
    "StochasticWeightAveraging",
    "Yogi",
    "get",
    "list_optimizers",
    "recompute_batch_norm_statistics",
]
