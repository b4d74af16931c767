"""Models and data for the strategy-equivalence harness (importable by worker processes)."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import numpy as np

from tests.harness import REPO_ROOT


@functools.cache
def tutorial_module(name: str = "cifar10_cnn"):
    """tutorials/<name>.py, imported from its path."""
    path = os.path.join(REPO_ROOT, "tutorials", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_tutorial", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def tutorial_cnn_adam():
    """The tutorial's CNN, compiled as the tutorial does: Adam, categorical cross-entropy."""
    import keras

    model = tutorial_module().build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def cifar10_sample(count: int, seed: int):
    """`count` real CIFAR-10 images from the bundled sample (float32 in [0, 1]) and one-hot labels."""
    from lepton_keras.data import load_cifar10

    data = load_cifar10("sample", shard=None, validation_size=0)
    chosen = np.random.default_rng(seed).choice(len(data.train_labels), count, replace=False)
    images = data.train_images[chosen].astype(np.float32) / 255.0
    return images, np.eye(10, dtype=np.float32)[data.train_labels[chosen]]
