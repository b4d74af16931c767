"""lepton_keras: Keras 3 training that gives the same numbers on 1 device, N replicas and N workers.

Subpackages are imported on first use, so `lepton-keras launch` starts without loading TensorFlow:

    import lepton_keras
    strategy = lepton_keras.distribute.get_strategy()
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("callbacks", "data", "distribute", "initializers", "layers", "optimizers", "schedules")


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBPACKAGES])
