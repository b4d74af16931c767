"""Cautious: any optimizer's update kept only where it agrees in sign with the gradient.

Liang, Chen, Liu and Liu (2024), "Cautious Optimizers: Improving Training with One Line of Code",
arXiv:2411.16085.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.optimizers.base import snapshot
from lepton_keras.optimizers.wrapper import OptimizerWrapper
from lepton_keras.validation import invalid

# The rescaling divides by max(mean(mask), MIN_MASK_MEAN), as the authors' code (the clamp of
# their current C-AdamW; a mask of all zeros then leaves the weights unchanged).
MIN_MASK_MEAN = 1e-3


def cautious_update(before, after, gradient, *, min_mask_mean):
    """The inner step `after - before` masked where it disagrees with `gradient`, rescaled; returns the new weights.

    An element's step agrees when it goes against the gradient (step * gradient < 0: the
    update u = -step / lr and the gradient have the same sign). The kept steps are divided
    by the fraction of the tensor's elements kept (at least `min_mask_mean`), computed in
    float32 (float64 for float64 weights) so that low-precision tensors count exactly.
    """
    step = after - before
    agrees = ops.less(step * ops.cast(gradient, step.dtype), 0)
    count_dtype = "float64" if before.dtype == tf.float64 else "float32"
    kept_fraction = ops.maximum(ops.mean(ops.cast(agrees, count_dtype)), min_mask_mean)
    scale = ops.cast(1.0 / kept_fraction, before.dtype)
    return ops.where(agrees, before + step * scale, before)


@keras.saving.register_keras_serializable(package="lepton_keras")
class Cautious(OptimizerWrapper):
    """Masks the inner optimizer's update where it disagrees in sign with the gradient, and rescales the rest.

    When to use it: around a momentum optimizer (AdamW, Lion, RAdam, ...) to speed up
    training at no cost in memory and almost none in time: where the momentum points
    against the current gradient, the step would raise the loss to first order, so it is
    skipped. The authors report faster pre-training of LLaMA and MAE models with C-AdamW
    and C-Lion, and prove the masked update keeps the optimizer's convergence guarantees
    (Hamiltonian descent). Around SGD without momentum it changes nothing (the step is
    -lr g).

    For each variable with gradient g (the one the inner optimizer receives: summed across
    replicas and workers, after the transforms of any wrapper outside), the inner
    optimizer's update u (its step is w <- w - lr u) and mask phi over the tensor's
    n elements (the paper's Algorithm 1):

        w <- w - lr weight_decay w                     (the inner optimizer's Keras decay, unmasked)
        phi_i = 1 if u_i g_i > 0 else 0
        w <- w - lr u * phi / max(mean(phi), 1e-3)    (mean over the variable's elements)

    The mean is taken per tensor, and the decoupled weight decay that Keras applies before
    the step (`weight_decay` of the inner optimizer) is not masked: the authors' C-AdamW
    decays w before its masked step in the same way. A decay an optimizer computes inside
    its own step (Adan's, ADOPT's, MADGRAD's, Prodigy's) is part of u and is masked. The
    rescaling is that of the authors' current C-AdamW (and timm's): phi / max(mean(phi),
    1e-3). The paper's Algorithm 1 writes phi / (mean(phi) + eps); the authors' first code,
    their C-Lion and pytorch-optimizer's `cautious` flag use phi n / (sum(phi) + 1), a
    relative 1 / (sum(phi) + 1) smaller: close on large tensors, not on biases. The mask compares the update,
    read as the change the inner optimizer makes to the weights, with the gradient: the
    same mask as C-AdamW's (exp_avg g > 0), since Adam's step has the sign of its momentum.
    Elements whose step is 0 count as disagreeing (so a gradient with exact zeros raises
    the scale of the other elements, even around SGD).

    Cautious wraps an optimizer, not another wrapper: compose it inside the others
    ("lookahead_cautious_adamw", Lookahead(Cautious(AdamW()))). The mask is compiled with
    XLA when `fused_updates` (default True); the inner optimizer's update is fused by its
    own option.

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config; not a wrapper).
        fused_updates: compile the masking of each variable's update with XLA into one kernel
            (default True).
        name: the optimizer's name (default "cautious").

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        optimizer = lepton_keras.optimizers.Cautious(keras.optimizers.AdamW(1e-3, weight_decay=0.01))
        model.compile(optimizer=optimizer, loss="mse")  # or optimizer="cautious_adamw"
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Liang, Chen, Liu and Liu (2024), "Cautious Optimizers: Improving Training with One
        Line of Code", arXiv:2411.16085; the authors' code: github.com/kyleliang919/C-Optim.
    """

    def __init__(self, inner_optimizer, *, name="cautious", **kwargs):
        super().__init__(inner_optimizer, name=name, **kwargs)
        if isinstance(self.inner_optimizer, OptimizerWrapper):
            raise invalid("inner_optimizer", self.inner_optimizer,
                          "an optimizer, not a wrapper (put the wrappers outside: Lookahead(Cautious(inner)))")

    def update_inner_copy(self, variable, gradient, learning_rate, *, decay: bool):
        """The inner update of one device's copy, decoupled decay first, then the update masked."""
        if decay:  # outside the mask, as Keras applies it before the step
            self.decay_inner_copy(variable, learning_rate)
        before = snapshot(variable)
        super().update_inner_copy(variable, gradient, learning_rate, decay=False)
        self.update_in_place(cautious_update, (variable,), before, variable, tf.convert_to_tensor(gradient),
                             min_mask_mean=MIN_MASK_MEAN)
