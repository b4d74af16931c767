"""Weight normalization: a layer's kernel as a length times a direction, with data-dependent init.

Salimans and Kingma (2016), "Weight Normalization: A Simple Reparameterization to
Accelerate Training of Deep Neural Networks", arXiv:1602.07868.
"""

from __future__ import annotations

import threading

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.distribute import keras_compat
from lepton_keras.distribute.reduce import global_sum
from lepton_keras.validation import check_bool, invalid

# Keeps 1/sqrt(variance) finite for an output unit that is constant over the init batch.
DATA_INIT_EPSILON = 1e-10

_SUPPORTED_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
# Swapping the wrapped layer's activation must not interleave between threads (replicas).
_ACTIVATION_LOCK = threading.Lock()


def weight_norm_kernel(direction, scale, reduction_axes):
    """w = g * v / ||v||, the norm over `reduction_axes` (every axis but the output axis, the last)."""
    norm = ops.sqrt(ops.sum(ops.square(direction), axis=reduction_axes, keepdims=True))
    return direction * (scale / norm)


def data_init_scale_and_bias(mean, variance, epsilon: float = DATA_INIT_EPSILON):
    """The paper's data-dependent init: g = 1 / sigma, b = -mu / sigma, sigma = sqrt(variance + epsilon)."""
    inverse_std = 1.0 / ops.sqrt(variance + epsilon)
    return inverse_std, -mean * inverse_std


