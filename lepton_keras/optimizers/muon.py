"""Muon: momentum orthogonalised by Newton-Schulz for the weight matrices, AdamW for the other variables.

Jordan, Jin, Boza, You, Cesista, Newhouse and Bernstein (2024), "Muon: An optimizer for hidden
layers in neural networks", https://kellerjordan.github.io/posts/muon/ (code:
github.com/KellerJordan/Muon). Moonlight's step size: Liu et al. (2025), "Muon is Scalable for
LLM Training", arXiv:2502.16982.
"""

from __future__ import annotations

import functools
import math

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.distribute.gradient_communication import sum_gradients
from lepton_keras.distribute.keras_compat import excluded_from_weight_decay, optimizer_built_variables
from lepton_keras.distribute.split_work import computed_once_and_shared
from lepton_keras.optimizers.base import LeptonOptimizer, one_minus_power, scalar, step_number
from lepton_keras.validation import (
    check_bool,
    check_choice,
    check_int,
    check_learning_rate,
    check_non_negative,
    check_number,
    check_strings,
    check_unit_interval,
    invalid,
)

# The author's quintic coefficients (a, b, c), chosen for a large slope at 0: 5 steps bring the
# singular values of (0, 1] to about 0.7-1.2, not exactly 1 (which, the author found, costs nothing).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# Keras applies these in its own `apply`, which the split path replaces; the wrappers do the same work.
_OPTIONS_THE_SPLIT_REPLACES = {
    "clipnorm": "GradientClipping(muon, norm=...)",
    "clipvalue": "GradientClipping(muon, value=...)",
    "global_clipnorm": "GradientClipping(muon, global_norm=...)",
    "gradient_accumulation_steps": "GradientAccumulation(muon, steps=...)",
    "use_ema": "ExponentialMovingAverage(muon, decay=...)",
}
# The names of torch.optim.Muon's `adjust_lr_fn`.
ADJUST_LEARNING_RATE = ("original", "match_rms_adamw", "spectral_unclamped")
# Moonlight's factor: 0.2 sqrt(max(fan_in, fan_out)) gives an orthogonal update the RMS of AdamW's.
MATCH_RMS_ADAMW_RATE = 0.2


def matrix_shape(shape) -> tuple[int, int]:
    """(fan_in, fan_out): a variable as the matrix Muon orthogonalises, its last axis as the columns.

    Keras keeps a kernel's output units on its last axis: a Dense kernel is (fan_in, fan_out), a
    Conv2D kernel (h, w, in, out) becomes (h w in, out).
    """
    return math.prod(shape[:-1]), shape[-1]


def shape_scale(shape, adjust_learning_rate: str) -> float:
    """The factor of the learning rate for a matrix of `shape` (see `Muon`'s docstring)."""
    fan_in, fan_out = matrix_shape(shape)
    if adjust_learning_rate == "original":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if adjust_learning_rate == "match_rms_adamw":
        return MATCH_RMS_ADAMW_RATE * math.sqrt(max(fan_in, fan_out))
    return math.sqrt(fan_out / fan_in)


def orthogonalization_cost(shape) -> int:
    """The multiply-adds of one Newton-Schulz step on a variable of `shape`, n^2 (2 m + n) for n <= m."""
    n, m = sorted(matrix_shape(shape))
    return n * n * (2 * m + n)


def newton_schulz(matrix, *, steps: int, coefficients=NS_COEFFICIENTS, epsilon):
    """The quintic Newton-Schulz iteration: about U V^T of matrix = U S V^T, in `matrix`'s dtype.

    X_0 = G / (||G||_F + epsilon), X_{k+1} = a X_k + (b A_k + c A_k^2) X_k with A_k = X_k X_k^T;
    a tall matrix is iterated transposed, so that A_k is the smaller Gram matrix.
    """
    a, b, c = coefficients
    transposed = matrix.shape[0] > matrix.shape[1]
    x = ops.transpose(matrix) if transposed else matrix
    x = x / (ops.sqrt(ops.sum(ops.square(x))) + epsilon)
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return ops.transpose(x) if transposed else x


def orthogonalize(direction, shape: tuple, *, steps: int, coefficients, epsilon):
    """`direction`, of `shape`, viewed as its `matrix_shape`, orthogonalised by `newton_schulz`, in its
    shape and dtype (`shape` is given: a trace shared by the shapes of a rank does not know it)."""
    matrix = ops.reshape(direction, matrix_shape(shape))
    return ops.reshape(newton_schulz(matrix, steps=steps, coefficients=coefficients, epsilon=epsilon), shape)


