"""Optimizers Keras 3 lacks, wrappers that are correct under distribution, SAM, and a registry.

    optimizer = lepton_keras.optimizers.get("lookahead_radam", learning_rate=1e-3)
    lepton_keras.optimizers.list_optimizers("ada*")

Classes load on first use, so the registry is cheap to import.
"""

import importlib

from lepton_keras.optimizers.registry import get, list_optimizers

_LAZY = {
    "AdaBelief": "adabelief",
    "Adan": "adan",
    "AdEMAMix": "ademamix",
    "AdaptiveGradientClipping": "adaptive_gradient_clipping",
    "ExponentialMovingAverage": "weight_averaging",
    "FusedUpdates": "fused_updates",
    "GradientAccumulation": "gradient_accumulation",
    "GradientCentralization": "gradient_centralization",
    "GradientClipping": "gradient_clipping",
    "LARS": "lars",
    "LeptonOptimizer": "base",
    "Lookahead": "lookahead",
    "MADGRAD": "madgrad",
    "NovoGrad": "novograd",
    "OptimizerWrapper": "wrapper",
    "Prodigy": "prodigy",
    "RAdam": "radam",
    "SharpnessAwareModel": "sam",
    "StochasticWeightAveraging": "weight_averaging",
    "Yogi": "yogi",
    "recompute_batch_norm_statistics": "weight_averaging",
}

__all__ = ["get", "list_optimizers", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
