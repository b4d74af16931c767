"""The optimizer table: the `SPECS` rows of every tests/optimizers/test_*.py, and the model the shared tests train.

Each optimizer's test file holds its own row (`SPECS = [OptimizerSpec(...)]`) beside its own
tests; tests/optimizers/test_table.py runs the shared tests over all of them. Worker and harness
processes import this module by name, so its functions take only JSON-friendly arguments (the
spec's name).
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import random

import numpy as np

from tests.support.optimizer_spec import OptimizerSpec

_OPTIMIZER_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "optimizers")


@functools.cache
def all_specs() -> tuple[OptimizerSpec, ...]:
    """Every row, in file order. Importing the test modules leaves the process's random state as it was:
    a worker calls this after seeding, and a module that builds a Keras layer at import draws a seed."""
    specs = []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        for path in sorted(glob.glob(os.path.join(_OPTIMIZER_TESTS, "test_*.py"))):
            module = importlib.import_module(f"tests.optimizers.{os.path.splitext(os.path.basename(path))[0]}")
            specs.extend(getattr(module, "SPECS", ()))
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
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


def keras_optimizer_classes() -> list[str]:
    """The names of every optimizer class this Keras exports (`keras.optimizers.<Name>`), but the
    base class and the loss-scaling wrapper: what a new Keras release adds joins the checks."""
    import inspect

    import keras

    skipped = (keras.optimizers.Optimizer, keras.optimizers.LossScaleOptimizer)
    return sorted(
        name for name, value in vars(keras.optimizers).items()
        if inspect.isclass(value) and issubclass(value, keras.optimizers.Optimizer) and value not in skipped
    )  # fmt: skip


def keras_optimizer_model(class_name: str):
    """The regression network of `regression_model`, compiled with Keras's `class_name` optimizer at its defaults
    but a learning rate of 0.01. A class without a learning rate holds other optimizers (MultiOptimizer): Adam
    for the kernels, SGD for the biases."""
    import inspect

    import keras

    cls = getattr(keras.optimizers, class_name)
    if "learning_rate" in inspect.signature(cls).parameters:
        optimizer = cls(learning_rate=0.01)
    else:
        adam, sgd = keras.optimizers.Adam(0.01), keras.optimizers.SGD(0.01)
        optimizer = cls(lambda variable: adam if variable.path.endswith("kernel") else sgd)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model
