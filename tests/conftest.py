"""Test set-up: 4 logical CPU devices, configured once before TensorFlow initialises; Keras as lepton_keras leaves it."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("TF_CONFIG", None)  # the suite's own process is never part of a cluster

from lepton_keras.distribute import configure_cpu_devices  # noqa: E402

CPU_DEVICES = 4
configure_cpu_devices(CPU_DEVICES)


import pytest  # noqa: E402

from lepton_keras.distribute import keras_compat  # noqa: E402


@pytest.fixture(autouse=True)
def keras_as_import_lepton_keras_leaves_it():
    """Some tests undo lepton_keras's Keras fixes (`keras_compat.unpatch_keras`); every test starts with what
    `import lepton_keras` installs (the first-build probe of Keras's ScheduleFreeAdamW; the other fixes are
    installed by what uses them)."""
    keras_compat.probe_keras_schedule_free_at_first_build()
