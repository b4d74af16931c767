"""Worker program: a job on shuffled, augmented CIFAR-10 in which a worker dies, then the restart.

Run by the launcher as 2 workers, or on its own as 1 process (no TF_CONFIG, no strategy).
First launch (no marker file yet): worker `--killed-worker` (default 1) SIGKILLs itself, in
one of two ways:
- `--kill-after N` (with an integer `--save-freq`): at the end of global batch N, on which
  a backup is due, after the chief has written that backup and before writing its own: the
  chief's newest backup is one save ahead of worker 1's, the hard case;
- `--kill-during-save N`: inside its own save at the end of global batch N, once the new
  state's weights are written under their temporary name and before they are renamed.
Second launch: both workers restore the newest backup both hold, skip the batches it
holds, finish, and (with --reference) train an uninterrupted model in the same cluster to
compare. With `--warmup-epochs E` both runs warm the learning rate up over E epochs
(LearningRateWarmup, after the backup in the callbacks), so a kill can fall inside the warmup.
Each worker writes `result_<i>.npz` (weights and optimizer variables) and
`result_<i>.json` to --out. A launch with another number of workers stops with the error
of WorkerBackupAndRestore, which the worker writes to `error_<i>.txt`.
"""

import argparse
import json
import os
import signal
import time

import keras
import numpy as np

from lepton_keras.callbacks.checkpoint import ChiefModelCheckpoint, WorkerBackupAndRestore
from lepton_keras.callbacks.warmup import LearningRateWarmup
from lepton_keras.data import load_cifar10
from lepton_keras.distribute import PeriodicSync, get_strategy, task_info, worker_path

EPOCHS, STEPS, GLOBAL_BATCH = 3, 4, 16


def load_data():
    """This worker's shard of 64 sample images: 4 steps of 16 images in all."""
    return load_cifar10("sample", train_limit=STEPS * GLOBAL_BATCH, validation_limit=0)


def training_data(data, strategy, repeat):
    # shuffle=True is the default: every epoch reshuffled, and re-augmented.
    return data.train_dataset(GLOBAL_BATCH, strategy=strategy, augment=True, repeat=repeat)


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3, strides=4),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(model, data, strategy, repeat, callbacks=()):
    steps = data.steps_per_epoch(GLOBAL_BATCH, strategy=strategy) if repeat else None
    model.fit(training_data(data, strategy, repeat), epochs=EPOCHS, steps_per_epoch=steps, shuffle=False,
              verbose=0, callbacks=list(callbacks))


def state(model):
    return [*model.get_weights(), *(np.asarray(v.numpy()) for v in model.optimizer.variables)]


def die(marker):
    open(marker, "w").close()
    print("KILLING worker", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfterBackupOfChief(keras.callbacks.Callback):
    """SIGKILLs this worker once the chief has backed up `batches` and before this worker does."""

    def __init__(self, batches, marker, chief_state):
        super().__init__()
        self.batches, self.marker, self.chief_state, self.epoch = batches, marker, chief_state, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch * STEPS + batch + 1 != self.batches:
            return
        deadline = time.monotonic() + 30
        while not os.path.exists(self.chief_state) and time.monotonic() < deadline:
            time.sleep(0.01)
        die(self.marker)


def kill_during_save(model, stem, marker):
    """Makes `model.save_weights` die once it has written the state `stem` (before the rename)."""
    save_weights = model.save_weights

    def save_then_die(path, *args, **kwargs):
        save_weights(path, *args, **kwargs)
        if os.path.basename(path).startswith(stem + "."):
            die(marker)

    model.save_weights = save_then_die


def state_stem(batches, save_freq):
    """The name of the backup WorkerBackupAndRestore writes after global batch `batches`."""
    if save_freq == "epoch":  # (epochs done, 0)
        return f"backup-e{batches // STEPS}-b0"
    epoch, batch = divmod(batches - 1, STEPS)  # (epoch, batches of it done)
    return f"backup-e{epoch}-b{batch + 1}"


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
    parser.add_argument("--repeat", action="store_true", help="train_dataset(repeat=True) with steps_per_epoch")
    parser.add_argument("--save-freq", default="3", help='"epoch" or a number of batches')
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--kill-during-save", type=int, default=None)
    parser.add_argument("--killed-worker", type=int, default=1)
    parser.add_argument("--periodic-sync-every", type=int, default=1, help="PeriodicSync(every=...) (1: every step)")
    parser.add_argument("--warmup-epochs", type=float, default=None, help="LearningRateWarmup(warmup_epochs)")
    args = parser.parse_args()
    save_freq = args.save_freq if args.save_freq == "epoch" else int(args.save_freq)
    # MultiWorkerMirroredStrategy under the launcher, else none
    strategy = get_strategy(periodic_sync=PeriodicSync(every=args.periodic_sync_every))
    info = task_info(strategy)
    backup_dir = os.path.join(args.out, "backup")
    own_dir = worker_path(backup_dir, strategy)
    saved_before = sorted(name for name in os.listdir(own_dir) if name.endswith(".json")) if os.path.isdir(
        own_dir
    ) else []
    data = load_data()

    with strategy.scope():
        model = make_model()
    backup = WorkerBackupAndRestore(backup_dir, save_freq=save_freq)
    checkpoint = ChiefModelCheckpoint(
        os.path.join(args.out, "ckpt", "epoch_{epoch}.weights.h5"), save_weights_only=True
    )
    scratch = ListScratch(checkpoint)

    def warmup():
        return [LearningRateWarmup(args.warmup_epochs)] if args.warmup_epochs else []

    callbacks = [backup, checkpoint, scratch, *warmup()]
    marker = os.path.join(args.out, "killed.marker")
    if info.worker_index == args.killed_worker and not os.path.exists(marker):
        if args.kill_after is not None:
            chief_state = os.path.join(backup_dir, "worker_0", state_stem(args.kill_after, save_freq) + ".json")
            callbacks.insert(0, KillAfterBackupOfChief(args.kill_after, marker, chief_state))
        if args.kill_during_save is not None:
            kill_during_save(model, state_stem(args.kill_during_save, save_freq), marker)
    try:
        fit(model, data, strategy, args.repeat, callbacks)
    except RuntimeError as error:
        with open(os.path.join(args.out, f"error_{info.worker_index}.txt"), "w") as file:
            file.write(str(error))
        raise

    arrays = {f"resumed_{i}": v for i, v in enumerate(state(model))}
    if args.reference:
        with strategy.scope():
            reference = make_model()
        # Under periodic sync every save is a sync point: the uninterrupted run saves as often.
        same_saves = [WorkerBackupAndRestore(os.path.join(args.out, "reference_backup"), save_freq=save_freq)]
        fit(reference, data, strategy, args.repeat, [*(same_saves if args.periodic_sync_every > 1 else []), *warmup()])
        arrays.update({f"reference_{i}": v for i, v in enumerate(state(reference))})
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
