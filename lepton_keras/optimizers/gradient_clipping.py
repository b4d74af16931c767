"""Gradient clipping by value, by per-variable norm or by global norm, after the cross-replica sum.

Pascanu, Mikolov and Bengio (2013), "On the difficulty of training recurrent neural
networks", arXiv:1211.5063 (clipping by norm).
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.optimizers.wrapper import OptimizerWrapper
from lepton_keras.validation import check_positive, invalid


def clip_gradients(gradients, *, value=None, norm=None, global_norm=None):
    """Clips a list of gradients: element-wise to [-value, value], then each to `norm`, then all to `global_norm`.

        by value:        g <- min(max(g, -value), value)
        by norm:         g <- g * min(1, norm / ||g||)
        by global norm:  g_i <- g_i * min(1, global_norm / sqrt(sum_j ||g_j||^2))
    """
    if value is not None:
        gradients = [ops.clip(g, -value, value) for g in gradients]
    if norm is not None:
        gradients = [g * _shrink_factor(ops.sqrt(ops.sum(ops.square(g))), norm, g.dtype) for g in gradients]
    if global_norm is not None:
        total = ops.sqrt(ops.sum(ops.stack([ops.sum(ops.square(ops.cast(g, "float32"))) for g in gradients])))
        gradients = [g * ops.cast(_shrink_factor(total, global_norm, "float32"), g.dtype) for g in gradients]
    return gradients


def _shrink_factor(current_norm, threshold, dtype):
    current_norm = ops.cast(current_norm, dtype)
    threshold = ops.cast(threshold, dtype)
    # Dividing by max(norm, threshold) leaves small gradients (and zero ones) unchanged.
    return threshold / ops.maximum(current_norm, threshold)


@keras.saving.register_keras_serializable(package="lepton_keras")
class GradientClipping(OptimizerWrapper):
    """Clips the global (summed across replicas and workers) gradient, then runs the inner optimizer.

    When to use it: in place of Keras's `clipnorm`, `clipvalue` and `global_clipnorm`,
    which clip each replica's share of the gradient before the cross-replica sum, so the
    result depends on the number of replicas. Here the clipping sees the same gradient as
    one device would, so training gives the same numbers on 1 device, N replicas and N
    workers. Clip by global norm for transformers and RNNs (Pascanu et al.), by value to
    guard against outliers.

        by value:        g <- clip(g, -value, value)
        by norm:         g <- g * min(1, norm / ||g||)                  (each variable)
        by global norm:  g <- g * min(1, global_norm / ||(g_1, ..., g_n)||)

    When several are given they apply in that order.

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config).
        value: clip each element to [-value, value] (default None: off).
        norm: clip each variable's gradient to this L2 norm (default None: off).
        global_norm: clip the gradients of all variables together to this L2 norm
            (default None: off).
        name: the optimizer's name (default "gradient_clipping").

    Example:
        optimizer = GradientClipping(keras.optimizers.AdamW(1e-3), global_norm=1.0)
        model.compile(optimizer=optimizer, loss="mse")

    References:
        Pascanu, Mikolov and Bengio (2013), "On the difficulty of training recurrent neural
        networks", arXiv:1211.5063.
    """

    def __init__(self, inner_optimizer, *, value=None, norm=None, global_norm=None, name="gradient_clipping",
                 **kwargs):
        # Finite: an infinite threshold clips nothing, and inf / inf is NaN in the norm clipping.
        value = check_positive("value", value, allow_none=True)
        norm = check_positive("norm", norm, allow_none=True)
        global_norm = check_positive("global_norm", global_norm, allow_none=True)
        if value is None and norm is None and global_norm is None:
            raise invalid("value, norm or global_norm", None, "given (at least one of them)")
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.value = value
        self.norm = norm
        self.global_norm = global_norm

    def transform_gradients(self, gradients, variables):
        return clip_gradients(gradients, value=self.value, norm=self.norm, global_norm=self.global_norm)

    def get_config(self):
        return {**super().get_config(), "value": self.value, "norm": self.norm, "global_norm": self.global_norm}