def muon_direction(gradient, momentum, *, beta, one_minus_beta, nesterov: bool):
    """(new_momentum, direction): the momentum EMA and the direction Muon orthogonalises."""
    momentum = beta * momentum + one_minus_beta * gradient
    direction = one_minus_beta * gradient + beta * momentum if nesterov else momentum
    return momentum, direction


def orthogonalized_direction(gradient, momentum, *, beta, one_minus_beta, nesterov: bool, shape: tuple, ns_steps: int,
                             coefficients, epsilon):  # fmt: skip
    """This step's orthogonalised direction, from the gradient and the momentum before the step, computed in
    the dtype of the scalars (the split path's part of `muon_update`)."""
    dtype = beta.dtype
    _, direction = muon_direction(ops.cast(gradient, dtype), ops.cast(momentum, dtype), beta=beta,
                                  one_minus_beta=one_minus_beta, nesterov=nesterov)  # fmt: skip
    return orthogonalize(direction, shape, steps=ns_steps, coefficients=coefficients, epsilon=epsilon)


# `orthogonalized_direction` compiled by XLA, for the split path with `fused_updates` (1.8x faster
# than TensorFlow's ops on a 512 x 512 matrix on one CPU thread).
_COMPILED_ORTHOGONALIZED_DIRECTION = tf.function(orthogonalized_direction, jit_compile=True, autograph=False)


def muon_update(variable, gradient, momentum, orthogonalized=None, *, learning_rate, scaled_learning_rate,
                weight_decay, beta, one_minus_beta, nesterov: bool, shape: tuple, ns_steps: int, coefficients,
                epsilon):  # fmt: skip
    """One Muon step; returns (new_variable, new_momentum) without assigning anything.

    Everything is computed in the dtype of the scalars (the variable's, at least float32);
    `orthogonalized`, when given, is this step's orthogonalised direction, computed elsewhere.
    """
    dtype = learning_rate.dtype
    variable, gradient, momentum = (ops.cast(x, dtype) for x in (variable, gradient, momentum))
    momentum, direction = muon_direction(gradient, momentum, beta=beta, one_minus_beta=one_minus_beta,
                                         nesterov=nesterov)  # fmt: skip
    if orthogonalized is None:
        orthogonalized = orthogonalize(direction, shape, steps=ns_steps, coefficients=coefficients, epsilon=epsilon)
    decayed = variable - learning_rate * weight_decay * variable
    return decayed - scaled_learning_rate * ops.cast(orthogonalized, dtype), momentum


def adamw_update(variable, gradient, m, v, *, learning_rate, weight_decay, beta_1, one_minus_beta_1, beta_2,
                 one_minus_beta_2, epsilon, bias_correction_1, bias_correction_2):  # fmt: skip
    """The author's AdamW step (epsilon outside the square root); returns (new_variable, new_m, new_v).

    Computed in the dtype of the scalars; bias_correction_i is 1 - beta_i^t.
    """
    dtype = learning_rate.dtype
    variable, gradient, m, v = (ops.cast(x, dtype) for x in (variable, gradient, m, v))
    m = beta_1 * m + one_minus_beta_1 * gradient
    v = beta_2 * v + one_minus_beta_2 * ops.square(gradient)
    step = (m / bias_correction_1) / (ops.sqrt(v / bias_correction_2) + epsilon)
    return variable - learning_rate * weight_decay * variable - learning_rate * step, m, v


def _check_coefficients(value) -> tuple[float, float, float]:
    allowed = "three finite numbers (a, b, c)"
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise invalid("ns_coefficients", value, allowed)
    try:
        return tuple(check_number("ns_coefficients", part) for part in value)
    except ValueError:
        raise invalid("ns_coefficients", value, allowed) from None


