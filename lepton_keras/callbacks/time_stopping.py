"""Stop training when a wall-clock budget is spent, at the same step on every worker."""

from __future__ import annotations

import time

import keras
import tensorflow as tf

from lepton_keras.validation import check_choice, check_int, check_positive, invalid


def budget_spent(elapsed_seconds: float, seconds: float) -> bool:
    """True once `seconds` have elapsed."""
    return elapsed_seconds >= seconds


def chief_value(value: float, strategy) -> float:
    """The chief's `value` on every worker: an all-reduce sum to which only replica 0 (on the chief) adds.

    Outside a multi-worker strategy there is one process and one clock: the value itself.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return value
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(value if context.replica_id_in_sync_group == 0 else 0.0, tf.float64)
    )
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None))


@keras.saving.register_keras_serializable(package="lepton_keras")
class TimeStopping(keras.callbacks.Callback):
    """Sets `model.stop_training` once `seconds` of wall-clock time have passed since `fit` began.

    When to use it: on a cluster or a CI machine with a time limit, to end training cleanly
    (callbacks' `on_train_end` runs, checkpoints are written) before the job is killed.
    Keras stops after the current batch (check="batch") or epoch (check="epoch").

        elapsed = clock() - clock() at on_train_begin;   stop when elapsed >= seconds

    Under MultiWorkerMirroredStrategy every worker must stop at the same step, or the others
    wait forever in the next all-reduce. Each worker's clock differs, so the callback uses
    the chief's: at every check the chief's elapsed time is all-reduced to every worker (one
    8-byte collective per check) and all workers compare the same number. Under other
    strategies there is one process and no communication.

    Args:
        seconds: the time budget, a finite number > 0.
        check: "batch" (default) or "epoch": when to look at the clock.
        verbose: 1 prints a line when the budget stops training (default 0).
        clock: a function returning seconds (default `time.monotonic`); tests pass a fake clock.
            It is not saved in `get_config`.

    Example:
        model.fit(dataset, epochs=1000, callbacks=[TimeStopping(3.5 * 3600, check="epoch")])
    """

    def __init__(self, seconds: float, *, check: str = "batch", verbose: int = 0, clock=time.monotonic):
        super().__init__()
        if not callable(clock):
            raise invalid("clock", clock, "a function returning seconds")
        self.seconds = check_positive("seconds", seconds)
        self.check = check_choice("check", check, ("batch", "epoch"))
        self.verbose = check_int("verbose", verbose, minimum=0)
        self.clock = clock
        self.stopped_at = None  # (epoch, batch) where the budget stopped training, or None

    def on_train_begin(self, logs=None):
        self._start = self.clock()
        self._epoch = 0
        self.stopped_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.check == "batch":
            self._check(batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.check == "epoch":
            self._check(None)

    def _check(self, batch) -> None:
        elapsed = chief_value(self.clock() - self._start, self.model.distribute_strategy)
        if budget_spent(elapsed, self.seconds):
            self.model.stop_training = True
            self.stopped_at = (self._epoch, batch)
            if self.verbose:
                where = f"epoch {self._epoch + 1}" + ("" if batch is None else f", batch {batch + 1}")
                print(f"\nTimeStopping: {elapsed:.1f} s of {self.seconds} s spent; stopping after {where}.")

    def get_config(self):
        return {"seconds": self.seconds, "check": self.check, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
