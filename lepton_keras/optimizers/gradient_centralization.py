"""Gradient centralization: each output unit's gradient made zero-mean before the update.

Yong, Huang, Hua and Zhang (2020), "Gradient Centralization: A New Optimization Technique for
Deep Neural Networks", ECCV 2020, arXiv:2004.01461.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.optimizers.wrapper import OptimizerWrapper
from lepton_keras.validation import check_bool


def centralize_gradient(gradient):
    """Subtracts from each output unit's gradient its mean: over all axes but the last for rank >= 2,
    over the whole vector for rank 1.

        Phi_GC(g)_i = g_i - mean(g_i)
    """
    if len(gradient.shape) <= 1:
        return gradient - ops.mean(gradient)
    return gradient - ops.mean(gradient, axis=tuple(range(len(gradient.shape) - 1)), keepdims=True)


@keras.saving.register_keras_serializable(package="lepton_keras")
class GradientCentralization(OptimizerWrapper):
    """Centralizes the gradient of each kernel's output units, then runs the inner optimizer.

    When to use it: a drop-in addition to SGD with momentum or Adam for convolutional and
    dense networks, reported to speed up training and improve generalization; it
    constrains each output unit's weight vector to a hyperplane, regularizing the weight
    and output feature spaces. It has no hyperparameter to tune.

    For a kernel W with output units on its last axis (Dense (in, out), Conv2D
    (h, w, in, out)) and the global gradient G (summed across replicas and workers), for
    each unit i with M inputs (the product of the other axes):

        G_i <- G_i - (1 / M) sum_j G_{j,i}

    Biases and other rank-1 variables are left alone (the paper's choice); scalars always.

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config).
        exclude_rank_one: leave rank-1 variables (biases, normalization scales) alone
            (default True). With False their gradients are centred over the whole vector,
            which the paper does not do.
        name: the optimizer's name (default "gradient_centralization").

    Example:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
        model.compile(optimizer=GradientCentralization(keras.optimizers.SGD(0.1, momentum=0.9)), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Yong, Huang, Hua and Zhang (2020), "Gradient Centralization: A New Optimization
        Technique for Deep Neural Networks", arXiv:2004.01461.
    """

    def __init__(self, inner_optimizer, *, exclude_rank_one=True, name="gradient_centralization", **kwargs):
        exclude_rank_one = check_bool("exclude_rank_one", exclude_rank_one)
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.exclude_rank_one = exclude_rank_one

    def transform_gradients(self, gradients, variables):
        smallest_rank = 2 if self.exclude_rank_one else 1
        return [centralize_gradient(g) if len(g.shape) >= smallest_rank else g for g in gradients]

    def get_config(self):
        return {**super().get_config(), "exclude_rank_one": self.exclude_rank_one}
