"""Reduce the learning rate when a monitored quantity stops improving, schedules included."""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from lepton_keras.callbacks.learning_rate import current_learning_rate, ensure_scalable, set_learning_rate
from lepton_keras.validation import check_choice, check_int, check_non_negative, check_number, check_string, invalid

# Metric names whose larger values are better, for mode="auto" (anything else named "*loss*" or
# "*error*" is minimised; other names need an explicit mode).
_MAXIMISED = ("acc", "auc", "precision", "recall", "iou", "f1", "fbeta", "r2")
_MINIMISED = ("loss", "error", "crossentropy", "hinge", "divergence", "poisson")


def infer_mode(monitor: str) -> str:
    """"min" or "max" for a metric name, as `mode="auto"` reads it; ValueError when the name says nothing."""
    name = monitor.removeprefix("val_").lower()
    if any(word in name for word in _MINIMISED):
        return "min"
    if any(word in name for word in _MAXIMISED):
        return "max"
    raise invalid("monitor", monitor, "a name holding 'loss', 'error', 'acc', 'auc', ... with mode='auto' "
                  "(else pass mode='min' or 'max')")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PlateauState:
    best: float | None = None
    wait: int = 0
    cooldown_counter: int = 0


def plateau_step(state: PlateauState, current: float, *, mode: str, min_delta: float,
                 patience: int) -> tuple[PlateauState, bool]:  # fmt: skip
    """One epoch of the plateau rule: the new state, and whether to reduce the learning rate now.

    An epoch improves when current < best - min_delta ("min") or current > best + min_delta
    ("max"); the first epoch always does. During a cooldown the wait count stays at 0. After
    `patience` epochs in a row without improvement (outside cooldown) the rate is reduced;
    the caller then calls `after_reduction` if it really reduced it.
    """
    cooldown_counter, wait, best = state.cooldown_counter, state.wait, state.best
    if cooldown_counter > 0:
        cooldown_counter -= 1
        wait = 0
    improved = best is None or (current < best - min_delta if mode == "min" else current > best + min_delta)
    if improved:
        return PlateauState(current, 0, cooldown_counter), False
    if cooldown_counter > 0:
        return PlateauState(best, wait, cooldown_counter), False
    wait += 1
    return PlateauState(best, wait, cooldown_counter), wait >= patience


def after_reduction(state: PlateauState, cooldown: int) -> PlateauState:
    """The state once the learning rate was reduced: a new cooldown, and the wait starts again."""
    return PlateauState(state.best, 0, cooldown)


def reduced_learning_rate(learning_rate: float, factor: float, min_lr: float) -> float | None:
    """max(lr * factor, min_lr), or None when lr is already at min_lr (compared in float32, as Keras does)."""
    if not learning_rate > np.float32(min_lr):
        return None
    return max(learning_rate * factor, min_lr)


@keras.saving.register_keras_serializable(package="lepton_keras")
class ReduceLROnPlateau(keras.callbacks.Callback):
    """Multiplies the learning rate by `factor` when `monitor` has not improved for `patience` epochs.

    When to use it: as `keras.callbacks.ReduceLROnPlateau` (same arguments, same decisions),
    but also when the optimizer was built with a LearningRateSchedule, where Keras's own
    callback raises TypeError. With a schedule the callback scales the schedule's multiplier
    (see `MultipliedSchedule`, set up in `on_train_begin`): the schedule keeps its shape and
    the whole remaining curve is multiplied.

    At each epoch end, with m the monitored value:

        improved  = m < best - min_delta   (mode "min";  m > best + min_delta in mode "max")
        improved: best = m, wait = 0;  in cooldown: wait = 0;  otherwise wait += 1
        wait >= patience and lr > min_lr:  lr = max(lr * factor, min_lr), wait = 0, cooldown starts

    lr is the effective rate of the next step (`optimizer.learning_rate`, the schedule at the
    current step times the multiplier); `min_lr` bounds it at the moment of a reduction (a
    schedule that decays later may still go below `min_lr`). The learning rate is logged
    as "learning_rate" at each epoch end, as Keras's callback does.

    Args:
        monitor: the logged quantity to watch (default "val_loss").
        factor: the reduction factor, in (0, 1) (default 0.1).
        patience: epochs without improvement before a reduction, >= 0 (default 10).
        mode: "auto", "min" or "max" (default "auto": "max" for names with "acc", "auc",
            "precision", "recall", "iou", "f1", "r2"; "min" for names with "loss", "error",
            "crossentropy", ...; an error otherwise).
        min_delta: the smallest change that counts as an improvement, >= 0 (default 1e-4).
        cooldown: epochs to wait after a reduction before counting again, >= 0 (default 0).
        min_lr: the lowest learning rate a reduction goes to, >= 0 (default 0.0).
        verbose: 1 prints a line at each reduction (default 0).

    Example:
        optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, 10_000))
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, validation_split=0.1, epochs=100, callbacks=[ReduceLROnPlateau(patience=5, factor=0.5)])
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, mode: str = "auto",
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0, verbose: int = 0):  # fmt: skip
        super().__init__()
        self.monitor = check_string("monitor", monitor)
        self.factor = check_number("factor", factor, lambda x: 0.0 < x < 1.0, "a number in (0, 1)")
        self.patience = check_int("patience", patience, minimum=0)
        self.mode = check_choice("mode", mode, ("auto", "min", "max"))
        if mode == "auto":
            infer_mode(monitor)  # fail now, not after the first epoch
        self.min_delta = check_non_negative("min_delta", min_delta)
        self.cooldown = check_int("cooldown", cooldown, minimum=0)
        self.min_lr = check_non_negative("min_lr", min_lr)
        self.verbose = check_int("verbose", verbose, minimum=0)
        self.state = PlateauState()

    def on_train_begin(self, logs=None):
        self.state = PlateauState()
        ensure_scalable(self.model.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["learning_rate"] = current_learning_rate(optimizer)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                f"ReduceLROnPlateau monitors {self.monitor!r}, which is not in the logs; available: {sorted(logs)}",
                stacklevel=2,
            )
            return
        mode = infer_mode(self.monitor) if self.mode == "auto" else self.mode
        self.state, reduce = plateau_step(
            self.state, float(current), mode=mode, min_delta=self.min_delta, patience=self.patience
        )
        if not reduce:
            return
        new_learning_rate = reduced_learning_rate(logs["learning_rate"], self.factor, self.min_lr)
        if new_learning_rate is None:
            return
        set_learning_rate(optimizer, new_learning_rate)
        self.state = after_reduction(self.state, self.cooldown)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_learning_rate:.6g}.")

    def get_config(self):
        return {
            "monitor": self.monitor,
            "factor": self.factor,
            "patience": self.patience,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

