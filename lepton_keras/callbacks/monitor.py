"""Writes the learning rate (and momentum) into the logs, for History, CSVLogger and TensorBoard."""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.callbacks.learning_rate import current_learning_rate, innermost_optimizer
from lepton_keras.validation import check_bool

MOMENTUM_ATTRIBUTES = ("momentum", "beta_1")


def optimizer_hyperparameters(optimizer, *, log_momentum: bool = True) -> dict[str, float]:
    """{"learning_rate": ..., and "momentum" / "beta_1" where the innermost optimizer has them}."""
    values = {"learning_rate": current_learning_rate(optimizer)}
    if log_momentum:
        innermost = innermost_optimizer(optimizer)
        for name in MOMENTUM_ATTRIBUTES:
            value = getattr(innermost, name, None)
            if callable(value):
                value = value()
            if value is not None:
                values[name] = float(ops.convert_to_numpy(value))
    return values


@keras.saving.register_keras_serializable(package="lepton_keras")
class LearningRateMonitor(keras.callbacks.Callback):
    """Adds "learning_rate" (and "momentum" or "beta_1") to the logs at every batch and epoch end.

    When to use it: to see what the learning rate did (a schedule, a warmup, a plateau
    reduction) in `History`, `CSVLogger`, `TensorBoard` or the progress bar. The value is
    `optimizer.learning_rate` at that moment, as Keras's own ReduceLROnPlateau and
    TensorBoard log it: the rate the next step will use (a schedule evaluated at the
    current iteration count, times any multiplier). "momentum" is logged for optimizers with
    a `momentum` attribute (SGD, RMSprop), "beta_1" for those with a `beta_1` (Adam and kin),
    looking through wrappers (`inner_optimizer`).

    Order: Keras passes one logs dict from callback to callback in list order, so put this
    callback BEFORE `CSVLogger`, `TensorBoard` and any callback that should see the values.
    `History` (and the progress bar) need nothing: `fit` appends them after your callbacks.

    Args:
        log_momentum: also log "momentum" / "beta_1" (default True).

    Example:
        history = model.fit(x, y, epochs=5, callbacks=[LearningRateMonitor(), keras.callbacks.CSVLogger("log.csv")])
        history.history["learning_rate"]
    """

    def __init__(self, *, log_momentum: bool = True):
        super().__init__()
        self.log_momentum = check_bool("log_momentum", log_momentum)

    def _log(self, logs) -> None:
        if logs is not None:
            logs.update(optimizer_hyperparameters(self.model.optimizer, log_momentum=self.log_momentum))

    def on_train_batch_end(self, batch, logs=None):
        self._log(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._log(logs)

    def get_config(self):
        return {"log_momentum": self.log_momentum}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