@keras.saving.register_keras_serializable(package="lepton_keras")
class WeightNormalization(keras.layers.Wrapper):
    """Reparametrises a Dense or Conv layer's kernel as w = g * v / ||v||, with data-dependent init.

    When to use it: to speed up and steady training much as batch normalization does, but
    without making an example's output depend on the rest of its batch and without per-step
    batch statistics: for small batches, recurrent and generative models, reinforcement
    learning, or wherever batch normalization's noise hurts. Separating each unit's length g
    from its direction v makes the gradient steps better conditioned. With `data_init=True`
    the first training batch also sets g and the bias so that every output unit starts with
    zero-mean, unit-variance pre-activations.

    The wrapped layer's kernel becomes the direction v; the wrapper adds the length g, one per
    output unit (the last axis of the kernel), and the layer computes with

        w = g * v / ||v||           (norm over every axis of v but the output axis)
        y = phi(w . x + b)

    Gradients reach g and v through w (the paper's Eq. 3):
        dL/dg = dL/dw . v / ||v||,    dL/dv = g / ||v|| * dL/dw - g * dL/dg / ||v||^2 * v.

    g starts at ||v||, so before any initialization the layer computes what the unwrapped
    layer would. The data-dependent initialization (the paper's Section 3), on the first
    call with training=True, computes t = v . x / ||v|| on that batch and sets

        g = 1 / sigma[t],   b = -mu[t] / sigma[t]      (mu, sigma per output unit)

    so that w . x + b has mean 0 and variance 1 per unit over the batch (and the spatial
    positions, for convolutions); a layer without bias only gets its variance set. Under a
    distribution strategy mu and sigma are those of the *global* batch: each replica's sums
    and counts are all-reduced across replicas and workers, so every replica ends with the
    same g and b as one device on the same batch. The `initialized` flag is a non-trainable
    variable: it is saved with the model, and a reloaded model is not initialized again.

    Cost: a training function traced before the initialization computes the statistics in a
    branch that runs only once, but under a strategy with more than one replica it keeps two
    small all-reduces of the statistics (about 2 * units numbers) in every step, as
    `BatchNormalization(synchronized=True)` does; a function traced once the flag is set
    (after calling `compile` again, or in a reloaded model) has none. Such a synchronisation point in the
    forward pass lets replica threads interleave: layers that call `add_loss` in the same
    model should use `lepton_keras.distribute.keras_compat.isolate_losses_per_thread` (this
    wrapper does so for the activity regularizer of the layer it wraps, which it applies).

    Regularizers and constraints of the wrapped kernel act on v.

    Args:
        layer: a `keras.layers.Dense`, `Conv1D`, `Conv2D` or `Conv3D` (either data_format),
            without LoRA or quantization.
        data_init: set g and the bias from the first training batch (default True); with
            False, g keeps its initial value ||v||.

    Example:
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            WeightNormalization(keras.layers.Conv2D(32, 3, activation="relu")),
            keras.layers.Flatten(),
            WeightNormalization(keras.layers.Dense(10, activation="softmax")),
        ])
        model.compile(optimizer="adam", loss="categorical_crossentropy")

    References:
        Salimans and Kingma (2016), "Weight Normalization: A Simple Reparameterization to
        Accelerate Training of Deep Neural Networks", arXiv:1602.07868.
    """

    def __init__(self, layer, data_init: bool = True, **kwargs):
        if not isinstance(layer, _SUPPORTED_LAYERS):
            raise invalid("layer", layer, "a keras.layers.Dense, Conv1D, Conv2D or Conv3D")
        data_init = check_bool("data_init", data_init)
        if getattr(layer, "lora_enabled", False) or layer.dtype_policy.quantization_mode is not None:
            raise ValueError(f"layer must not use LoRA or quantization, received: {layer.name!r}")
        # Compute in the wrapped layer's dtype, and apply its activity regularizer here: the
        # wrapped layer's own __call__ is bypassed.
        kwargs.setdefault("dtype", layer.dtype_policy)
        kwargs.setdefault("activity_regularizer", layer.activity_regularizer)
        super().__init__(layer, **kwargs)
        self.data_init = data_init
        keras_compat.isolate_losses_per_thread(self)

    def build(self, input_shape=None):
        super().build(input_shape)
        direction = self.layer.kernel
        if not any(direction is variable for variable in self.layer.weights):
            raise ValueError(f"the kernel of {self.layer.name!r} is not one of its variables")
        self._reduction_axes = tuple(range(len(direction.shape) - 1))
        units = direction.shape[-1]
        self.g = self.add_weight(
            name="g",
            shape=(units,),
            initializer=lambda shape, dtype: ops.cast(
                ops.sqrt(ops.sum(ops.square(direction), axis=self._reduction_axes)), dtype
            ),
        )
        initialized = not self.data_init
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            dtype="bool",
            initializer=lambda shape, dtype: ops.full(shape, initialized, dtype),
            trainable=False,
        )

    @property
    def _bias(self):
        return getattr(self.layer, "bias", None)

    @property
    def _channel_axis(self):
        if isinstance(self.layer, keras.layers.Dense) or self.layer.data_format == "channels_last":
            return -1
        return 1

    def _preactivation(self, inputs, kernel, bias=None):
        """The wrapped layer's w . x + b for the given kernel (and bias, if given) tensors, no activation."""
        substitutes = {id(self.layer.kernel): kernel}
        if bias is not None:
            substitutes[id(self._bias)] = bias

        def values(variables):
            return [substitutes.get(id(variable), variable) for variable in variables]

        with _ACTIVATION_LOCK:
            activation, self.layer.activation = self.layer.activation, None
            try:
                outputs, _ = self.layer.stateless_call(
                    values(self.layer.trainable_variables), values(self.layer.non_trainable_variables), inputs
                )
            finally:
                self.layer.activation = activation
        return outputs

    def _needs_data_init(self) -> bool:
        """Whether the flag was still unset when this call was traced (or run eagerly)."""
        if not self.data_init:
            return False
        with tf.init_scope():
            return not bool(ops.convert_to_numpy(self.initialized.value))

    def _initialize_from_batch(self, inputs):
        """Sets g and the bias from the global batch, once; to be called with training=True.

        The statistics are computed in a branch that runs only while the flag is unset, but
        the all-reduces stay outside it: a cross-replica all-reduce inside `cond` is not
        supported (it needs every replica to meet at the same point of the graph).
        """
        initialized = tf.convert_to_tensor(self.initialized)
        direction = tf.convert_to_tensor(self.layer.kernel)
        unit_kernel = weight_norm_kernel(direction, ops.ones((direction.shape[-1],), direction.dtype),
                                         self._reduction_axes)  # fmt: skip
        zero_bias = None if self._bias is None else ops.zeros(self._bias.shape, self._bias.dtype)
        stats_dtype = "float64" if keras.backend.standardize_dtype(direction.dtype) == "float64" else "float32"
        channel_axis = self._channel_axis
        units = direction.shape[-1]

        def projections():  # t = v . x / ||v||, one row per output unit
            t = ops.cast(self._preactivation(inputs, unit_kernel, zero_bias), stats_dtype)
            t = ops.moveaxis(t, channel_axis, -1)
            return ops.stop_gradient(ops.reshape(t, (-1, units)))

        def nothing():
            return ops.zeros((units,), stats_dtype)

        def sum_and_count():
            t = projections()
            return ops.concatenate([ops.sum(t, axis=0), ops.cast(ops.shape(t)[:1], stats_dtype)])

        sums = global_sum(ops.cond(initialized, lambda: ops.zeros((units + 1,), stats_dtype), sum_and_count))
        count = ops.maximum(sums[units], 1.0)
        mean = sums[:units] / count
        squares = global_sum(ops.cond(initialized, nothing, lambda: ops.sum(ops.square(projections() - mean), axis=0)))
        scale, bias = data_init_scale_and_bias(mean, squares / count)

        def assign():  # each replica writes its own copy (aggregation "none"): no synchronisation
            self.g.assign(scale)
            if self._bias is not None:
                self._bias.assign(bias)
            self.initialized.assign(True)
            return ops.zeros(())

        ops.cond(initialized, lambda: ops.zeros(()), assign)

    def call(self, inputs, training=None):
        if training and self._needs_data_init():
            self._initialize_from_batch(inputs)
        kernel = weight_norm_kernel(self.layer.kernel, self.g, self._reduction_axes)
        outputs = self._preactivation(inputs, kernel)
        if self.layer.activation is not None:
            outputs = self.layer.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "data_init": self.data_init}
