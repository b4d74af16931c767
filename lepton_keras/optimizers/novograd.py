"""NovoGrad: momentum on gradients normalised by a per-layer second moment.

Ginsburg, Castonguay, Hrinchuk, Kuchaiev, Lavrukhin, Leary, Li, Nguyen, Zhang and Cohen (2019),
"Stochastic Gradient Methods with Layer-wise Adaptive Moments for Training of Deep Networks"
(v3: "Training Deep Networks with Stochastic Gradient Normalized by Layerwise Adaptive Second
Moments"), arXiv:1905.11286.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.optimizers.base import LeptonOptimizer, scalar, squared_norm
from lepton_keras.validation import check_bool, check_non_negative, check_unit_interval


def novograd_update(variable, gradient, m, v, *, squared_norm, learning_rate, beta_1, averaging_weight, beta_2,
                    one_minus_beta_2, epsilon, momentum_weight_decay, first_step):  # fmt: skip
    """One NovoGrad step; returns (new_variable, new_m, new_v) without assigning anything.

    `v` is the layer's scalar second moment and `squared_norm` ||g_t||^2, both in the norms'
    dtype (at least float32, so that the squared norm of a large half-precision gradient does
    not overflow), as are beta_2, one_minus_beta_2 = 1 - beta_2 and epsilon; the other scalars
    are in the variable's dtype; averaging_weight is c (1 or 1 - beta_1). The scalars are
    computed in double precision.
    """
    dtype = variable.dtype
    norm_dtype = v.dtype
    # The paper initialises v_1 = ||g_1||^2 rather than bias-correcting an average from 0.
    v = ops.where(first_step, squared_norm, beta_2 * v + one_minus_beta_2 * squared_norm)
    # Normalised in the wider dtype: 1 / sqrt(v) overflows float16 for gradient norms < 2e-5.
    normalized = ops.cast(ops.cast(gradient, norm_dtype) / (ops.sqrt(v) + epsilon), dtype)
    normalized = averaging_weight * (normalized + momentum_weight_decay * variable)
    m = beta_1 * m + normalized
    return variable - learning_rate * m, m, v


@keras.saving.register_keras_serializable(package="lepton_keras")
class NovoGrad(LeptonOptimizer):
    """Momentum SGD on gradients normalised per layer by a moving average of their norm.

    When to use it: large-batch training of speech, language and image models, as a
    replacement for Adam/AdamW with half its memory (one scalar second moment per variable
    instead of one per weight) and little need for learning-rate warm-up: the normalised
    gradient makes each layer's step independent of its gradient's scale.

    For each variable ("layer") w with gradient g_t at step t = 1, 2, ... (Algorithm 1 of the
    paper), with d = `momentum_weight_decay`:

        t = 1:   v_1 = ||g_1||^2
        t > 1:   v_t = beta_2 v_{t-1} + (1 - beta_2) ||g_t||^2
        m_t = beta_1 m_{t-1} + c (g_t / (sqrt(v_t) + epsilon) + d w_{t-1}),   m_0 = 0
        w_t = w_{t-1} - lr m_t

    where c = 1 (the paper; so m_1 = g_1 / sqrt(v_1) + d w_0, its moment initialisation), or
    c = 1 - beta_1 with `grad_averaging=True` (an exponential moving average, as in
    NVIDIA's implementations). ||.|| is the L2 norm over the whole variable. Under a
    distribution strategy Keras sums gradients across replicas before the step, so the
    norms are those of the global gradient, as on one device.

    Weight decay: `momentum_weight_decay` is the paper's d, added to the normalised gradient
    (so it is independent of the gradient's scale and goes through the momentum). Keras's
    own `weight_decay` (w -= lr * weight_decay * w before each step) is also accepted;
    use one or the other. The paper's epsilon appears only from t = 2; here it is used at
    every step, so that a zero first gradient gives a zero step instead of 0 / 0.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule` or
            a callable (default 0.01).
        beta_1: momentum, in [0, 1) (default 0.95, the paper's).
        beta_2: decay rate of the layer's second moment, in [0, 1) (default 0.98, the paper's).
        epsilon: added to sqrt(v_t), >= 0 (default 1e-8).
        momentum_weight_decay: the paper's weight decay d, >= 0 (default 0.0).
        grad_averaging: multiply the normalised gradient by (1 - beta_1) (default False).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (weight_decay, clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.NovoGrad(0.01, momentum_weight_decay=0.001), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Ginsburg et al. (2019), "Stochastic Gradient Methods with Layer-wise Adaptive Moments
        for Training of Deep Networks", arXiv:1905.11286.
    """

    def __init__(self, learning_rate=0.01, beta_1=0.95, beta_2=0.98, epsilon=1e-8, momentum_weight_decay=0.0,
                 grad_averaging=False, name="novograd", **kwargs):  # fmt: skip
        super().__init__(learning_rate, name=name, **kwargs)
        self.beta_1 = check_unit_interval("beta_1", beta_1)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.momentum_weight_decay = check_non_negative("momentum_weight_decay", momentum_weight_decay)
        self.grad_averaging = check_bool("grad_averaging", grad_averaging)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")
        self._layer_velocities = [
            None
            if getattr(variable, "overwrite_with_gradient", False)
            else self.add_variable(
                shape=(),
                dtype=keras.backend.result_type(variable.dtype, "float32"),
                name=f"{getattr(variable, 'path', variable.name).replace('/', '_')}_layer_velocity",
            )
            for variable in var_list
        ]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._layer_velocities[index]
        norm_dtype = v.dtype
        gradient = ops.cast(gradient, dtype)
        self.update_in_place(
            novograd_update,
            (variable, m, v),
            variable,
            gradient,
            m,
            v,
            # Taken outside the fused update (see `squared_norm`).
            squared_norm=squared_norm(gradient, norm_dtype),
            learning_rate=scalar(learning_rate, dtype),
            beta_1=scalar(self.beta_1, dtype),
            averaging_weight=scalar(1.0 - self.beta_1 if self.grad_averaging else 1.0, dtype),
            beta_2=scalar(self.beta_2, norm_dtype),
            one_minus_beta_2=scalar(1.0 - self.beta_2, norm_dtype),
            epsilon=scalar(self.epsilon, norm_dtype),
            momentum_weight_decay=scalar(self.momentum_weight_decay, dtype),
            first_step=ops.equal(self.iterations, 0),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "momentum_weight_decay": self.momentum_weight_decay,
            "grad_averaging": self.grad_averaging,
        }
