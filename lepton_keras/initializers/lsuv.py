"""Layer-sequential unit-variance (LSUV) initialization, the same on 1 device, N replicas and N workers.

Mishkin and Matas, 2016, "All you need is a good init", ICLR 2016, arXiv:1511.06422
(Algorithm 1).

LSUV is data-dependent: it runs a batch through the model and rescales each layer's kernel,
first to last, until the layer's output has the target variance. Under a
`tf.distribute` strategy every worker must take the same decisions and end with the same
numbers, so each measured variance is averaged across all replicas with `strategy.reduce`
before it is used, and every kernel is broadcast from the first replica (an all-reduce sum
with zeros everywhere else, which is exact) at the start and after its layer is done.
"""

from __future__ import annotations

import dataclasses
import math
import random
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from lepton_keras.validation import check_bool, check_int, check_positive, check_strategy, invalid


@dataclasses.dataclass(frozen=True)
class LSUVLayerReport:
    """What `lsuv_initialize` did to one layer.

    Attributes:
        name: the layer's name.
        variance: the variance of the layer's output on the batch after the last rescaling.
        iterations: how many times the kernel was rescaled (0 when it was already on target).
        converged: whether |variance - target_variance| < tolerance.
    """

    name: str
    variance: float
    iterations: int
    converged: bool


def lsuv_scale(variance: float, target_variance: float = 1.0, *, layer: str | None = None) -> float:
    """The factor LSUV divides a kernel by: sqrt(variance / target_variance).

    A variance of 0 (a constant output: dead units, a zero kernel) has no such factor and is
    refused; `layer`, the name of the layer measured, goes into that message.

    Example:
        >>> lsuv_scale(4.0)
        2.0
    """
    where = f" (the output variance of layer {layer!r})" if layer is not None else ""
    if _is_zero(variance):
        raise invalid("variance", variance, f"a finite number > 0{where}: a constant output cannot be rescaled "
                      "to a target variance; check the layer's kernel and activation, and the batch")
    variance = check_positive("variance", variance)
    return math.sqrt(variance / check_positive("target_variance", target_variance))


def _is_zero(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) and value == 0


