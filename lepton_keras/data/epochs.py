"""Datasets whose every epoch is a pure function of its epoch number, so a restarted job resumes exactly.

A tf.data pipeline reshuffled with `shuffle(seed=s, reshuffle_each_iteration=True)` (or
augmented with `Dataset.random`) draws each epoch's order from a seed generator that
lives in the dataset object: a restarted process rebuilds the dataset, and its first
epoch replays the first epoch of the interrupted run instead of the epoch training
resumes at. `epoch_dataset(make_epoch)` instead counts the epochs it serves and builds
epoch e with `make_epoch(e)`; when `lepton_keras.callbacks.WorkerBackupAndRestore`
resumes at epoch E it moves every such dataset E epochs on (`advance_epochs`), so the
resumed run reads the batches of the uninterrupted one.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from lepton_keras.validation import check_bool, invalid

_MAX_EPOCHS = np.iinfo(np.int64).max


class _EpochCounter:
    """The next epoch a dataset serves; each new iterator takes one (a repeated one, its first)."""

    def __init__(self):
        self._next, self._lock = 0, threading.Lock()

    def take(self) -> np.int64:
        with self._lock:
            self._next += 1
            return np.int64(self._next - 1)

    def advance(self, epochs: int) -> None:
        with self._lock:
            self._next += epochs


_COUNTERS: weakref.WeakSet = weakref.WeakSet()


def epoch_dataset(
    make_epoch: Callable[[tf.Tensor], tf.data.Dataset], *, repeat: bool = False, counted: bool = True
) -> tf.data.Dataset:
    """A dataset whose iterations are epochs 0, 1, 2, ... of `make_epoch(epoch)`.

    Use it for a training pipeline that must resume exactly under
    `WorkerBackupAndRestore`: make every random choice of an epoch (its order, its
    augmentation) with stateless ops seeded from `epoch`, e.g.
    `tf.random.experimental.stateless_shuffle(indices, seed=tf.stack([seed, epoch]))`.

    Args:
        make_epoch: given the epoch (a scalar int64 tensor), returns that epoch's elements.
        repeat: one iteration runs through the epochs without end, for
            `model.fit(..., steps_per_epoch=...)` (default False: each iteration is one epoch,
            the next one each time).
        counted: count the epochs served in this process (default True). False: every
            iteration starts at epoch 0, for a dataset that runs in other processes, such as
            the copies of parameter-server workers, where this process's counter cannot run.

    Every epoch is the same whichever process serves it. The dataset counts the epochs it
    has served in this process (under a strategy, Keras's symbolic build reads a batch of
    one more, in the interrupted and the resumed run alike); `advance_epochs` moves the
    count on. So resume with a new dataset, as a new process does: one that already
    served epochs in this process would be moved on past them.
    """
    if not callable(make_epoch):
        raise invalid("make_epoch", make_epoch, "a function of the epoch that returns a tf.data.Dataset")
    repeat, counted = check_bool("repeat", repeat), check_bool("counted", counted)
    if not counted:
        return tf.data.Dataset.range(_MAX_EPOCHS if repeat else 1).flat_map(make_epoch)
    counter = _EpochCounter()
    _COUNTERS.add(counter)

    def first_epoch(_):
        epoch = tf.py_function(counter.take, [], tf.int64)
        epoch.set_shape([])
        return epoch

    epochs = tf.data.Dataset.range(1).map(first_epoch)
    if repeat:
        epochs = epochs.flat_map(lambda first: tf.data.Dataset.range(first, _MAX_EPOCHS))
    return epochs.flat_map(make_epoch)  # the py_function keeps `counter` alive as long as the dataset


def advance_epochs(epochs: int) -> None:
    """Moves every `epoch_dataset` of this process `epochs` epochs on.

    `WorkerBackupAndRestore` calls it when it resumes at epoch `epochs`, after Keras has
    built the model and before the first epoch's iterator is made.
    """
    for counter in list(_COUNTERS):
        counter.advance(epochs)
