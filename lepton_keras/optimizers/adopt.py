"""ADOPT: Adam normalised by the previous second moment, so it converges with any beta_2.

Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa and Matsuo (2024),
"ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate", NeurIPS 2024,
arXiv:2411.02853.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.distribute.keras_compat import excluded_from_weight_decay
from lepton_keras.optimizers.base import STEP_DTYPE, LeptonOptimizer, scalar
from lepton_keras.validation import check_non_negative, check_unit_interval


def adopt_update(variable, gradient, m, v, *, learning_rate, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2,
                 epsilon, clip_value, weight_decay, first_step):  # fmt: skip
    """One ADOPT step; returns (new_variable, new_m, new_v) without assigning anything.

    On the `first_step` only v is set, to g^2. Afterwards the gradient is normalised by the
    previous v, clipped to [-clip_value, clip_value] (inf: no clipping), and averaged into m;
    the weights take the decoupled decay and the step -learning_rate m; then v takes in g^2.
    Every scalar is in the variable's dtype, computed in double precision (one_minus_beta_i is
    1 - beta_i).
    """
    squared_gradient = ops.square(gradient)
    normalized = gradient / ops.maximum(ops.sqrt(v), epsilon)
    normalized = ops.clip(normalized, -clip_value, clip_value)
    new_m = beta_1 * m + one_minus_beta_1 * normalized
    new_variable = variable - learning_rate * weight_decay * variable - learning_rate * new_m
    new_v = beta_2 * v + one_minus_beta_2 * squared_gradient
    return (
        ops.where(first_step, variable, new_variable),
        ops.where(first_step, m, new_m),
        ops.where(first_step, squared_gradient, new_v),
    )


def adopt_clip_value(*, clip_exponent: float | None, update_number):
    """c_t = t^clip_exponent for the t-th weight update (t = 1 on the second call), in `STEP_DTYPE`;
    inf when `clip_exponent` is None (no clipping)."""
    if clip_exponent is None:
        return scalar(float("inf"), STEP_DTYPE)
    return ops.power(ops.cast(update_number, STEP_DTYPE), clip_exponent)


@keras.saving.register_keras_serializable(package="lepton_keras")
class ADOPT(LeptonOptimizer):
    """ADOPT: Adam that normalises the gradient by the second moment of the previous steps.

    When to use it: as a drop-in replacement for Adam (AdamW with `weight_decay`) where
    Adam's choice of beta_2 matters or training is unstable early. Adam can diverge unless
    beta_2 is chosen for the problem; ADOPT converges at the optimal rate for any beta_2
    (the authors' default is 0.9999) by two changes: the current gradient is left out of
    the second moment it is divided by, and the division comes before the momentum. No
    bias correction is needed. It keeps Adam's two slots.

    With gradient g_t, the first call (t = 0) only sets v_0 = g_0^2 (m_0 = 0; the weights are
    left unchanged). Then, for t = 1, 2, ... (the paper's ADOPT with the clipping of its
    updated version):

        c_t = t^clip_exponent
        m_t = beta_1 m_{t-1} + (1 - beta_1) clip(g_t / max(sqrt(v_{t-1}), epsilon), -c_t, c_t)
        w_t = w_{t-1} - lr weight_decay w_{t-1} - lr m_t
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2

    The clipping is the authors' (their `clip_lambda=lambda step: step**0.25`, added in the
    updated paper against near-zero divisions early in training, with the convergence
    guarantee kept); `clip_exponent=None` is the original, unclipped ADOPT. `weight_decay` is
    decoupled, as the authors' `decouple=True` (the AdamW form, w -= lr weight_decay w), and
    like theirs skips the first call; it replaces Keras's own form, which would also decay
    on the first call. `exclude_from_weight_decay(...)` is honoured. The authors' default,
    `decouple=False`, adds an L2 term to the gradient instead; use a kernel regularizer for
    that. pytorch-optimizer's ADOPT differs from the authors': its clip value is (t + 1)^0.25
    (its step count is one ahead) and it decays on the first call.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule` or
            a callable (default 0.001).
        beta_1: decay rate of the momentum, in [0, 1) (default 0.9).
        beta_2: decay rate of the second moment, in [0, 1) (default 0.9999).
        epsilon: lower bound of sqrt(v), >= 0 (default 1e-6, the authors').
        clip_exponent: the normalised gradient is clipped to +-t^clip_exponent at the t-th
            update, >= 0, or None for no clipping (default 0.25, the authors').
        weight_decay: decoupled weight decay, >= 0 or None (default None).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.ADOPT(1e-3), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Taniguchi et al. (2024), "ADOPT: Modified Adam Can Converge with Any beta_2 with the
        Optimal Rate", arXiv:2411.02853; the authors' code: github.com/iShohei220/adopt.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.9999, epsilon=1e-6, clip_exponent=0.25,
                 weight_decay=None, name="adopt", **kwargs):  # fmt: skip
        # ADOPT's own decoupled decay (which skips the first call) replaces Keras's.
        super().__init__(learning_rate, name=name, weight_decay=None, **kwargs)
        self.beta_1 = check_unit_interval("beta_1", beta_1)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.clip_exponent = check_non_negative("clip_exponent", clip_exponent, allow_none=True)
        self.adopt_weight_decay = check_non_negative("weight_decay", weight_decay, allow_none=True)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        decayed = self.adopt_weight_decay and not excluded_from_weight_decay(self, variable)
        self.update_in_place(
            adopt_update,
            (variable, m, v),
            variable,
            ops.cast(gradient, dtype),
            m,
            v,
            learning_rate=scalar(learning_rate, dtype),
            beta_1=scalar(self.beta_1, dtype),
            one_minus_beta_1=scalar(1.0 - self.beta_1, dtype),
            beta_2=scalar(self.beta_2, dtype),
            one_minus_beta_2=scalar(1.0 - self.beta_2, dtype),
            epsilon=scalar(self.epsilon, dtype),
            clip_value=scalar(adopt_clip_value(clip_exponent=self.clip_exponent, update_number=self.iterations), dtype),
            weight_decay=scalar(self.adopt_weight_decay if decayed else 0.0, dtype),
            first_step=ops.equal(self.iterations, 0),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "clip_exponent": self.clip_exponent,
            "weight_decay": self.adopt_weight_decay,
        }