def kernel_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` (in order) that own a `kernel` variable: Dense, Conv*, EinsumDense..."""
    if not isinstance(model, keras.Model):
        raise invalid("model", model, "a keras.Model")
    return [layer for layer in model.layers if isinstance(getattr(layer, "kernel", None), keras.Variable)]


def _model_inputs(model):
    """The model's symbolic inputs, in the structure its call takes (a tensor, a list or a dict)."""
    if not isinstance(model, keras.Model):
        raise invalid("model", model, "a keras.Model")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"lsuv_initialize needs a built Sequential or functional model (one with model.inputs), "
            f"received: model={model.name!r} of type {type(model).__name__}. Start a Sequential with "
            "keras.Input(shape); a subclassed model has no per-layer outputs to measure."
        )
    return inputs[0] if len(inputs) == 1 else model.input


def _check_batch(batch) -> None:
    """A batch of model inputs: arrays or tensors (or their list or dict), each with at least one example."""
    parts = tf.nest.flatten(batch)
    if not parts or not all(isinstance(part, (np.ndarray, tf.Tensor, keras.Variable)) or ops.is_tensor(part) for part in parts):
        raise invalid("batch", batch, "model inputs: a NumPy array or tensor with at least one example (or their list or dict)")
    for part in parts:
        if len(part.shape) == 0 or part.shape[0] == 0:
            raise invalid("batch", f"an array of shape {tuple(part.shape)}",
                          "model inputs with at least one example (a leading batch dimension > 0)")


def _resolve_strategy(model, strategy) -> tf.distribute.Strategy:
    if check_strategy("strategy", strategy) is not None:
        return strategy
    if tf.distribute.has_strategy():
        return tf.distribute.get_strategy()
    # The strategy the model was built under (Keras records it), or the default one.
    return getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()


def _broadcast_from_first_replica(variable, strategy) -> None:
    """Sets `variable` on every replica and worker to its value on replica 0, exactly."""
    value = tf.identity(ops.convert_to_tensor(variable))  # a tensor, not the (distributed) variable
    zeros = tf.zeros_like(value)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: value if context.replica_id_in_sync_group == 0 else zeros
    )
    # x + 0 + ... + 0 == x in floating point, in any order of summation.
    variable.assign(strategy.reduce("SUM", per_replica, axis=None))


def _output_variance(layer, probe: keras.Model, batch, strategy) -> float:
    """Variance of `probe`'s output on `batch`, averaged over all replicas (the same number on every worker)."""
    output = ops.convert_to_numpy(probe(batch, training=False))
    local_variance = np.var(output.astype(np.float64))
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(local_variance, tf.float64)
    )
    variance = float(strategy.reduce("MEAN", per_replica, axis=None))
    if not math.isfinite(variance):  # the same on every worker, so all of them raise
        raise ValueError(
            f"the output of layer {layer.name!r} has a non-finite variance ({variance}) on the batch; "
            "check the batch for NaN or infinite values"
        )
    if variance == 0.0:
        lsuv_scale(variance, layer=layer.name)  # raises, naming the layer
    return variance


def lsuv_initialize(
    model: keras.Model,
    batch,
    *,
    target_variance: float = 1.0,
    tolerance: float = 0.1,
    max_iterations: int = 10,
    orthogonal_start: bool = True,
    seed: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> list[LSUVLayerReport]:
    """Rescales every kernel, layer by layer, so each layer's output has unit (target) variance on a batch.

    When to use it: once, after building a model and before training, for deep networks
    without batch normalization (plain CNNs, MLPs, networks with tanh or maxout units),
    where a data-independent initializer lets the activation variance drift with depth.
    It needs a representative batch of inputs (a few hundred examples are enough for the
    variance), not labels.

    The algorithm (Mishkin and Matas 2016, Algorithm 1), for the layers L with a kernel W_L
    (Dense, Conv1D/2D/3D, ...), in the order of `model.layers`:

        0. (orthogonal_start) W_L <- an orthonormal matrix Q_L, Keras's
           `keras.initializers.Orthogonal` of W_L's shape (a convolution kernel flattened to
           (k_1 * ... * k_d * C_in, C_out), as in the paper);
        1. v <- Var(B_L), the variance of all entries of layer L's output B_L on the batch
           (after the layer's own activation, if it has one: put the activation in a separate
           layer to measure before it);
        2. while |v - target_variance| >= tolerance and fewer than max_iterations rescalings:
               W_L <- W_L / sqrt(v / target_variance),
               v <- Var(B_L).

    Biases are left as they are. Earlier layers are final when a later one is measured.

    Distributed: call it inside `strategy.scope()` or pass `strategy` (without either, the
    strategy the model was built under is used). The batch goes through the model in
    cross-replica context, each measured variance is averaged across all replicas and
    workers with `strategy.reduce("MEAN", ...)`, and each kernel is broadcast from the first
    replica before and after its layer's loop, so every replica and worker takes the same
    number of iterations and ends with bitwise the same weights. Every worker must call it
    (it runs collective operations); give every worker the same batch to get the weights of
    a single-device run.

    Args:
        model: a built Sequential or functional `keras.Model` (created in the strategy's scope
            when there is one). A nested model counts as one layer without a kernel (with a
            warning): the kernels inside it are not rescaled.
        batch: model inputs: a NumPy array or tensor (or the list or dict the model takes).
        target_variance: the output variance to reach (default 1.0).
        tolerance: stop once |variance - target_variance| < tolerance (default 0.1).
        max_iterations: the most rescalings per layer (default 10); a layer that does not
            converge gets a warning and `converged=False` in the report.
        orthogonal_start: first re-initialize every kernel orthonormally (default True). Set
            False to keep the kernels you initialized (e.g. with `DeltaOrthogonal`).
        seed: integer seed of the orthonormal start (layer i gets seed + i); None draws one
            from Python's `random`, which `keras.utils.set_random_seed` fixes (default None).
        strategy: the `tf.distribute.Strategy` holding the model's variables (default: the
            current one, else the one the model was built under).

    Returns:
        One `LSUVLayerReport(name, variance, iterations, converged)` per kernel layer, in order.

    Raises:
        ValueError: the model is not a built Sequential/functional model or has no layer with
            a kernel; target_variance or tolerance is not a positive number; max_iterations is
            not an integer >= 1; seed is not an integer or None; a layer's output variance on
            the batch is not finite.

    Example:
        >>> import keras, numpy as np
        >>> from lepton_keras.initializers import lsuv_initialize
        >>> model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
        ...                           keras.layers.Dense(10)])
        >>> batch = np.random.default_rng(0).normal(size=(256, 20)).astype("float32")
        >>> report = lsuv_initialize(model, batch, seed=0)
        >>> all(abs(layer.variance - 1.0) < 0.1 for layer in report)
        True

    References:
        Mishkin and Matas 2016, "All you need is a good init", arXiv:1511.06422.
        Saxe et al. 2014, "Exact solutions to the nonlinear dynamics of learning in deep
        linear neural networks", arXiv:1312.6120 (the orthonormal start).
    """
    inputs = _model_inputs(model)
    _check_batch(batch)
    target_variance = check_positive("target_variance", target_variance)
    tolerance = check_positive("tolerance", tolerance)
    max_iterations = check_int("max_iterations", max_iterations, minimum=1)
    orthogonal_start = check_bool("orthogonal_start", orthogonal_start)
    seed = check_int("seed", seed, allow_none=True)
    layers = kernel_layers(model)
    if not layers:
        raise ValueError(
            f"model {model.name!r} has no layer with a kernel (Dense, Conv1D/2D/3D, ...): "
            "LSUV has nothing to rescale"
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            warnings.warn(
                f"LSUV: layer {layer.name!r} is a nested model; the kernels inside it are not rescaled",
                stacklevel=2,
            )
    strategy = _resolve_strategy(model, strategy)

    reports = []
    with strategy.scope():
        probes = [keras.Model(inputs, layer.output) for layer in layers]
        if orthogonal_start:
            base_seed = int(seed) if seed is not None else random.randint(1, 10**9)
            for index, layer in enumerate(layers):
                orthogonal = keras.initializers.Orthogonal(seed=base_seed + index)
                layer.kernel.assign(orthogonal(shape=tuple(layer.kernel.shape), dtype=layer.kernel.dtype))
        for layer in layers:
            _broadcast_from_first_replica(layer.kernel, strategy)

        for layer, probe in zip(layers, probes):
            variance = _output_variance(layer, probe, batch, strategy)
            iterations = 0
            while abs(variance - target_variance) >= tolerance and iterations < max_iterations:
                kernel = ops.cast(layer.kernel, "float64") / lsuv_scale(variance, target_variance, layer=layer.name)
                layer.kernel.assign(ops.cast(kernel, layer.kernel.dtype))
                iterations += 1
                variance = _output_variance(layer, probe, batch, strategy)
            _broadcast_from_first_replica(layer.kernel, strategy)
            converged = abs(variance - target_variance) < tolerance
            if not converged:
                warnings.warn(
                    f"LSUV: layer {layer.name!r} ends with output variance {variance:.6g} after "
                    f"{iterations} rescaling(s), outside target_variance {target_variance:g} "
                    f"+/- tolerance {tolerance:g}",
                    stacklevel=2,
                )
            reports.append(LSUVLayerReport(layer.name, variance, iterations, converged))
    return reports
