"""Worker program: a 2-worker job in which worker 1 dies mid-training, then the restart.

First launch (no marker file yet): worker 1 kills itself (SIGKILL) at the end of a batch
on which a backup is due, after the chief has written that backup and before writing its
own: the chief's newest backup is one save ahead of worker 1's, the hard case. Second
launch: both workers must restore worker 1's newest backup, skip the batches it holds,
finish, and (with --reference) train an uninterrupted model in the same cluster to compare.
Each worker writes `result_<i>.npz` and `result_<i>.json` to --out.
"""

import argparse
import json
import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf

from lepton_keras.callbacks.checkpoint import ChiefModelCheckpoint, WorkerBackupAndRestore
from lepton_keras.distribute import get_strategy, task_info

EPOCHS, STEPS, GLOBAL_BATCH, SAVE_FREQ = 3, 4, 8, 3
KILL_AFTER_BATCHES = 6  # a multiple of SAVE_FREQ: epoch 1, batch index 1
KILLED_WORKER = 1


def training_data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1)) + 0.1 * rng.normal(size=(STEPS * GLOBAL_BATCH, 1))).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


class KillAfterBackupOfChief(keras.callbacks.Callback):
    """SIGKILLs this worker once the chief has backed up `position` and before this worker does."""

    def __init__(self, marker, chief_state):
        super().__init__()
        self.marker, self.chief_state, self.epoch = marker, chief_state, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch * STEPS + batch + 1 != KILL_AFTER_BATCHES or os.path.exists(self.marker):
            return
        open(self.marker, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(self.chief_state) and time.monotonic() < deadline:
            time.sleep(0.01)
        print("KILLING worker", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class ListScratch(keras.callbacks.Callback):
    """Records what the checkpoint callback has written to its (possibly scratch) directory."""

    def __init__(self, checkpoint):
        super().__init__()
        self.checkpoint, self.seen = checkpoint, []

    def on_epoch_end(self, epoch, logs=None):
        folder = os.path.dirname(self.checkpoint.filepath)
        self.seen.append(sorted(os.listdir(folder)) if os.path.isdir(folder) else [])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--reference", action="store_true", help="also train an uninterrupted model")
    args = parser.parse_args()
    strategy = get_strategy("multi_worker")
    info = task_info(strategy)
    backup_dir = os.path.join(args.out, "backup")
    own_dir = os.path.join(backup_dir, f"worker_{info.task_index}")
    saved_before = sorted(name for name in os.listdir(own_dir) if name.endswith(".json")) if os.path.isdir(
        own_dir
    ) else []

    with strategy.scope():
        model = make_model()
    backup = WorkerBackupAndRestore(backup_dir, save_freq=SAVE_FREQ)
    checkpoint = ChiefModelCheckpoint(
        os.path.join(args.out, "ckpt", "epoch_{epoch}.weights.h5"), save_weights_only=True
    )
    scratch = ListScratch(checkpoint)
    callbacks = [backup, checkpoint, scratch]
    if info.worker_index == KILLED_WORKER:
        chief_state = os.path.join(backup_dir, "worker_0", "backup-e1-b2.json")
        callbacks.insert(0, KillAfterBackupOfChief(os.path.join(args.out, "killed.marker"), chief_state))
    model.fit(training_data(), epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)

    arrays = {f"resumed_{i}": w for i, w in enumerate(model.get_weights())}
    if args.reference:
        with strategy.scope():
            reference = make_model()
        reference.fit(training_data(), epochs=EPOCHS, shuffle=False, verbose=0)
        arrays.update({f"reference_{i}": w for i, w in enumerate(reference.get_weights())})
    np.savez(os.path.join(args.out, f"result_{info.worker_index}.npz"), **arrays)
    summary = {
        "saved_before": saved_before,
        "restored_position": backup.restored_position,
        "iterations": int(model.optimizer.iterations.numpy()),
        "checkpoint_path": checkpoint.filepath,
        "checkpoint_folder_during_training": scratch.seen,
        "checkpoint_folder_exists_after": os.path.isdir(os.path.dirname(checkpoint.filepath)),
    }
    with open(os.path.join(args.out, f"result_{info.worker_index}.json"), "w") as file:
        json.dump(summary, file)


if __name__ == "__main__":
    main()
