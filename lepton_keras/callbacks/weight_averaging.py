"""Evaluating with the averaged weights of StochasticWeightAveraging or ExponentialMovingAverage during fit."""

from __future__ import annotations

import keras

from lepton_keras.optimizers.weight_averaging import WeightAveraging
from lepton_keras.validation import check_bool, invalid


def find_weight_averaging(optimizer) -> WeightAveraging:
    """The averaging wrapper in `optimizer`, looking through wrappers and LossScaleOptimizer.

    Raises:
        ValueError: no StochasticWeightAveraging or ExponentialMovingAverage in it.
    """
    current = optimizer
    while current is not None:
        if isinstance(current, WeightAveraging):
            return current
        current = getattr(current, "inner_optimizer", None)
    raise invalid("optimizer", optimizer,
                  "an optimizer holding a StochasticWeightAveraging or ExponentialMovingAverage")  # fmt: skip


@keras.saving.register_keras_serializable(package="lepton_keras")
class AverageWeightsForEvaluation(keras.callbacks.Callback):
    """Validates (and evaluates) with the averaged weights; training continues from its own weights.

    When to use it: with a StochasticWeightAveraging or ExponentialMovingAverage optimizer,
    so that the validation metrics `fit` reports are those of the average you will ship.
    The training weights are restored exactly after each evaluation. With
    `assign_at_end=True` the model keeps the average when training ends. A model with
    BatchNormalization should re-estimate its statistics for the average
    (`lepton_keras.optimizers.recompute_batch_norm_statistics`) before it is used for good.

    Args:
        optimizer: the averaging optimizer (default None: found in the model's optimizer,
            through wrappers and LossScaleOptimizer).
        assign_at_end: set the model's weights to the average at the end of training
            (default False).

    Example:
        model.compile(optimizer=ExponentialMovingAverage(keras.optimizers.Adam(1e-3), decay=0.99), loss="mse")
        model.fit(x, y, validation_data=(x_val, y_val), callbacks=[AverageWeightsForEvaluation()])
    """

    def __init__(self, optimizer=None, *, assign_at_end: bool = False):
        super().__init__()
        if optimizer is not None:
            find_weight_averaging(optimizer)
        self.optimizer = optimizer
        self.assign_at_end = check_bool("assign_at_end", assign_at_end)
        self._swap = None

    def _averaging(self) -> WeightAveraging:
        return find_weight_averaging(self.optimizer if self.optimizer is not None else self.model.optimizer)

    def on_train_begin(self, logs=None):
        self._averaging()  # no averaging in the optimizer: say so before the first step, not at the first validation

    def on_test_begin(self, logs=None):
        self._swap = self._averaging().swap_average_weights(self.model)
        self._swap.__enter__()

    def on_test_end(self, logs=None):
        if self._swap is not None:
            swap, self._swap = self._swap, None
            swap.__exit__(None, None, None)

    def on_train_end(self, logs=None):
        if self.assign_at_end:
            self._averaging().assign_average_weights(self.model)

    def get_config(self):
        # The optimizer is not part of the config: a restored callback finds it in the model.
        return {"assign_at_end": self.assign_at_end}
