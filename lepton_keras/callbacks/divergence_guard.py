"""Roll training back to the last good weights when the loss turns NaN/Inf or spikes, with a smaller learning rate."""

from __future__ import annotations

import collections
import dataclasses
import math

import keras
import numpy as np
from keras import ops

from lepton_keras.callbacks.learning_rate import current_learning_rate, ensure_scalable, scale_learning_rate
from lepton_keras.validation import check_int, check_number


def interval_mean(mean_now: float, batches_now: int, mean_before: float, batches_before: int) -> float:
    """The mean loss of batches (batches_before, batches_now] from two running means over the epoch.

    Keras logs m_n = (l_1 + ... + l_n) / n (batches of equal size), so the batches after the
    k-th have the mean (n m_n - k m_k) / (n - k).
    """
    if batches_before == 0:
        return mean_now
    return (batches_now * mean_now - batches_before * mean_before) / (batches_now - batches_before)


def is_diverged(loss: float, recent_losses, spike_factor: float | None) -> bool:
    """True for a NaN or infinite loss, or one above spike_factor * median(recent_losses)."""
    if not math.isfinite(loss):
        return True
    if spike_factor is None or len(recent_losses) == 0:
        return False
    return loss > spike_factor * float(np.median(recent_losses))


@dataclasses.dataclass(frozen=True)
class DivergenceEvent:
    """One restoration: at `step` (batches trained since `fit` began) the loss was `loss`."""

    step: int
    loss: float
    median: float | None
    restored_step: int  # the step the restored snapshot was taken at
    learning_rate: float  # the learning rate after the reduction


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Host copies of `variables` (the model's weights and every optimizer variable) taken after `step` batches."""

    step: int
    variables: tuple
    values: tuple

    @classmethod
    def take(cls, step: int, variables) -> Snapshot:
        variables = tuple(variables)
        return cls(step, variables, tuple(np.array(ops.convert_to_numpy(v), copy=True) for v in variables))

    def restore(self, variables) -> None:
        """Assigns the copies back; RuntimeError when `variables` are not the ones the snapshot was taken of."""
        variables = tuple(variables)
        if len(variables) != len(self.variables) or any(a is not b for a, b in zip(variables, self.variables)):
            raise RuntimeError(
                f"cannot restore the snapshot from step {self.step}: the model's and optimizer's variables "
                f"changed since the snapshot ({len(self.variables)} then, {len(variables)} now; was the model "
                "recompiled during fit?)"
            )
        for variable, value in zip(variables, self.values):
            variable.assign(value)


def build_optimizer(model) -> None:
    """Builds the model's optimizer (slots, a wrapper's own state) now, as `fit` does under a strategy.

    Without a strategy Keras builds it inside the first train step, after `on_train_begin`;
    a snapshot taken before would miss the slots. Under a strategy its variables must be
    created in the strategy's scope (mirrored), as `fit` does.
    """
    optimizer = model.optimizer
    if optimizer.built:
        return
    if not model.built:
        raise RuntimeError(
            "DivergenceGuard needs a built model to snapshot its weights at the start of fit "
            "(give it an Input, or call it on a batch before fit)"
        )
    with model.distribute_strategy.scope():
        optimizer.build(model.trainable_variables)


@keras.saving.register_keras_serializable(package="lepton_keras")
class DivergenceGuard(keras.callbacks.Callback):
    """Restores the last good weights and optimizer state when the loss diverges, and lowers the learning rate.

    When to use it: in long or aggressive runs (large learning rates, large batches, mixed
    precision) where a rare bad step (an overflow, a corrupt batch, a learning-rate peak)
    would otherwise turn the weights into NaN and waste the run. Unlike
    `keras.callbacks.TerminateOnNaN`, which stops, the guard rolls back and continues.

    Every `check_every` batches it takes L, the mean loss of the batches since its last check,
    and calls them diverged when

        L is NaN or Inf,   or   L > spike_factor * median(the last `window` good L)

    On divergence it assigns back the last good snapshot (bitwise: the model's weights and
    the optimizer's variables, iteration count and slots included, copied to NumPy arrays;
    the learning-rate variable is left alone), multiplies the learning rate by `lr_factor`
    (a schedule's multiplier, see `MultipliedSchedule`; the reduction stays in force), and
    goes on with the next batch. A snapshot is taken every `snapshot_every` good batches and
    counts as good only once the next check passes (the loss of a batch is computed before
    its update, so only the following loss vouches for the weights after it); the state at
    the start of `fit` is the first good snapshot, so a NaN at the first step recovers like
    one at the hundredth (the guard builds the optimizer in `on_train_begin`, in the
    strategy's scope, so that the snapshot holds every slot from the start; the model must
    be built). After `max_attempts` restorations of the same snapshot (the count restarts
    when a newer snapshot becomes good) it restores that snapshot once more and stops
    training with a RuntimeError that lists the losses: the model is left at the last good
    state, never at diverged weights. Restoring into other variables than the snapshot's
    (a model recompiled during `fit`) is a RuntimeError too.

    The loss it reads: Keras logs at each batch end the running mean m_n of the loss over
    the epoch so far, already averaged over every replica and worker, so every replica and
    worker sees the same number and takes the same decisions (no extra communication). The
    guard recovers the loss of the latest batches as (n m_n - k m_k) / (n - k), exact for
    batches of equal size (the last, smaller batch of an epoch is weighted slightly off).
    A NaN would stay in the running mean for the rest of the epoch, so after a restoration
    the guard resets the model's metrics (`model.reset_metrics()`, as `fit` does at each
    epoch start): the epoch's logged loss and metrics then average the batches since the
    restoration; a restoration at the last batch of an epoch leaves the epoch's logs as they
    were (diverged). The spike test assumes a loss >= 0; `spike_factor=None` checks NaN/Inf only.

    Args:
        spike_factor: how many times the running median counts as a spike, a finite number > 1, or None
            (default 10.0).
        window: how many recent good losses the median is taken over, >= 1 (default 20).
        lr_factor: the learning-rate multiplier at each restoration, in (0, 1] (default 0.5).
        max_attempts: restorations of one snapshot before giving up, >= 1 (default 3).
        check_every: batches between checks, >= 1 (default 1).
        snapshot_every: good batches between snapshots, >= 1 (default 10). Each snapshot
            copies every weight and optimizer variable to host memory.

    Attributes:
        events: a `DivergenceEvent` for each restoration.

    Example:
        model.fit(dataset, epochs=100, callbacks=[DivergenceGuard(spike_factor=5.0, snapshot_every=50)])
    """

    def __init__(self, *, spike_factor: float | None = 10.0, window: int = 20, lr_factor: float = 0.5,
                 max_attempts: int = 3, check_every: int = 1, snapshot_every: int = 10):  # fmt: skip
        super().__init__()
        self.spike_factor = check_number("spike_factor", spike_factor, lambda x: x > 1.0, "a finite number > 1",
                                         allow_none=True)  # fmt: skip
        self.lr_factor = check_number("lr_factor", lr_factor, lambda x: 0.0 < x <= 1.0, "a number in (0, 1]")
        self.window = check_int("window", window, minimum=1)
        self.max_attempts = check_int("max_attempts", max_attempts, minimum=1)
        self.check_every = check_int("check_every", check_every, minimum=1)
        self.snapshot_every = check_int("snapshot_every", snapshot_every, minimum=1)
        self.events: list[DivergenceEvent] = []

    def on_train_begin(self, logs=None):
        ensure_scalable(self.model.optimizer)
        build_optimizer(self.model)
        self.events = []
        self._step = 0
        self._recent = collections.deque(maxlen=self.window)
        self._good = self._take_snapshot()
        self._pending = None
        self._good_since_snapshot = 0
        self._attempt_losses: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1
        self._mean_batches = 0  # batches in Keras's running mean (fit resets it before each epoch)
        self._checked_batches, self._checked_mean = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        covered = batch - self._last_batch  # > 1 with steps_per_execution > 1
        self._last_batch = batch
        self._step += covered
        self._mean_batches += covered
        if logs is None or logs.get("loss") is None or self._mean_batches - self._checked_batches < self.check_every:
            return
        mean = float(logs["loss"])
        new_batches = self._mean_batches - self._checked_batches
        loss = interval_mean(mean, self._mean_batches, self._checked_mean, self._checked_batches)
        self._checked_batches, self._checked_mean = self._mean_batches, mean
        if is_diverged(loss, self._recent, self.spike_factor):
            self._restore(batch, loss)
            return
        self._recent.append(loss)
        if self._pending is not None:  # the loss after the pending snapshot is good: it becomes the good one
            self._good, self._pending = self._pending, None
            self._attempt_losses = []
        self._good_since_snapshot += new_batches
        if self._good_since_snapshot >= self.snapshot_every:
            self._pending = self._take_snapshot()
            self._good_since_snapshot = 0

    def _restore(self, batch: int, loss: float) -> None:
        median = float(np.median(self._recent)) if self._recent else None
        self._good.restore(self._snapshot_variables())
        if len(self._attempt_losses) >= self.max_attempts:
            raise RuntimeError(
                f"DivergenceGuard stops training: at step {self._step} the loss is {loss!r} (running median "
                f"{median!r}), after {len(self._attempt_losses)} restorations of the snapshot from step "
                f"{self._good.step} (max_attempts={self.max_attempts}) whose losses were {self._attempt_losses!r}; "
                f"the model is left at that snapshot, the learning rate at "
                f"{current_learning_rate(self.model.optimizer):.6g}"
            )
        scale_learning_rate(self.model.optimizer, self.lr_factor)
        self._attempt_losses.append(loss)
        self._pending = None
        self._good_since_snapshot = 0
        steps = (self.params or {}).get("steps")
        if steps is None or batch < steps - 1:  # the next epoch resets the metrics anyway
            self.model.reset_metrics()
            self._mean_batches, self._checked_batches, self._checked_mean = 0, 0, 0.0
        self.events.append(
            DivergenceEvent(self._step, loss, median, self._good.step, current_learning_rate(self.model.optimizer))
        )

    def _snapshot_variables(self) -> list:
        learning_rate = self.model.optimizer.learning_rate  # a variable, unless a schedule computes it
        return [*self.model.weights, *(v for v in self.model.optimizer.variables if v is not learning_rate)]

    def _take_snapshot(self) -> Snapshot:
        return Snapshot.take(self._step, self._snapshot_variables())

    def get_config(self):
        return {
            "spike_factor": self.spike_factor,
            "window": self.window,
            "lr_factor": self.lr_factor,
            "max_attempts": self.max_attempts,
            "check_every": self.check_every,
            "snapshot_every": self.snapshot_every,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

