"""Test set-up: 4 logical CPU devices, configured once before TensorFlow initialises."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("TF_CONFIG", None)  # the suite's own process is never part of a cluster

from lepton_keras.distribute import configure_cpu_devices  # noqa: E402

CPU_DEVICES = 4
configure_cpu_devices(CPU_DEVICES)
