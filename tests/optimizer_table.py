"""The optimizer table: every `SPECS` row of tests/optimizer_specs_*.py, and the models the shared tests train.

Worker and harness processes import this module by name, so its functions take only
JSON-friendly arguments (the spec's name).
"""

from __future__ import annotations

import functools
import glob
import importlib
import os

import numpy as np

from tests.optimizer_spec import OptimizerSpec

_HERE = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def all_specs() -> tuple[OptimizerSpec, ...]:
    specs = []
    for path in sorted(glob.glob(os.path.join(_HERE, "optimizer_specs_*.py"))):
        module = importlib.import_module(f"tests.{os.path.splitext(os.path.basename(path))[0]}")
        specs.extend(module.SPECS)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"optimizer table rows share names: {duplicates}")
    return tuple(specs)


def spec_named(name: str) -> OptimizerSpec:
    return next(spec for spec in all_specs() if spec.name == name)


def regression_model(spec_name: str, jit_compile: bool = False):
    """A small two-layer regression network compiled with the spec's optimizer and options."""
    import keras

    spec = spec_named(spec_name)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)]
    )
    model.compile(optimizer=spec.make(**spec.options), loss="mse", jit_compile=jit_compile)
    return model


def regression_data(count: int, seed: int):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(count, 8)).astype(np.float32)
    weights = rng.normal(size=(8, 2)).astype(np.float32)
    return inputs, (np.tanh(inputs @ weights) + 0.5).astype(np.float32)
