"""Learning-rate schedules (keras.optimizers.schedules.LearningRateSchedule subclasses).

    schedule = lepton_keras.schedules.Warmup(keras.optimizers.schedules.CosineDecay(1e-3, 10_000), 500)
"""

import importlib

_LAZY = {
    "CyclicalLearningRate": "cyclical",
    "InverseSquareRootDecay": "inverse_sqrt",
    "MultipliedSchedule": "multiplier",
    "OneCycle": "one_cycle",
    "Warmup": "warmup",
    "WarmupStableDecay": "warmup_stable_decay",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
