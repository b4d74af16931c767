"""Stochastic depth: drop a residual branch at random while training.

Huang, Sun, Liu, Sedra and Weinberger (2016), "Deep Networks with Stochastic Depth",
arXiv:1603.09382.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.layers.seed_state import SavesSeedState
from lepton_keras.validation import check_bool, check_int, check_unit_interval


def stochastic_depth(shortcut, residual, survival_probability: float, keep=None):
    """shortcut + keep * residual (training), or shortcut + p * residual (inference, keep=None).

    `keep` holds the Bernoulli(p) draws, 0 or 1: a scalar for the whole batch, or one value
    per example of shape (batch, 1, ..., 1).
    """
    if keep is None:
        return shortcut + ops.cast(survival_probability, residual.dtype) * residual
    return shortcut + ops.cast(keep, residual.dtype) * residual


@keras.saving.register_keras_serializable(package="lepton_keras")
class StochasticDepth(SavesSeedState, keras.layers.Layer):
    """Adds a residual branch to its shortcut, or, at random while training, drops the branch.

    When to use it: in deep residual networks (ResNets, ConvNeXt, vision transformers), as
    a regulariser that trains an implicit ensemble of shallower networks and shortens the
    expected depth seen by the gradient. Call it on `[shortcut, residual]` in place of
    `keras.layers.Add()`; give later blocks lower survival probabilities (the paper's linear
    decay from 1 at the input to 0.5 at the last block).

    With survival probability p, for a block with shortcut x and residual f(x):

        training:   y = x + b * f(x),   b ~ Bernoulli(p)
        inference:  y = x + p * f(x)    (the expected training output)

    By default b is drawn once per call, for the whole batch, as in the paper and in
    TensorFlow Addons; with `per_example=True` each example draws its own b.

    Under a distribution strategy every replica draws from the same seed state, so the
    per-batch b is the same on every replica and equals the one-device draw: training gives
    the same numbers on 1 device and N replicas. Per-example draws are made per replica
    (as `keras.layers.Dropout` does), so they differ from the one-device draws, and the
    i-th example of each replica's share of the batch gets the same b.

    Args:
        survival_probability: p in [0, 1], the probability of keeping the residual branch
            (default 0.5).
        per_example: draw b for each example rather than once per batch (default False).
        seed: an integer seed for the draws (default None: drawn from Python's `random`,
            which `keras.utils.set_random_seed` fixes). The seed state is saved with the
            model, so a reloaded model goes on with the draws where it stopped.

    Example:
        inputs = keras.Input((32, 32, 16))
        residual = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        residual = keras.layers.Conv2D(16, 3, padding="same")(residual)
        outputs = StochasticDepth(survival_probability=0.8, seed=1)([inputs, residual])
        model = keras.Model(inputs, outputs)

    References:
        Huang et al. (2016), "Deep Networks with Stochastic Depth", arXiv:1603.09382.
    """

    def __init__(self, survival_probability: float = 0.5, *, per_example: bool = False, seed: int | None = None,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.survival_probability = check_unit_interval("survival_probability", survival_probability,
                                                        closed_at_one=True)
        self.per_example = check_bool("per_example", per_example)
        self.seed = check_int("seed", seed, allow_none=True)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, input_shape):
        if not (
            isinstance(input_shape, (list, tuple))
            and len(input_shape) == 2
            and all(isinstance(shape, (list, tuple)) for shape in input_shape)
        ):
            raise ValueError(f"StochasticDepth is called on [shortcut, residual], received shape(s): {input_shape}")
        shortcut_shape, residual_shape = input_shape
        if len(shortcut_shape) != len(residual_shape) or any(
            a is not None and b is not None and a != b for a, b in zip(shortcut_shape, residual_shape)
        ):
            raise ValueError(
                "StochasticDepth needs a shortcut and a residual of the same shape, received: "
                f"{tuple(shortcut_shape)} and {tuple(residual_shape)}"
            )

    def call(self, inputs, training=None):
        shortcut, residual = inputs
        if not training:
            return stochastic_depth(shortcut, residual, self.survival_probability)
        shape = ()
        if self.per_example:
            shape = (ops.shape(residual)[0],) + (1,) * (len(residual.shape) - 1)
        draws = keras.random.uniform(shape, seed=self.seed_generator)
        return stochastic_depth(shortcut, residual, self.survival_probability, draws < self.survival_probability)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {
            **super().get_config(),
            "survival_probability": self.survival_probability,
            "per_example": self.per_example,
            "seed": self.seed,
        }
