"""lepton_keras: Keras 3 training that gives the same numbers on 1 device, N replicas and N workers.

`import lepton_keras` imports every subpackage, so every class is registered with Keras: a
`.keras` file holding lepton_keras objects loads with `keras.saving.load_model`, and
`model.compile(optimizer="radam")` or `kernel_initializer="delta_orthogonal"` work by name.

    import lepton_keras
    strategy = lepton_keras.distribute.get_strategy()

The `lepton-keras` command alone (launch, --help) imports only what it runs, so it answers
without loading TensorFlow.
"""

import importlib
import os
import sys

__version__ = "0.1.0"

_SUBPACKAGES = ("distribute", "initializers", "layers", "schedules", "optimizers", "callbacks", "data")


def _running_the_command() -> bool:
    """True in the process of the `lepton-keras` console script."""
    return os.path.basename(getattr(sys, "argv", [""])[0] or "") == "lepton-keras"


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBPACKAGES])


if not _running_the_command():
    from lepton_keras import _tensorflow_logs

    _tensorflow_logs.import_tensorflow()
    from lepton_keras import callbacks, data, distribute, initializers, layers, optimizers, schedules  # noqa: E402,F401
    from lepton_keras.distribute import keras_compat, strategy  # noqa: E402,F401
