"""The base of lepton_keras's optimizers: hyperparameter scalars and fused (XLA-compiled) updates.

Arguments are checked with `lepton_keras.validation`, the one module of checks.

Every optimizer keeps its math in a pure function that returns new values.
`update_in_place` assigns them, either op by op, or compiled with XLA into one kernel per
call (`fused`): without fusion, TensorFlow runs each element-wise operation of the update
as its own pass over memory and allocates its result; fused, XLA merges them into a few
loops (about one per slot) that write the variable and its slots in place, like Keras's
Adam inside a `jit_compile` train step.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.validation import check_bool, check_keras_optimizer_options, check_learning_rate

# --- hyperparameter scalars ----------------------------------------------------------------

# The dtype of the step-dependent scalars (bias corrections 1 - beta^t, warm-ups): float64,
# so that they are exact for float64 variables and correctly rounded for the others.
STEP_DTYPE = "float64"


def scalar(value, dtype):
    """`value` as a scalar tensor of `dtype`, rounded once.

    A Python float goes straight from double precision to `dtype`: `ops.cast(0.999, "float64")`
    first makes a float32 tensor (0.9990000128746033). Hyperparameter expressions such as
    `1.0 - self.beta_2` are therefore computed in Python, in double precision, and passed here.
    """
    if isinstance(value, (bool, int, float)):
        return tf.constant(value, dtype)
    return ops.cast(value, dtype)


def step_number(iterations):
    """t = iterations + 1, the 1-based number of the step in progress, as a `STEP_DTYPE` scalar."""
    return ops.cast(iterations, STEP_DTYPE) + 1.0


def one_minus_power(beta: float, step):
    """1 - beta^step in `STEP_DTYPE` (a bias correction), for a Python float `beta` and `step_number`."""
    return 1.0 - ops.power(scalar(beta, STEP_DTYPE), step)


def snapshot(variable):
    """The value of a variable now, as a tensor; in cross-replica context, the first copy's value.

    `keras.ops.convert_to_tensor` and `keras.ops.cast` to the same dtype return a variable
    itself, whose later reads see the update.
    """
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return tf.convert_to_tensor(variable)


# --- reductions ---------------------------------------------------------------------------


def squared_norm(x, dtype):
    """||x||_2^2 in `dtype`: one TensorFlow reduction (L2Loss), which reads x once, on all cores.

    The layer-wise optimizers take their norms here, outside the fused update (XLA's CPU
    reductions to a scalar run on one thread); sum(square(x)) writes and reads a temporary as
    large as x (measured 1.6x slower on 33.6M parameters). L2Loss also compiles with XLA, for
    train steps with `jit_compile=True`.
    """
    return 2.0 * tf.nn.l2_loss(tf.cast(x, dtype))


# --- fused updates -----------------------------------------------------------------------

# One XLA-compiled tf.function per pure update function, shared by every optimizer instance.
# Variables reach it as resource handles, tensors like any other input: a trace references no
# variable (a tf.Variable argument would be kept by the trace, which then fails once that
# variable is deleted) and serves every device's copy of every variable of a shape and dtype.
_COMPILED: dict = {}


class _Read(NamedTuple):
    """Stands in the compiled function's arguments for the value of the variable `handles[index]`."""

    index: int
    dtype: str


def _one_per_target(function, target_count: int, *args, **kwargs) -> tuple:
    """`function(*args, **kwargs)` as a tuple of `target_count` results; else ValueError."""
    results = function(*args, **kwargs)
    results = results if isinstance(results, tuple) else (results,)
    if len(results) != target_count:
        raise ValueError(f"{function.__name__} returned {len(results)} values for {target_count} targets")
    return results


def _assigning(function):
    """The body that is compiled: `function` on the inputs, then the assignments of its results."""

    def assign_results(handles, target_dtypes, args, kwargs):
        def read(value):
            if isinstance(value, _Read):
                return tf.raw_ops.ReadVariableOp(resource=handles[value.index], dtype=value.dtype)
            return value

        results = _one_per_target(function, len(target_dtypes), *(read(value) for value in args),
                                  **{key: read(value) for key, value in kwargs.items()})
        for handle, dtype, result in zip(handles, target_dtypes, results):
            tf.raw_ops.AssignVariableOp(resource=handle, value=tf.cast(result, dtype))

    return assign_results


