"""Gradient accumulation: one update from the mean gradient of N micro-batches, correct under tf.distribute.

The large-batch equivalence it relies on: the mean of the gradients of N micro-batches of
size B is the gradient of their batch of size N B (for losses averaged over the batch).
Goyal et al. (2017), "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
arXiv:1706.02677, discuss training with such large batches.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.optimizers.base import snapshot
from lepton_keras.optimizers.wrapper import OptimizerWrapper
from lepton_keras.validation import check_int


def accumulate(accumulator, gradient, *, steps, first, last):
    """The new accumulator after one micro-batch; returns it without assigning anything.

    `first` starts a new sum (the accumulator still holds the previous mean); at the
    `last` micro-batch the sum becomes the mean the update uses:

        a <- (0 if first else a) + g;   a <- a / steps if last
    """
    total = ops.where(first, gradient, accumulator + gradient)
    return ops.where(last, total / ops.cast(steps, total.dtype), total)


@keras.saving.register_keras_serializable(package="lepton_keras")
class GradientAccumulation(OptimizerWrapper):
    """Averages the gradients of `steps` micro-batches and applies the inner optimizer once per `steps` calls.

    When to use it: to train with an effective batch larger than fits in memory, or to
    keep the effective batch of a run on fewer devices. Keras's own
    `gradient_accumulation_steps` puts the cross-replica sum inside a conditional, which
    crashes under MirroredStrategy; this wrapper sums across replicas first and takes the
    conditional in cross-replica context, so it gives the same numbers on 1 device, N
    replicas and N workers.

    With micro-batch gradients g_1, g_2, ... (each already summed across replicas) and
    N = steps:

        a_s = sum of g over the micro-batches of the current window so far
        at micro-batch s = n N:  w <- inner_update(w, a_s / N)   and a new window starts

    Between updates the weights do not change. The inner optimizer's `iterations` (and so
    its learning-rate schedule) counts updates; this wrapper's `iterations` counts
    micro-batches. The accumulators are optimizer variables, saved with the model; after
    an update they hold the mean that was applied, until the next micro-batch starts a
    new sum. With steps = 1 this is exactly the inner optimizer.

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config).
        steps: N, the number of micro-batches per update, an integer >= 1 (default 2).
        fused_updates: compile the accumulation with XLA into one kernel per variable
            (default True).
        name: the optimizer's name (default "gradient_accumulation").

    Example:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=GradientAccumulation(keras.optimizers.Adam(1e-3), steps=4), loss="mse")
        model.fit(np.ones((16, 4)), np.ones((16, 1)), batch_size=4, verbose=0)  # one update

    References:
        Goyal et al. (2017), "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
        arXiv:1706.02677.
    """

    # The inner levels update from the accumulated mean, not from this micro-batch's gradient.
    passes_step_gradients_inward = False

    def __init__(self, inner_optimizer, *, steps=2, name="gradient_accumulation", **kwargs):
        steps = check_int("steps", steps, minimum=1)
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.steps = steps

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._accumulators = [self.add_variable_from_reference(v, "accumulated_gradient") for v in variables]

    def apply_in_cross_replica(self, distribution, gradients, variables):
        accumulators = self.slots_of(self._accumulators, variables)
        micro_batch = snapshot(self.iterations)  # 0-based index of this micro-batch
        first = ops.equal(micro_batch % self.steps, 0)
        last = ops.equal((micro_batch + 1) % self.steps, 0)
        self.update_each(distribution, functools.partial(_accumulate, steps=self.steps, first=first, last=last,
                                                         update_in_place=self.update_in_place),
                         variables, gradients, accumulators)

        def update():
            # Each device's update reads its own copy of the mean gradient; the inner levels'
            # transforms run on it here (passes_step_gradients_inward is False).
            self.apply_inner(distribution, [a.value for a in accumulators], variables)

        # In cross-replica context, where the whole stack's update runs (the pattern of Keras's
        # LossScaleOptimizer), so the conditional holds no collective of replica context.
        tf.cond(last, update, lambda: None)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


def _accumulate(variable, gradient, accumulator, *, steps, first, last, update_in_place):
    del variable  # the update runs on each copy of it; only its accumulator changes
    update_in_place(accumulate, (accumulator,), accumulator, ops.cast(gradient, accumulator.dtype), steps=steps,
                    first=first, last=last)
