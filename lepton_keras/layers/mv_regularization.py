"""Mean-variance (MV) regularization: weight decay scaled by the inverse energy of a layer's input.

From the design documents of lepton_keras:

    J(w) = J0(w) + lambda * 1/2 * sum_i w_i^2 / sum_i x_i^2,

where w is the wrapped layer's kernel and x the layer's inputs in the current *global*
batch. The denominator is summed across all replicas and workers, so training gives the
same numbers on one device, N replicas and N workers (a naive `add_loss` divides by each
replica's own, smaller sum and trains a different model).
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.distribute import keras_compat
from lepton_keras.distribute.reduce import global_sum
from lepton_keras.validation import check_bool, check_non_negative, check_positive, invalid


def mv_penalty(weight_energy, input_energy, lambda_: float, epsilon: float):
    """lambda / 2 * weight_energy / (input_energy + epsilon)."""
    return 0.5 * lambda_ * weight_energy / (input_energy + epsilon)


@keras.saving.register_keras_serializable(package="lepton_keras")
class MVRegularization(keras.layers.Wrapper):
    """Adds the mean-variance penalty lambda/2 * sum(w^2) / sum(x^2) of a wrapped layer to the loss.

    When to use it: as a data-aware weight decay. Dividing by the energy of the layer's
    input makes the penalty invariant to the scale of the data: a layer whose inputs are
    large (so that small weights already give large outputs) is pulled towards zero more
    gently than plain L2 would, and a layer with faint inputs more strongly. With
    `per_example=True` the denominator is the mean energy per example,
    sum(x^2) / batch_size, so the strength does not change with the batch size.

    The penalty, for kernel w (and bias b with `include_bias`), inputs x of the global
    batch B, and the number of examples n = |B|:

        E = sum_{x in B} sum_i x_i^2              (divided by n with per_example)
        P = lambda / 2 * (sum_i w_i^2 [+ sum_j b_j^2]) / (E + epsilon)
        dP/dw = lambda * w / (E + epsilon)

    E is summed across replicas and workers with an all-reduce, so every replica adds the
    same P. E is a statistic of the batch, not a target: no gradient flows through it into
    earlier layers (otherwise the network could shrink the penalty by inflating the
    layer's inputs). Each replica's penalty is kept apart from the others' (see
    `keras_compat.isolate_losses_per_thread`), so the logged loss counts it once even when
    the forward pass synchronises replicas, as `BatchNormalization(synchronized=True)` does.

    Args:
        layer: the layer to regularize; it must have a `kernel` once built (Dense,
            Conv1D/2D/3D, and others).
        lambda_: the strength lambda >= 0 (default 0.01).
        per_example: divide the input energy by the global batch size (default False,
            the design documents' form).
        epsilon: added to the denominator, so an all-zero batch gives a finite penalty
            (default 1e-7).
        include_bias: add sum(b^2) of the wrapped layer's bias to the numerator (default False).

    Example:
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            MVRegularization(keras.layers.Conv2D(32, 3, activation="relu"), lambda_=1e-3),
            keras.layers.Flatten(),
            MVRegularization(keras.layers.Dense(10, activation="softmax"), lambda_=1e-3),
        ])

    Reference: the lepton_keras design documents ("mean-variance (MV) regularization").
    """

    def __init__(self, layer, lambda_: float = 0.01, per_example: bool = False, epsilon: float = 1e-7,
                 include_bias: bool = False, **kwargs):  # fmt: skip
        if not isinstance(layer, keras.layers.Layer):
            raise invalid("layer", layer, "a keras.layers.Layer with a kernel (Dense, Conv1D/2D/3D, ...)")
        super().__init__(layer, **kwargs)
        self.lambda_ = check_non_negative("lambda_", lambda_)
        self.per_example = check_bool("per_example", per_example)
        self.epsilon = check_positive("epsilon", epsilon)
        self.include_bias = check_bool("include_bias", include_bias)
        keras_compat.isolate_losses_per_thread(self)

    def build(self, input_shape=None):
        super().build(input_shape)
        if getattr(self.layer, "kernel", None) is None:
            raise ValueError(
                f"MVRegularization needs a layer with a kernel (Dense, Conv1D/2D/3D, ...); "
                f"{self.layer.name!r} ({type(self.layer).__name__}) has none"
            )
        if self.include_bias and getattr(self.layer, "bias", None) is None:
            raise ValueError(f"include_bias=True, but {self.layer.name!r} has no bias")

    def input_energy(self, inputs):
        """sum(x^2) over the global batch (per example with `per_example`), without gradient."""
        inputs = ops.cast(inputs, "float32")
        energy = global_sum(ops.sum(ops.square(inputs)))
        if self.per_example:
            energy = energy / global_sum(ops.cast(ops.shape(inputs)[0], "float32"))
        return ops.stop_gradient(energy)

    def weight_energy(self):
        """sum(w^2) of the kernel (plus sum(b^2) of the bias with `include_bias`)."""
        energy = ops.sum(ops.square(ops.cast(self.layer.kernel, "float32")))
        if self.include_bias:
            energy = energy + ops.sum(ops.square(ops.cast(self.layer.bias, "float32")))
        return energy

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            raise ValueError("MVRegularization wraps a layer with a single input tensor")
        self.add_loss(mv_penalty(self.weight_energy(), self.input_energy(inputs), self.lambda_, self.epsilon))
        return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "lambda_": self.lambda_,
            "per_example": self.per_example,
            "epsilon": self.epsilon,
            "include_bias": self.include_bias,
        }
