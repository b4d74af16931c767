"""Models and data shared by the suite and its worker processes: the tutorial CNN, real CIFAR-10 images, one regression set."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import numpy as np

from tests.support.harness import REPO_ROOT


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


def regression_data(count: int, seed: int, features: int = 8, targets: int = 2):
    """`count` rows of standard normal features and targets from a fixed random linear map plus 0.1 noise (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, features)).astype(np.float32)
    y = x @ rng.normal(size=(features, targets)) + 0.1 * rng.normal(size=(count, targets))
    return x, y.astype(np.float32)
