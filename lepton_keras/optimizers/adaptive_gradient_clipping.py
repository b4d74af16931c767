"""Adaptive gradient clipping (AGC): each unit's gradient clipped relative to the norm of its weights.

Brock, De, Smith and Simonyan (2021), "High-Performance Large-Scale Image Recognition Without
Normalization", ICML 2021, arXiv:2102.06171 (Section 4.1).
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.optimizers.base import scalar
from lepton_keras.optimizers.wrapper import OptimizerWrapper
from lepton_keras.validation import check_positive, check_strings


def unitwise_norm(x):
    """The L2 norm of each output unit: over all axes but the last for rank >= 2, else of the whole tensor.

    Keras kernels keep the output units on the last axis (Dense (in, out), Conv2D
    (h, w, in, out)). The result broadcasts against `x`.
    """
    if len(x.shape) <= 1:
        return ops.sqrt(ops.sum(ops.square(x)))
    return ops.sqrt(ops.sum(ops.square(x), axis=tuple(range(len(x.shape) - 1)), keepdims=True))


def adaptive_clip(gradient, weight, *, clipping, epsilon):
    """Returns the AGC-clipped gradient of one variable.

        G_i <- G_i * min(1, lambda max(||W_i||, eps) / ||G_i||)      for each unit i
    """
    dtype = keras.backend.standardize_dtype(weight.dtype)
    max_norm = ops.maximum(unitwise_norm(weight), scalar(epsilon, dtype)) * scalar(clipping, dtype)
    # Dividing by max(||G_i||, max_norm) leaves small (and zero) gradients unchanged.
    return gradient * (max_norm / ops.maximum(unitwise_norm(gradient), max_norm))


@keras.saving.register_keras_serializable(package="lepton_keras")
class AdaptiveGradientClipping(OptimizerWrapper):
    """Clips each unit's gradient to a fraction of its weights' norm, then runs the inner optimizer.

    When to use it: to train networks without batch normalization (NFNets) or with large
    batches and learning rates, where a few units receive gradients large relative to
    their weights. The paper applies it to every layer except the final classifier
    (pass its name in `exclude`); smaller batches tolerate a larger `clipping`.

    For each output unit i of a weight W (a column of a Dense kernel, a filter of a
    convolution; the whole tensor for biases and scalars), with the global gradient G
    (summed across replicas and workers):

        ||W_i||* = max(||W_i||, epsilon)
        G_i <- lambda ||W_i||* / ||G_i|| G_i     if ||G_i|| / ||W_i||* > lambda
        G_i <- G_i                               otherwise

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config).
        clipping: lambda, the largest allowed ratio, > 0 (default 0.01; the paper uses
            0.01 to 0.16 depending on the batch size).
        epsilon: the smallest weight norm, so zero-initialised weights can move, > 0
            (default 1e-3, as the paper).
        exclude: names of layers whose variables are not clipped, e.g. ("classifier",)
            (default (): clip every variable). A variable is excluded when one of the
            names is a component of its path ("classifier/kernel").
        name: the optimizer's name (default "adaptive_gradient_clipping").

    Example:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1, name="head")])
        optimizer = AdaptiveGradientClipping(keras.optimizers.SGD(0.1, momentum=0.9), clipping=0.02, exclude=["head"])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Brock, De, Smith and Simonyan (2021), "High-Performance Large-Scale Image
        Recognition Without Normalization", arXiv:2102.06171.
    """

    def __init__(self, inner_optimizer, *, clipping=0.01, epsilon=1e-3, exclude=(), name="adaptive_gradient_clipping",
                 **kwargs):
        clipping = check_positive("clipping", clipping)
        epsilon = check_positive("epsilon", epsilon)
        exclude = check_strings("exclude", exclude)
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.clipping = clipping
        self.epsilon = epsilon
        self.exclude = list(exclude)

    def is_excluded(self, variable) -> bool:
        """Whether `variable` belongs to a layer named in `exclude`."""
        path = getattr(variable, "path", variable.name)
        return any(name in path.split("/")[:-1] for name in self.exclude)

    def transform_gradients(self, gradients, variables):
        return [
            g if self.is_excluded(v) else adaptive_clip(g, ops.cast(v, g.dtype), clipping=self.clipping,
                                                         epsilon=self.epsilon)
            for g, v in zip(gradients, variables)
        ]

    def get_config(self):
        return {**super().get_config(), "clipping": self.clipping, "epsilon": self.epsilon, "exclude": self.exclude}