@keras.saving.register_keras_serializable(package="lepton_keras")
class Muon(LeptonOptimizer):
    """Muon: Nesterov momentum, orthogonalised by Newton-Schulz, for weight matrices; AdamW for the rest.

    When to use it: training the hidden layers of transformers and convolutional networks in
    fewer steps than AdamW (the author's speed-runs: NanoGPT, CIFAR-10), and at large batch
    sizes, where its step keeps its size in every direction of a matrix. Each matrix step is
    (nearly) an orthogonal matrix: its rare directions grow as much as its common ones. Give
    the embeddings and the output layer to AdamW (`exclude_layers`), as the author does.

    For each matrix W (fan_in x fan_out) with gradient G_t, with beta = `momentum`:

        M_t = beta M_{t-1} + (1 - beta) G_t
        D_t = (1 - beta) G_t + beta M_t              (Nesterov; `nesterov=False`: D_t = M_t)
        O_t = NewtonSchulz5(D_t)                      (about U V^T for D_t = U S V^T)
        W_t = W_{t-1} - lr weight_decay W_{t-1} - lr scale O_t

    NewtonSchulz5: X_0 = D / (||D||_F + epsilon), then `ns_steps` times
    X <- a X + (b A + c A^2) X with A = X X^T and (a, b, c) = `ns_coefficients`.
    `adjust_learning_rate` sets the scale: "original", the author's sqrt(max(1, fan_out / fan_in))
    (the spectral norm of the step is lr, more for a matrix with more outputs than inputs);
    "match_rms_adamw", Moonlight's 0.2 sqrt(max(fan_in, fan_out)), which gives the step the RMS of
    an AdamW step so that AdamW's learning rate and weight decay carry over; "spectral_unclamped",
    sqrt(fan_out / fan_in). The other variables take AdamW's step with their own learning rate:

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t,   v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
        w_t = w_{t-1} - lr_a weight_decay_a w_{t-1} - lr_a (m_t / (1 - beta_1^t)) / (sqrt(v_t / (1 - beta_2^t)) + eps_a)

    Which variables are matrices: those with 2 axes, and, with `flatten_kernels`, those with
    more, viewed as (prod(shape[:-1]), shape[-1]): a Conv2D kernel (h, w, in, out) as
    (h w in, out), the author's view of a PyTorch kernel (out, in, h, w) as (out, in h w),
    transposed (the same orthogonalisation). A variable goes to AdamW when it has
    fewer than 2 axes (biases, normalisation gains), when `exclude_embeddings` and
    "embedding" is in its "<layer name>/<variable name>" (the last two parts of its
    `variable.path`), or when one of `exclude_layers` is a substring of that. `flatten_kernels`
    suits Conv1D/2D/3D kernels; an EinsumDense kernel (MultiHeadAttention's query, key, value
    and output, of 3 axes) would be viewed with its heads among the rows: exclude such layers
    or set `flatten_kernels=False`.

    Precision: the iteration runs in the variable's dtype, float32 or float64 (float32 for
    float16 and bfloat16 variables), where the author's and torch.optim.Muon run it in bfloat16;
    float64 variables therefore match the float64 equations to 1e-7.

    Weight decay: `weight_decay` (matrices, with lr) and `adamw_weight_decay` (the others, with
    lr_a) REPLACE Keras's `weight_decay` form; both are the author's decoupled decay, before
    the step, and honour `exclude_from_weight_decay(...)`.

    Where it differs from the author's code: the same equations, in the variable's precision
    instead of bfloat16; the AdamW variables are chosen by rank and name here (the author's
    user lists them). A convolution kernel's scale here is its matrix's; the author's code
    takes sqrt(max(1, h / w)) from the kernel's last two PyTorch axes (the same, 1, for square
    kernels with fan_out <= in h w: all but a few first layers, such as 3x3x3 -> 64), and it
    flattens only 4-D kernels (a 3-D tensor is orthogonalised as a batch of matrices there).
    From `keras.optimizers.Muon` (Keras 3.15): that one scales the step by
    Moonlight's factor (rms_rate=0.2, no option for the author's), gives every variable that
    is not 2-D, convolution kernels included, to AdamW, uses the main learning rate times
    `adam_lr_ratio` for AdamW, momentum in the form M_t = beta M_{t-1} + G_t (the same
    direction up to epsilon), regular expressions on the whole path for `exclude_layers`, and
    fails on float64 variables.

    Distributed: under a tf.distribute strategy every replica orthogonalises every matrix.
    With `split_orthogonalization=True`, each replica orthogonalises a share of them, balanced
    by their cost, and the replicas exchange the results in one all-reduce (a sum of
    zero-padded results, exact): the same weights, with less work per replica and one more
    collective of the size of the matrices (see `lepton_keras.distribute.split_work` and
    benchmarks/muon_split.py). The split is in Muon's own `apply`, which then sums the
    gradients itself (as the strategy's `GradientCommunication` says) and refuses Keras's
    clipnorm, clipvalue, global_clipnorm, gradient_accumulation_steps and use_ema (use the
    wrappers). Inside a lepton_keras wrapper (`lookahead_muon`, ...), which updates each
    variable itself, every replica orthogonalises every matrix, as without the split.

    Args:
        learning_rate: lr of the matrices, a finite float > 0, a
            `keras.optimizers.schedules.LearningRateSchedule` or a callable (default 0.02, the author's).
        momentum: beta, in [0, 1) (default 0.95).
        nesterov: orthogonalise the Nesterov direction D_t (default True) or M_t.
        ns_steps: Newton-Schulz steps, an integer >= 1 (default 5).
        ns_coefficients: (a, b, c) (default (3.4445, -4.7750, 2.0315)).
        epsilon: added to ||D_t||_F, >= 0 (default 1e-7).
        adjust_learning_rate: "original" (default), "match_rms_adamw" or "spectral_unclamped".
        weight_decay: decoupled decay of the matrices, >= 0 or None (default None: none).
        flatten_kernels: orthogonalise variables of more than 2 axes as matrices (default True);
            False gives them to AdamW, as `keras.optimizers.Muon` does.
        exclude_layers: substrings of "<layer name>/<variable name>" that give a variable to
            AdamW (default None: none), e.g. the output layer's name.
        exclude_embeddings: give variables with "embedding" in that name to AdamW (default True).
        adamw_learning_rate: lr_a, a finite float > 0, a schedule or a callable (default 3e-4).
        adamw_beta_1: beta_1, in [0, 1) (default 0.9).
        adamw_beta_2: beta_2, in [0, 1) (default 0.95).
        adamw_epsilon: eps_a, >= 0 (default 1e-10).
        adamw_weight_decay: weight_decay_a, >= 0 or None (default None: none).
        split_orthogonalization: share the Newton-Schulz work between replicas (default False).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(1, name="head")])
        optimizer = lepton_keras.optimizers.Muon(0.02, exclude_layers=["head"], adamw_learning_rate=3e-4)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Jordan et al. (2024), "Muon: An optimizer for hidden layers in neural networks",
        https://kellerjordan.github.io/posts/muon/.
        Liu et al. (2025), "Muon is Scalable for LLM Training", arXiv:2502.16982.
    """

    def __init__(self, learning_rate=0.02, momentum=0.95, nesterov=True, ns_steps=5, ns_coefficients=NS_COEFFICIENTS,
                 epsilon=1e-7, adjust_learning_rate="original", weight_decay=None, flatten_kernels=True,
                 exclude_layers=None, exclude_embeddings=True, adamw_learning_rate=3e-4, adamw_beta_1=0.9,
                 adamw_beta_2=0.95, adamw_epsilon=1e-10, adamw_weight_decay=None, split_orthogonalization=False,
                 name="muon", **kwargs):  # fmt: skip
        # Keras's weight decay is replaced by the two decays below, applied in the updates.
        super().__init__(learning_rate, name=name, weight_decay=None, **kwargs)
        self.momentum = check_unit_interval("momentum", momentum)
        self.nesterov = check_bool("nesterov", nesterov)
        self.ns_steps = check_int("ns_steps", ns_steps, minimum=1)
        self.ns_coefficients = _check_coefficients(ns_coefficients)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.adjust_learning_rate = check_choice("adjust_learning_rate", adjust_learning_rate, ADJUST_LEARNING_RATE)
        self.muon_weight_decay = check_non_negative("weight_decay", weight_decay, allow_none=True)
        self.flatten_kernels = check_bool("flatten_kernels", flatten_kernels)
        self.exclude_layers = check_strings("exclude_layers", exclude_layers, allow_none=True)
        self.exclude_embeddings = check_bool("exclude_embeddings", exclude_embeddings)
        self.adamw_learning_rate = check_learning_rate("adamw_learning_rate", adamw_learning_rate)
        self.adamw_beta_1 = check_unit_interval("adamw_beta_1", adamw_beta_1)
        self.adamw_beta_2 = check_unit_interval("adamw_beta_2", adamw_beta_2)
        self.adamw_epsilon = check_non_negative("adamw_epsilon", adamw_epsilon)
        self.adamw_weight_decay = check_non_negative("adamw_weight_decay", adamw_weight_decay, allow_none=True)
        self.split_orthogonalization = check_bool("split_orthogonalization", split_orthogonalization)
        for option, replacement in _OPTIONS_THE_SPLIT_REPLACES.items():
            value = getattr(self, option, None)
            if self.split_orthogonalization and value:
                raise ValueError(f"split_orthogonalization=True does not combine with {option}={value!r}, which Keras "
                                 f"applies in the apply that the split replaces; use {replacement} instead")

    def orthogonalizes(self, variable) -> bool:
        """Whether `variable` takes Muon's orthogonalised step (False: AdamW's)."""
        rank = len(variable.shape)
        if rank < 2 or (rank > 2 and not self.flatten_kernels):
            return False
        path = getattr(variable, "path", None) or variable.name
        layer_and_name = "/".join(path.split("/")[-2:])
        if self.exclude_embeddings and "embedding" in layer_and_name.lower():
            return False
        return not any(part in layer_and_name for part in self.exclude_layers)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._orthogonalized = [self.orthogonalizes(variable) for variable in var_list]
        self._momentums = self.add_optimizer_variables(var_list, "momentum")
        adamw_variables = [v for v, orthogonal in zip(var_list, self._orthogonalized) if not orthogonal]
        velocities = iter(self.add_optimizer_variables(adamw_variables, "velocity"))
        self._velocities = [None if orthogonal else next(velocities) for orthogonal in self._orthogonalized]

    def current_adamw_learning_rate(self):
        """lr_a at this step: the number, the schedule at `iterations`, or the callable's value."""
        rate = self.adamw_learning_rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            return rate(self.iterations)
        return rate() if callable(rate) else rate

    def update_step(self, gradient, variable, learning_rate, orthogonalized=None):
        """One variable's step; `orthogonalized` is its orthogonalised direction when computed elsewhere."""
        index = self._get_variable_index(variable)
        dtype = keras.backend.result_type(variable.dtype, "float32")
        decays = not excluded_from_weight_decay(self, variable)
        momentum = self._momentums[index]
        if not self._orthogonalized[index]:
            self._adamw_step(gradient, variable, momentum, self._velocities[index], dtype,
                             decay=(self.adamw_weight_decay or 0.0) if decays else 0.0)  # fmt: skip
            return
        beta = self.momentum
        learning_rate = scalar(learning_rate, dtype)
        self.update_in_place(
            muon_update,
            (variable, momentum),
            variable,
            gradient,
            momentum,
            orthogonalized,
            learning_rate=learning_rate,
            scaled_learning_rate=learning_rate * scalar(shape_scale(variable.shape, self.adjust_learning_rate), dtype),
            weight_decay=scalar((self.muon_weight_decay or 0.0) if decays else 0.0, dtype),
            beta=scalar(beta, dtype),
            one_minus_beta=scalar(1.0 - beta, dtype),
            nesterov=self.nesterov,
            shape=tuple(variable.shape),
            ns_steps=self.ns_steps,
            coefficients=tuple(scalar(c, dtype) for c in self.ns_coefficients),
            epsilon=scalar(self.epsilon, dtype),
        )

    def _adamw_step(self, gradient, variable, m, v, dtype, *, decay: float):
        step = step_number(self.iterations)
        self.update_in_place(
            adamw_update,
            (variable, m, v),
            variable,
            gradient,
            m,
            v,
            learning_rate=scalar(self.current_adamw_learning_rate(), dtype),
            weight_decay=scalar(decay, dtype),
            beta_1=scalar(self.adamw_beta_1, dtype),
            one_minus_beta_1=scalar(1.0 - self.adamw_beta_1, dtype),
            beta_2=scalar(self.adamw_beta_2, dtype),
            one_minus_beta_2=scalar(1.0 - self.adamw_beta_2, dtype),
            epsilon=scalar(self.adamw_epsilon, dtype),
            bias_correction_1=scalar(one_minus_power(self.adamw_beta_1, step), dtype),
            bias_correction_2=scalar(one_minus_power(self.adamw_beta_2, step), dtype),
        )

    # --- split_orthogonalization: each replica orthogonalises a share of the matrices ----------

    # Plain Python around explicit tf.distribute calls (as OptimizerWrapper.apply): nothing for AutoGraph.
    @tf.autograph.experimental.do_not_convert
    def apply(self, grads, trainable_variables=None):
        context = tf.distribute.get_replica_context()
        if not self.split_orthogonalization or context is None or context.num_replicas_in_sync == 1:
            return super().apply(grads, trainable_variables)
        trainable_variables = list(optimizer_built_variables(self) if trainable_variables is None
                                   else trainable_variables)  # fmt: skip
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        pairs = [(g, v) for g, v in zip(grads, trainable_variables) if g is not None]
        if not pairs:
            return
        gradients, variables = [g for g, _ in pairs], [v for _, v in pairs]
        if self.loss_scale_factor is not None:
            gradients = [g / self.loss_scale_factor for g in gradients]
        gradients = sum_gradients(gradients)  # as Keras's apply does, or as the strategy's GradientCommunication says
        with keras.name_scope(self.name, caller=self):
            directions = self._shared_orthogonalized_directions(gradients, variables)
            context.merge_call(functools.partial(self._update_from_directions, variables=variables),
                               args=(gradients, directions))  # fmt: skip

    def _shared_orthogonalized_directions(self, gradients, variables):
        """Each matrix's orthogonalised direction, computed by one replica, on every replica (None: AdamW's)."""
        matrices = [i for i, v in enumerate(variables) if self._orthogonalized[self._get_variable_index(v)]]
        functions, specs = [], []
        for i in matrices:
            dtype = keras.backend.result_type(variables[i].dtype, "float32")
            momentum = self._momentums[self._get_variable_index(variables[i])]
            functions.append(functools.partial(self._orthogonalized_direction, gradients[i], momentum, dtype))
            specs.append(tf.TensorSpec(variables[i].shape, dtype))
        shared = computed_once_and_shared(functions, specs, [orthogonalization_cost(s.shape) for s in specs])
        directions = [None] * len(variables)
        for i, direction in zip(matrices, shared):
            directions[i] = direction
        return directions

    def _orthogonalized_direction(self, gradient, momentum, dtype):
        """This step's orthogonalised direction from the summed gradient and this replica's momentum copy."""
        function = _COMPILED_ORTHOGONALIZED_DIRECTION if self.fused_updates else orthogonalized_direction
        return function(gradient, tf.convert_to_tensor(momentum.value), beta=scalar(self.momentum, dtype),
                        one_minus_beta=scalar(1.0 - self.momentum, dtype), nesterov=self.nesterov,
                        shape=tuple(momentum.shape), ns_steps=self.ns_steps,
                        coefficients=tuple(scalar(c, dtype) for c in self.ns_coefficients),
                        epsilon=scalar(self.epsilon, dtype))  # fmt: skip

    def _update_from_directions(self, distribution, gradients, directions, variables):
        """Cross-replica context: every device's copy of each variable steps with the shared directions."""
        learning_rate = self.learning_rate
        for gradient, direction, variable in zip(gradients, directions, variables):
            distribution.extended.update(variable.value, self._update_copy, args=(gradient, learning_rate, direction),
                                         group=False)  # fmt: skip
        for variable in variables:
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable))
        self.iterations.assign_add(1)

    def _update_copy(self, variable, gradient, learning_rate, direction):
        self.update_step(gradient, variable, learning_rate, orthogonalized=direction)

    def get_config(self):
        adamw_learning_rate = self.adamw_learning_rate
        if isinstance(adamw_learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            adamw_learning_rate = keras.optimizers.schedules.serialize(adamw_learning_rate)
        elif callable(adamw_learning_rate):
            adamw_learning_rate = float(adamw_learning_rate())
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "ns_steps": self.ns_steps,
            "ns_coefficients": list(self.ns_coefficients),
            "epsilon": self.epsilon,
            "adjust_learning_rate": self.adjust_learning_rate,
            "weight_decay": self.muon_weight_decay,
            "flatten_kernels": self.flatten_kernels,
            "exclude_layers": list(self.exclude_layers),
            "exclude_embeddings": self.exclude_embeddings,
            "adamw_learning_rate": adamw_learning_rate,
            "adamw_beta_1": self.adamw_beta_1,
            "adamw_beta_2": self.adamw_beta_2,
            "adamw_epsilon": self.adamw_epsilon,
            "adamw_weight_decay": self.adamw_weight_decay,
            "split_orthogonalization": self.split_orthogonalization,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("adamw_learning_rate"), dict):
            config["adamw_learning_rate"] = keras.optimizers.schedules.deserialize(
                config["adamw_learning_rate"], custom_objects=custom_objects
            )
        return super().from_config(config, custom_objects=custom_objects)