def compiled_update(function):
    """The XLA-compiled (`jit_compile=True`) tf.function that assigns a pure update's results (cached).

    It is called as `compiled(handles, target_dtypes, args, kwargs)`: the variables' resource
    handles, the targets first; the targets' dtypes; and the inputs of `function`, where a
    `_Read(index, dtype)` stands for the value of `handles[index]`.
    """
    compiled = _COMPILED.get(function)
    if compiled is None:
        # reduce_retracing: one trace serves every shape of a rank (XLA still compiles per shape).
        compiled = tf.function(_assigning(function), jit_compile=True, autograph=False, reduce_retracing=True)
        _COMPILED[function] = compiled
    return compiled


def device_copy(value, device: str | None):
    """The copy on `device` of a (possibly distributed) variable; sparse gradients made dense.

    Under tf.distribute, an update runs on each device's copy of the variable, while the
    optimizer's slots are still the distributed variables: the compiled update must receive
    the copy it is to read and write.
    """
    if isinstance(value, keras.Variable):
        value = value.value
    if isinstance(value, tf.IndexedSlices):
        return tf.convert_to_tensor(value)  # XLA compiles the dense update
    if not isinstance(value, tf.Variable):
        return value
    copies = tf.distribute.get_strategy().experimental_local_results(value)
    if len(copies) == 1:
        return copies[0]
    matching = [copy for copy in copies if copy.device == device]
    if device is None or len(matching) != 1:
        raise ValueError(
            f"cannot tell which copy of the distributed variable {value.name} to update; update each device's "
            "copy inside `strategy.extended.update` (as Keras's `apply` does)"
        )
    return matching[0]


def update_in_place(function, targets, *args, fused: bool, **kwargs):
    """Assigns the results of the pure `function(*args, **kwargs)` to `targets`, in order.

    `function` returns a tensor or a tuple of tensors, one per target, each cast to its
    target's dtype. With `fused`, the computation and the assignments are compiled by XLA
    into one kernel that updates the variables in place. The
    variables among `targets`, `args` and `kwargs` are passed into it as the copies on the
    device of `targets[0]` (the variable being updated, as `update_step` receives it);
    Python numbers and bools are fixed in the trace.
    """
    results_count = len(targets)
    if not fused:
        results = _one_per_target(function, results_count, *args, **kwargs)
        for target, result in zip(targets, results):
            target.assign(ops.cast(result, target.dtype))
        return
    device = getattr(device_copy(targets[0], None), "device", None)
    variables = []  # each variable once: XLA refuses a variable passed twice

    def as_input(value):
        value = device_copy(value, device)
        if not isinstance(value, tf.Variable):
            return value
        index = next((i for i, known in enumerate(variables) if known is value), None)
        if index is None:
            index = len(variables)
            variables.append(value)
        return _Read(index, value.dtype.name)

    for target in targets:
        as_input(target)
    if len(variables) != results_count:
        raise ValueError("update_in_place needs distinct target variables")
    args = tuple(as_input(value) for value in args)
    kwargs = {key: as_input(value) for key, value in kwargs.items()}
    compiled_update(function)(
        tuple(variable.handle for variable in variables),
        tuple(variable.dtype.name for variable in variables[:results_count]),
        args,
        kwargs,
    )


@keras.saving.register_keras_serializable(package="lepton_keras")
class LeptonOptimizer(keras.optimizers.Optimizer):
    """The base of lepton_keras's optimizers: Keras's Optimizer with fused (XLA-compiled) updates.

    Subclasses keep their math in a pure function `<name>_update(...)` that returns the new
    values, and assign them in `update_step` with `self.update_in_place(...)`.

    Args:
        learning_rate: a finite float > 0, a
            `keras.optimizers.schedules.LearningRateSchedule` or a callable (a schedule may
            reach 0; a constant 0 would be a silent no-op and is refused).
        fused_updates: compile each variable's update with XLA into one kernel that writes
            the variable and its slots in place (default True). False runs the same
            operations one by one (the same numbers within float rounding).
        **kwargs: Keras's optimizer keywords (weight_decay, clipnorm, ..., name), checked here
            (`lepton_keras.validation.check_keras_optimizer_options`).
    """

    def __init__(self, learning_rate, *, fused_updates: bool = True, **kwargs):
        super().__init__(learning_rate=check_learning_rate("learning_rate", learning_rate),
                         **check_keras_optimizer_options(kwargs))
        self.fused_updates = check_bool("fused_updates", fused_updates)

    def update_in_place(self, function, targets, *args, **kwargs):
        """Assigns `function(*args, **kwargs)` to `targets`, in one XLA kernel when `fused_updates`.

        See `lepton_keras.optimizers.base.update_in_place`.
        """
        update_in_place(function, targets, *args, fused=self.fused_updates, **kwargs)

    def get_config(self):
        return {**super().get_config(), "fused_updates": self.fused_updates}
