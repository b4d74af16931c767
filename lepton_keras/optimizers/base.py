"""The base of lepton_keras's optimizers: shared argument checks and fused (XLA-compiled) updates.

Every optimizer keeps its math in a pure function that returns new values. `run_update`
calls it either as is, or compiled with XLA into one kernel per call (`fused`): without
fusion, TensorFlow runs each element-wise operation of the update as its own pass over
memory; fused, the update reads the gradient, the variable and its slots once and writes
the results once, like Keras's Adam inside a `jit_compile` train step.
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf

# --- argument checks ---------------------------------------------------------------------


def check_unit_interval(name: str, value, *, open_at_zero: bool = False) -> float:
    """`value` as a float in [0, 1) ((0, 1) with `open_at_zero`); else ValueError naming it."""
    low_ok = isinstance(value, numbers.Real) and (value > 0.0 if open_at_zero else value >= 0.0)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (low_ok and value < 1.0):
        raise ValueError(f"{name} must be a number in {'(0' if open_at_zero else '[0'}, 1), received: {value!r}")
    return float(value)


def check_non_negative(name: str, value, *, allow_none: bool = False, finite: bool = False) -> float | None:
    """`value` as a float >= 0 (and < inf with `finite`; None passes with `allow_none`); else ValueError."""
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0.0
            or (finite and value == float("inf"))):  # fmt: skip
        kind = "a finite non-negative number" if finite else "a non-negative number"
        raise ValueError(f"{name} must be {kind}{' or None' if allow_none else ''}, received: {value!r}")
    return float(value)


def check_number(name: str, value, condition, description: str) -> float:
    """`value` as a float when `condition(value)` holds; else ValueError "<name> must be <description>"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not condition(value):
        raise ValueError(f"{name} must be {description}, received: {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """`value` when it is True or False; else ValueError naming it."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, received: {value!r}")
    return value


# --- fused updates -----------------------------------------------------------------------

# One XLA-compiled tf.function per pure update function, shared by every optimizer instance:
# it only ever receives tensors and Python numbers, so a trace holds no variable.
_COMPILED: dict = {}


def compiled_update(function):
    """The XLA-compiled (`jit_compile=True`) tf.function of a pure update function (cached)."""
    compiled = _COMPILED.get(function)
    if compiled is None:
        # reduce_retracing: one trace serves every shape of a rank (XLA still compiles per shape).
        compiled = tf.function(function, jit_compile=True, autograph=False, reduce_retracing=True)
        _COMPILED[function] = compiled
    return compiled


def _as_input(value):
    """A value a compiled update may take: variables read into tensors, sparse gradients made dense."""
    if isinstance(value, keras.Variable):
        value = value.value
    if isinstance(value, (tf.Variable, tf.IndexedSlices)):
        # In a tf.distribute update this reads the copy of the device being updated.
        return tf.convert_to_tensor(value)
    return value


def run_update(function, *args, fused: bool, **kwargs):
    """`function(*args, **kwargs)`; with `fused`, compiled by XLA into one kernel.

    Variables among the arguments are passed as their current values, so the compiled
    function never captures a variable (under MirroredStrategy it runs once per device,
    on that device's copies); Python numbers and bools are fixed in the trace. The caller
    assigns the returned values.
    """
    if not fused:
        return function(*args, **kwargs)
    args = tuple(_as_input(value) for value in args)
    kwargs = {key: _as_input(value) for key, value in kwargs.items()}
    return compiled_update(function)(*args, **kwargs)


@keras.saving.register_keras_serializable(package="lepton_keras")
class LeptonOptimizer(keras.optimizers.Optimizer):
    """The base of lepton_keras's optimizers: Keras's Optimizer with fused (XLA-compiled) updates.

    Subclasses keep their math in a pure function `<name>_update(...)` and call it through
    `self.run_update(...)` in `update_step`, then assign the values it returns.

    Args:
        learning_rate: a float, a `keras.optimizers.schedules.LearningRateSchedule` or a
            callable.
        fused_updates: compile each variable's update with XLA into one kernel that reads
            the gradient, the variable and its slots once (default True). False runs the
            same operations one by one (the same numbers within float rounding).
        **kwargs: Keras's optimizer keywords (weight_decay, clipnorm, ..., name).
    """

    def __init__(self, learning_rate, *, fused_updates: bool = True, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.fused_updates = check_bool("fused_updates", fused_updates)

    def run_update(self, function, *args, **kwargs):
        """`function(*args, **kwargs)`, XLA-compiled when `fused_updates` (see `run_update`)."""
        return run_update(function, *args, fused=self.fused_updates, **kwargs)

    def get_config(self):
        return {**super().get_config(), "fused_updates": self.fused_updates}
