"""One training function, run by `lepton-keras launch --workers 2` and by Ray Train, to compare.

`train(config)` trains the tutorial CNN for 3 epochs of 4 steps (64 shuffled, augmented
sample images, global batch 16) under `get_strategy()`, backing up every 3 batches, and the
chief writes its weights and optimizer variables to `<out>/result.npz` and what it restored
to `<out>/result.json`. Under Ray it backs up with RayBackupAndRestore; under the launcher with
WorkerBackupAndRestore, after sizing the thread pools as the Ray workers do (1 CPU each).

    python -m tests.support.workers.ray_training --out DIR   # a launcher worker
    python -m tests.support.workers.ray_training --ray --out DIR   # the Ray driver

The Ray driver starts a local Ray cluster on 127.0.0.1 (2 CPUs) and runs, through
`lepton_keras.integrations.ray.tensorflow_trainer`, `DIR/killed`: worker 1 SIGKILLs itself at
global batch `KILLED_AT` and Ray restarts both workers from the latest checkpoint. Then it
builds one trainer with the same run name. It writes `DIR/driver.json`: the run's final
metrics, checkpoint files and error, and the reused name's error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal

# Before Ray is imported: Ray then keeps 127.0.0.1 as the node's address, not the machine's.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lepton_keras  # noqa: E402
from lepton_keras.callbacks.checkpoint import WorkerBackupAndRestore  # noqa: E402
from tests.support.cases import tutorial_module  # noqa: E402

EPOCHS, STEPS, GLOBAL_BATCH, SAVE_FREQ = 3, 4, 16, 3
KILLED_AT = 8  # global batch 8 (epoch 1, batch 4): after the backup at batch 6 = (epoch 1, batch 2)


class KillAtBatch(keras.callbacks.Callback):
    """SIGKILLs this process at the end of global batch `global_batch`, once (`marker` records it)."""

    def __init__(self, global_batch: int, marker: str):
        super().__init__()
        self.global_batch, self.marker, self.epoch = global_batch, marker, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch * STEPS + batch + 1 == self.global_batch and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            print("KILLING worker", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def train(config: dict) -> None:
    out = config["out"]
    under_ray = config.get("ray", False)
    if not under_ray:
        lepton_keras.distribute.configure_cpu_threads(1)  # as tensorflow_trainer does on each Ray worker
    strategy = lepton_keras.distribute.get_strategy()
    info = lepton_keras.distribute.task_info(strategy)
    data = lepton_keras.data.load_cifar10("sample", train_limit=STEPS * GLOBAL_BATCH, validation_limit=0)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tutorial_module().build_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    if under_ray:
        from lepton_keras.integrations.ray import RayBackupAndRestore

        backup = RayBackupAndRestore(save_freq=SAVE_FREQ)
    else:
        backup = WorkerBackupAndRestore(os.path.join(out, "backup"), save_freq=SAVE_FREQ)
    callbacks = [backup]
    if config.get("kill_at") and info.worker_index == 1:
        callbacks.append(KillAtBatch(config["kill_at"], os.path.join(out, "killed.marker")))
    dataset = data.train_dataset(GLOBAL_BATCH, strategy=strategy, one_hot=True, augment=True)
    model.fit(dataset, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    if info.is_chief:
        variables = [*model.get_weights(), *(np.asarray(v.numpy()) for v in model.optimizer.variables)]
        np.savez(os.path.join(out, "result.npz"), *variables)
        summary = {
            "restored_position": backup.restored_position,
            "iterations": int(model.optimizer.iterations.numpy()),
            "workers": info.num_workers,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        }
        with open(os.path.join(out, "result.json"), "w") as file:
            json.dump(summary, file)
    lepton_keras.distribute.finish_job(strategy)


def _run_ray(out: str) -> None:
    import ray

    from lepton_keras.integrations.ray import tensorflow_trainer

    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    ray.init(
        address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": repo_root, "TF_CPP_MIN_LOG_LEVEL": "2"}},
    )  # fmt: skip
    storage = os.path.join(out, "storage")
    run_out = os.path.join(out, "killed")
    os.makedirs(run_out)
    trainer = tensorflow_trainer(
        train, num_workers=2, cpus_per_worker=1, storage_path=storage, name="killed", max_failures=1,
        train_loop_config={"out": run_out, "ray": True, "kill_at": KILLED_AT},
    )  # fmt: skip
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        files = sorted(os.listdir(folder))
    summary = {"metrics": result.metrics, "checkpoint_files": files, "error": repr(result.error)}
    try:
        tensorflow_trainer(train, num_workers=2, storage_path=storage, name="killed")
        summary["reused_name_error"] = None
    except ValueError as error:
        summary["reused_name_error"] = str(error)
    ray.shutdown()
    with open(os.path.join(out, "driver.json"), "w") as file:
        json.dump(summary, file)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--ray", action="store_true", help="drive the Ray runs (else: one launcher worker)")
    args = parser.parse_args()
    if args.ray:
        _run_ray(args.out)
    else:
        train({"out": args.out})


if __name__ == "__main__":
    main()
