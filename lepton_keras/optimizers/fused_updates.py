"""FusedUpdates: any Keras optimizer's per-variable update compiled by XLA into one kernel.

The fusion XLA performs inside a `jit_compile=True` train step, without compiling the step:
TensorFlow otherwise runs each element-wise operation of an update (Adam has about ten)
as its own pass over the variable's memory.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from lepton_keras.optimizers.wrapper import OptimizerWrapper


@keras.saving.register_keras_serializable(package="lepton_keras")
class FusedUpdates(OptimizerWrapper):
    """Runs the inner optimizer's update of each variable as one XLA-compiled kernel.

    When to use it: around Keras's own optimizers (Adam, AdamW, SGD, Lion, ...) in a train
    step that is not compiled with `jit_compile=True` (distribution strategies, models XLA
    cannot compile), where the update is memory-bound and each of its element-wise
    operations reads and writes the whole variable. Fused, XLA merges them into a few loops
    that write the variable and its slots in place; the numbers are the inner
    optimizer's (within float rounding). lepton_keras's own optimizers fuse by themselves
    (`fused_updates=True`, their default); a wrapper inside is run as usual.

    For each variable w and each device's copy of it, with Keras's decoupled weight decay
    where the inner optimizer sets it:

        w <- w - lr weight_decay w;   inner.update_step(g, w, lr)     (one XLA kernel)

    then the variable constraints, and the inner optimizer's `iterations` grows by one. Keras's
    `update_step` reads its slots as variables, so one compiled function is kept per variable
    copy (traced, and compiled by XLA, on first use).

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config).
        fused_updates: False runs the inner update unfused, as `OptimizerWrapper` (default True).
        name: the optimizer's name (default "fused_updates").

    Example:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=FusedUpdates(keras.optimizers.Adam(1e-3)), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        XLA: "Operation fusion", https://openxla.org/xla (the compiler TensorFlow's
        `jit_compile` uses).
    """

    def __init__(self, inner_optimizer, *, name="fused_updates", **kwargs):
        super().__init__(inner_optimizer, name=name, **kwargs)
        self._per_copy = _CompiledPerCopy()

    def update_inner_copy(self, variable, gradient, learning_rate, *, decay):
        """The inner update of one device's copy of a variable, through that copy's compiled function."""
        if not self.fused_updates:
            super().update_inner_copy(variable, gradient, learning_rate, decay=decay)
            return
        key = (variable.ref(), decay)
        compiled = self._per_copy.functions.get(key)
        if compiled is None:
            update = functools.partial(super().update_inner_copy, variable, decay=decay)
            compiled = tf.function(update, jit_compile=True, autograph=False)
            self._per_copy.functions[key] = compiled
        if isinstance(learning_rate, keras.Variable):
            learning_rate = learning_rate.value
        # Sparse gradients are made dense: XLA compiles the dense update.
        compiled(tf.convert_to_tensor(gradient), tf.convert_to_tensor(learning_rate))

    def compiled_function_count(self) -> int:
        """How many compiled per-variable-copy update functions exist (0 before the first fused step)."""
        return len(self._per_copy.functions)


class _CompiledPerCopy:
    """The compiled update function of each variable copy; a plain object, so not optimizer state."""

    def __init__(self):
        self.functions = {}
