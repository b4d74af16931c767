"""Ray Train: the same lepton_keras training function on a Ray cluster, exact on restart.

Install with `pip install "lepton_keras[ray]"`. Ray Train's `TensorflowTrainer` starts one
process per worker and writes their TF_CONFIG (all "worker" tasks, rank 0 the chief), so
`lepton_keras.distribute.get_strategy()` returns a MultiWorkerMirroredStrategy there and the
training function is the one you launch with `lepton-keras launch`. This module adds what Ray
leaves to the user:

- `tensorflow_trainer`: a TensorflowTrainer whose workers size TensorFlow's thread pools to
  their CPUs (Ray sets OMP_NUM_THREADS=1 and nothing else, so every worker starts a thread
  per core of the machine), that does not wait for ever on a small cluster (Ray Train v1
  reserves a CPU for its trainer actor: 2 workers of 1 CPU never start on 2 CPUs), and that
  gets a new run folder unless you ask to resume (Ray reuses the folder of a
  `RunConfig(name=...)` it has seen and silently restores that run's checkpoints);
- `RayBackupAndRestore`: a `WorkerBackupAndRestore` that reports to Ray at every backup, from
  every worker (`ray.train.report` is a barrier all must reach; Ray keeps rank 0's metrics),
  with a checkpoint written by the chief only, and that resumes a restarted run from Ray's
  latest checkpoint on the same exact path as a relaunched job: same weights, optimizer
  state, epoch, batch and data order as an uninterrupted run.

Example (a local cluster; on a real one, `ray.init()` joins it and `storage_path` is a folder
every node shares, or cloud storage):

    import ray
    import lepton_keras
    from lepton_keras.integrations.ray import RayBackupAndRestore, tensorflow_trainer

    def train(config):
        strategy = lepton_keras.distribute.get_strategy()
        data = lepton_keras.data.load_cifar10("sample", train_limit=256, validation_limit=0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                                      keras.layers.Dense(10)])
            model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(data.train_dataset(64, strategy=strategy), epochs=config["epochs"],
                  callbacks=[RayBackupAndRestore()], verbose=0)
        lepton_keras.distribute.finish_job(strategy)

    ray.init(num_cpus=2)
    result = tensorflow_trainer(train, num_workers=2, storage_path="/tmp/runs",
                                train_loop_config={"epochs": 2}, max_failures=1).fit()
    weights = result.checkpoint  # backup-e2-b0.weights.h5: model.load_weights(...)

Ray Train v2 (Ray's default) and v1 (`RAY_TRAIN_V2_ENABLED=0`) are both supported; tested with
Ray 2.60 (tests/integrations/test_ray.py).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import tempfile
import uuid

import keras
import ray
import ray.train
from ray.train.tensorflow import TensorflowTrainer

from lepton_keras import validation
from lepton_keras.callbacks.checkpoint import WorkerBackupAndRestore, backup_files, backup_positions
from lepton_keras.distribute.cluster import task_info, worker_path
from lepton_keras.distribute.strategy import WORKERS_OUTLIVE_JOB_ENV, configure_cpu_threads

_RUN_NAME_PREFIX = "lepton_keras"


def worker_cpus() -> int:
    """The number of CPUs Ray reserved for this worker (at least 1)."""
    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, int(assigned))


def _run_worker(train_loop_per_worker, config):
    """Each Ray Train worker runs this: thread pools first (before TensorFlow starts), then the loop."""
    configure_cpu_threads(worker_cpus())
    os.environ[WORKERS_OUTLIVE_JOB_ENV] = "1"  # finish_job: Ray stops the workers, none exits by itself
    if inspect.signature(train_loop_per_worker).parameters:
        return train_loop_per_worker(config)
    return train_loop_per_worker()


def _ray_train_v2() -> bool:
    """Whether Ray loaded Train v2 (RAY_TRAIN_V2_ENABLED, read by Ray when ray.train is imported)."""
    return TensorflowTrainer.__module__.startswith("ray.train.v2.")


def tensorflow_trainer(
    train_loop_per_worker,
    *,
    num_workers: int,
    cpus_per_worker: int = 1,
    storage_path: str | os.PathLike | None = None,
    name: str | None = None,
    resume: bool = False,
    max_failures: int = 0,
    train_loop_config: dict | None = None,
) -> TensorflowTrainer:
    """A Ray Train `TensorflowTrainer` for a lepton_keras training function.

    Use it where you would build a TensorflowTrainer yourself; call `.fit()` on the result.
    Each worker sizes TensorFlow's thread pools to its CPUs
    (`lepton_keras.distribute.configure_cpu_threads(cpus_per_worker)`) before running
    `train_loop_per_worker`, which gets `train_loop_config` if it takes an argument.

    Args:
        train_loop_per_worker: the training function, run on every worker.
        num_workers: training processes (one replica each on CPUs, or one per GPU node).
        cpus_per_worker: CPUs Ray reserves for each worker (default 1).
        storage_path: where Ray keeps the run's checkpoints and results: a folder every node
            shares, or a cloud URI (default None: Ray's `~/ray_results`).
        name: the run's folder under `storage_path` (default None: a new
            `lepton_keras-<hex>` name for every trainer).
        resume: continue the run `name` from its latest checkpoint (default False: a `name`
            whose folder exists is refused, because Ray would silently restore its
            checkpoints into this run).
        max_failures: how many times Ray restarts the workers after a failure, from the
            latest checkpoint (default 0; -1: without limit).
        train_loop_config: the dict passed to `train_loop_per_worker` (default None: {}).

    Raises:
        ValueError: a bad argument; `resume=True` without a `name`; an existing run `name`
            without `resume=True`.
    """
    if not callable(train_loop_per_worker):
        raise validation.invalid("train_loop_per_worker", train_loop_per_worker, "a function")
    num_workers = validation.check_int("num_workers", num_workers, minimum=1)
    cpus_per_worker = validation.check_int("cpus_per_worker", cpus_per_worker, minimum=1)
    storage_path = None if storage_path is None else validation.check_path("storage_path", storage_path)
    name = None if name is None else validation.check_string("name", name)
    resume = validation.check_bool("resume", resume)
    max_failures = validation.check_int("max_failures", max_failures, minimum=-1)
    if train_loop_config is not None and not isinstance(train_loop_config, dict):
        raise validation.invalid("train_loop_config", train_loop_config, "a dict or None")
    if resume and name is None:
        raise ValueError("resume=True continues the run of that name: give its name")
    if name is None:
        name = f"{_RUN_NAME_PREFIX}-{uuid.uuid4().hex[:12]}"
    elif not resume:
        folder = os.path.join(os.path.expanduser(storage_path or "~/ray_results"), name)
        if "://" not in folder and os.path.exists(folder):
            raise ValueError(
                f"a Ray run named {name!r} exists ({folder}): Ray would restore its checkpoints into this "
                "run. Pass resume=True to continue it, or another name (or none, for a new one)"
            )

    scaling = {"num_workers": num_workers, "resources_per_worker": {"CPU": cpus_per_worker}}
    if not _ray_train_v2():
        # v1's trainer actor would take a worker's CPU; Ray logs that the option is deprecated (v2 drops it).
        scaling["trainer_resources"] = {"CPU": 0}
    return TensorflowTrainer(
        functools.partial(_run_worker, train_loop_per_worker),
        train_loop_config=train_loop_config or {},
        scaling_config=ray.train.ScalingConfig(**scaling),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, failure_config=ray.train.FailureConfig(max_failures=max_failures)
        ),
    )


def _numbers(logs) -> dict:
    """Keras logs as plain floats (Ray serialises the metrics)."""
    metrics = {}
    for key, value in (logs or {}).items():
        with contextlib.suppress(TypeError, ValueError):
            metrics[key] = float(value)
    return metrics


@keras.saving.register_keras_serializable(package="lepton_keras")
class RayBackupAndRestore(WorkerBackupAndRestore):
    """`WorkerBackupAndRestore` that reports to Ray Train and resumes from Ray's checkpoint.

    Use it as the one fault-tolerance callback of a Ray Train training function, instead of
    Ray's `ReportCheckpointCallback`. At every backup (`save_freq`: each epoch, or every N
    batches) every worker calls `ray.train.report` with the logs of that epoch (or batch)
    plus `epoch` and `batch`, the backup's training position (`epoch` epochs done and
    `batch` batches of the next); the chief attaches a checkpoint holding its backup (the
    weights and optimizer state, `backup-e<epoch>-b<batch>.weights.h5`, and its metadata),
    and no other worker writes one. When Ray restarts the workers (`max_failures`), every
    worker copies `ray.train.get_checkpoint()` into its backup folder and restores it as a
    relaunched WorkerBackupAndRestore job does: training continues at that epoch and
    batch, with the data order of an uninterrupted run (see WorkerBackupAndRestore for what
    a pipeline needs), and ends with its weights, bitwise.

    Args:
        save_freq: "epoch" (default) or a number of batches: when to back up and report.
        backup_dir: this machine's folder for the backups (default None: a new temporary
            folder, removed when training ends; Ray's checkpoints are the durable copy).
        strategy: the strategy whose cluster names this worker (default None: the model's).

    Example:
        model.fit(dataset, epochs=10, callbacks=[RayBackupAndRestore()])

    Raises:
        RuntimeError: (at the start of `fit`) outside a Ray Train training function; a
            checkpoint saved with another number of workers (WorkerBackupAndRestore's error).
    """

    def __init__(self, save_freq="epoch", *, backup_dir=None, strategy=None):
        self._given_backup_dir = backup_dir
        if backup_dir is None:
            backup_dir = tempfile.mkdtemp(prefix="lepton_keras_ray_")
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=True, strategy=strategy)
        self._logs = {}
        self._is_chief = True

    def on_train_begin(self, logs=None):
        checkpoint = ray.train.get_checkpoint()  # Ray's own error outside a Ray Train function
        strategy = self._strategy or self.model.distribute_strategy
        self._is_chief = task_info(strategy).is_chief
        if checkpoint is not None:
            own_folder = worker_path(self.backup_dir, strategy)
            os.makedirs(own_folder, exist_ok=True)
            with checkpoint.as_directory() as folder:
                for position in backup_positions(folder):
                    for path in backup_files(folder, position):
                        shutil.copy2(path, own_folder)
        super().on_train_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        self._logs = logs
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._logs = logs
        super().on_epoch_end(epoch, logs)

    def _save(self, position) -> None:
        super()._save(position)
        metrics = {**_numbers(self._logs), "epoch": position[0], "batch": position[1]}
        if not self._is_chief:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="lepton_keras_ray_checkpoint_", ignore_cleanup_errors=True) as staging:
            for path in backup_files(self.worker_backup_dir, position):
                shutil.copy2(path, staging)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging))

    def get_config(self) -> dict:
        return {"save_freq": self.save_freq, "backup_dir": self._given_backup_dir}
