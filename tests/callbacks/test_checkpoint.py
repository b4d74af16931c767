"""ChiefModelCheckpoint and WorkerBackupAndRestore in one process (the 2-worker job is in
tests/callbacks/test_fault_tolerance.py)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.callbacks.checkpoint import ChiefModelCheckpoint, WorkerBackupAndRestore
from tests.callbacks.reference.learning_rate import sgd_linear_regression
from tests.support.cases import regression_data
from tests.support.numerics import relative_error
from tests.support.workers.fault_tolerance_worker import make_model as make_cifar_model

STEPS, BATCH, EPOCHS, LEARNING_RATE = 4, 8, 3, 0.1


def dataset():
    return tf.data.Dataset.from_tensor_slices(regression_data(STEPS * BATCH, seed=3)).batch(BATCH)


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    return model


def reference_weights():
    """The uninterrupted trajectory: EPOCHS passes of SGD over the STEPS batches, in order."""
    x, y = regression_data(STEPS * BATCH, seed=3)
    kernel, bias, _ = sgd_linear_regression(x, y, *make_model().get_weights(), [LEARNING_RATE] * (EPOCHS * STEPS),
                                            BATCH)  # fmt: skip
    return [kernel, bias]


class Interrupt(keras.callbacks.Callback):
    """Raises once `batches` batches have been trained, as a crash would stop training."""

    def __init__(self, batches):
        super().__init__()
        self.batches, self.epoch = batches, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch * STEPS + batch == self.batches:
            raise KeyboardInterrupt("interrupted")


def fit(model, callbacks):
    return model.fit(dataset(), epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)


def interrupt(backup_dir, batches, backup=WorkerBackupAndRestore, **options):
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), [backup(backup_dir, **options), Interrupt(batches)])


# WorkerBackupAndRestore


@pytest.mark.parametrize(
    "save_freq, interrupted_after, position",
    [("epoch", 9, (2, 0)), (1, 5, (1, 1)), (3, 5, (0, 3)), (3, 9, (2, 1)), (4, 6, (1, 0)), (4, 2, None)],
)
def test_restart_resumes_at_the_last_backup_and_matches_the_uninterrupted_trajectory(
    tmp_path, save_freq, interrupted_after, position
):
    interrupt(tmp_path / "backup", interrupted_after, save_freq=save_freq)
    model, backup = make_model(), WorkerBackupAndRestore(tmp_path / "backup", save_freq=save_freq)
    history = fit(model, [backup])
    assert backup.restored_position == position
    resumed_epoch = position[0] if position else 0
    assert len(history.history["loss"]) == EPOCHS - resumed_epoch
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * STEPS  # no batch trained twice
    assert relative_error(model.get_weights(), reference_weights()) < 1e-5
    assert not (tmp_path / "backup").exists()


def test_stock_backup_and_restore_retrains_the_batches_before_a_mid_epoch_backup(tmp_path):
    # The Keras 3.15 behaviour WorkerBackupAndRestore corrects: the backup after batch 3
    # restarts epoch 0 from its first batch, so batches 1-3 are trained twice.
    interrupt(str(tmp_path / "backup"), 5, backup=keras.callbacks.BackupAndRestore, save_freq=3)
    model = make_model()
    fit(model, [keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=3)])
    assert int(model.optimizer.iterations.numpy()) == 3 + EPOCHS * STEPS
    assert relative_error(model.get_weights(), reference_weights()) > 1e-3


def test_a_state_cut_short_by_a_kill_is_ignored_and_the_previous_one_restored(tmp_path):
    backup_dir = tmp_path / "backup"
    interrupt(backup_dir, 9, save_freq=3, delete_checkpoint=False)
    assert sorted(os.listdir(backup_dir)) == [
        "backup-e1-b2.json", "backup-e1-b2.weights.h5", "backup-e2-b1.json", "backup-e2-b1.weights.h5"
    ]
    # Killed after writing the weights of the newest state, before its metadata, and mid-write of the next.
    (backup_dir / "backup-e2-b1.json").unlink()
    (backup_dir / "backup-e2-b4.tmp.weights.h5").write_bytes(b"partial")
    model, backup = make_model(), WorkerBackupAndRestore(backup_dir, save_freq=3)
    fit(model, [backup])
    assert backup.restored_position == (1, 2)
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * STEPS
    assert relative_error(model.get_weights(), reference_weights()) < 1e-5


class ListFolder(keras.callbacks.Callback):
    def __init__(self, folder):
        super().__init__()
        self.folder, self.listings = folder, []

    def on_train_batch_end(self, batch, logs=None):
        self.listings.append(sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else [])


@pytest.mark.parametrize("delete_checkpoint", [True, False])
def test_keeps_the_last_two_states_and_deletes_them_at_the_end_when_asked(tmp_path, delete_checkpoint):
    backup_dir = tmp_path / "backup"
    listing = ListFolder(backup_dir)
    fit(make_model(), [WorkerBackupAndRestore(backup_dir, save_freq=1, delete_checkpoint=delete_checkpoint), listing])
    assert max(len(files) for files in listing.listings) == 4  # two states, weights and metadata each
    assert listing.listings[-1] == [
        "backup-e2-b3.json", "backup-e2-b3.weights.h5", "backup-e2-b4.json", "backup-e2-b4.weights.h5"
    ]
    assert backup_dir.exists() != delete_checkpoint


def tf_config(index, workers=2):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in range(1, workers + 1)]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def test_each_worker_backs_up_to_its_own_folder_and_the_last_one_out_removes_the_root(tmp_path, monkeypatch):
    # TF_CONFIG without a multi-worker strategy: the gather runs on the one local replica.
    monkeypatch.setenv("TF_CONFIG", tf_config(1))
    backup_dir = tmp_path / "backup"
    (backup_dir / "worker_0").mkdir(parents=True)  # another worker's, still running
    interrupt(backup_dir, 5, save_freq="epoch")
    assert sorted(os.listdir(backup_dir / "worker_1")) == ["backup-e1-b0.json", "backup-e1-b0.weights.h5"]
    backup = WorkerBackupAndRestore(backup_dir)
    fit(make_model(), [backup])
    assert backup.worker_backup_dir == str(backup_dir / "worker_1")
    assert backup.restored_position == (1, 0)
    assert os.listdir(backup_dir) == ["worker_0"]
    (backup_dir / "worker_0").rmdir()
    fit(make_model(), [WorkerBackupAndRestore(backup_dir)])
    assert not backup_dir.exists()


def files(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


@pytest.mark.parametrize("saved_with, relaunched_with", [(2, 1), (1, 2), (2, 3)])
def test_a_relaunch_with_another_worker_count_is_an_error_and_keeps_the_backups(
    tmp_path, monkeypatch, saved_with, relaunched_with
):
    # TF_CONFIG without a multi-worker strategy: each worker's part runs in this one process.
    backup_dir = tmp_path / "backup"
    for index in range(saved_with):
        if saved_with > 1:
            monkeypatch.setenv("TF_CONFIG", tf_config(index, saved_with))
        interrupt(backup_dir, 7, save_freq=3)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    before = files(backup_dir)
    assert len(before) == 2 * 2 * saved_with  # two states per worker, weights and metadata each
    for index in range(relaunched_with):
        if relaunched_with > 1:
            monkeypatch.setenv("TF_CONFIG", tf_config(index, relaunched_with))
        with pytest.raises(RuntimeError, match=(
            f"^{backup_dir} holds the backups of a job with {saved_with} worker\\(s\\), and this job was launched "
            f"with {relaunched_with}: relaunch it with {saved_with} worker\\(s\\) to resume from them, or delete or "
            f"move {backup_dir} to start from scratch$"
        )):
            fit(make_model(), [WorkerBackupAndRestore(backup_dir, save_freq=3)])
        assert files(backup_dir) == before


def test_the_worker_count_is_in_the_state_metadata(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config(1, 2))
    interrupt(tmp_path / "backup", 7, save_freq=3)
    metadata = json.loads((tmp_path / "backup" / "worker_1" / "backup-e1-b2.json").read_text())
    assert metadata == {"epoch": 1, "batches": 2, "workers": 2}


@pytest.mark.parametrize("save_freq", [0, -2, True, False, 2.5, "batch", None])
def test_bad_save_freq_is_an_error_naming_it(save_freq):
    with pytest.raises(ValueError, match=rf'save_freq must be "epoch" or a positive number of batches, received: '
                                         rf"{save_freq!r}"):
        WorkerBackupAndRestore("backup", save_freq=save_freq)
    with pytest.raises(ValueError, match=rf'^save_freq must be "epoch" or a positive number of batches, received: '
                                         rf"{save_freq!r}"):
        ChiefModelCheckpoint("model.keras", save_freq=save_freq)


PATH_MESSAGE = "must be a non-empty path \\(a str or os.PathLike\\), received: "
DIRECTORY_MESSAGE = "must be a directory path \\(an existing directory, or one that can be created\\), received: "


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: WorkerBackupAndRestore(None), "backup_dir " + DIRECTORY_MESSAGE + "None"),
        (lambda: WorkerBackupAndRestore(""), "backup_dir " + DIRECTORY_MESSAGE + "''"),
        (lambda: WorkerBackupAndRestore(3), "backup_dir " + DIRECTORY_MESSAGE + "3"),
        (lambda: WorkerBackupAndRestore(__file__), "backup_dir must be a directory path .*; '.*test_checkpoint.py' is a file, received: '.*'"),
        (lambda: WorkerBackupAndRestore("b", delete_checkpoint="no"),
         "delete_checkpoint must be True or False, received: 'no'"),
        (lambda: WorkerBackupAndRestore("b", strategy="mirrored"),
         "strategy must be a tf.distribute.Strategy or None, received: 'mirrored'"),
        (lambda: ChiefModelCheckpoint("m.keras", strategy=3),
         "strategy must be a tf.distribute.Strategy or None, received: 3"),
        (lambda: ChiefModelCheckpoint(None), "filepath " + PATH_MESSAGE + "None"),
        (lambda: ChiefModelCheckpoint(""), "filepath " + PATH_MESSAGE + "''"),
        (lambda: ChiefModelCheckpoint("m.keras", monitor=""), "monitor must be a non-empty string, received: ''"),
        (lambda: ChiefModelCheckpoint("m.keras", monitor=None), "monitor must be a non-empty string, received: None"),
        (lambda: ChiefModelCheckpoint("m.keras", verbose=3), "verbose must be an integer >= 0 and <= 2, received: 3"),
        (lambda: ChiefModelCheckpoint("m.keras", save_best_only=1),
         "save_best_only must be True or False, received: 1"),
        (lambda: ChiefModelCheckpoint("m.weights.h5", save_weights_only="True"),
         "save_weights_only must be True or False, received: 'True'"),
        (lambda: ChiefModelCheckpoint("m.keras", mode="maximum"),
         "mode must be one of 'auto', 'min', 'max', received: 'maximum'"),
        (lambda: ChiefModelCheckpoint("m.keras", initial_value_threshold="0.5"),
         "initial_value_threshold must be a finite number or None, received: '0.5'"),
    ],
)
def test_bad_arguments_are_errors_naming_them(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()


def test_an_unbuilt_model_is_an_error(tmp_path):
    interrupt(tmp_path / "backup", 5)
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    backup = WorkerBackupAndRestore(tmp_path / "backup")
    backup.set_model(model)  # fit builds the model from the data first; a custom loop may not
    with pytest.raises(ValueError, match="restores into a built model"):
        backup.on_train_begin()


# ChiefModelCheckpoint


CHECKPOINTS = [
    ("epoch_{epoch}.weights.h5", {"save_weights_only": True, "save_freq": 3}),
    ("best.keras", {"monitor": "loss", "save_best_only": True}),
    ("model_{epoch:02d}_{loss:.3f}.keras", {}),
]


def saved_weights(path):
    if path.endswith(".weights.h5"):
        model = make_model()
        model.load_weights(path)
        return model.get_weights()
    return keras.saving.load_model(path).get_weights()


@pytest.mark.parametrize("filename, options", CHECKPOINTS)
def test_without_a_cluster_it_writes_what_model_checkpoint_writes(tmp_path, filename, options):
    fit(make_model(), [keras.callbacks.ModelCheckpoint(str(tmp_path / "keras" / filename), **options)])
    fit(make_model(), [ChiefModelCheckpoint(tmp_path / "ours" / filename, **options)])
    files = sorted(os.listdir(tmp_path / "keras"))
    assert files and sorted(os.listdir(tmp_path / "ours")) == files
    for name in files:
        expected, received = saved_weights(str(tmp_path / "keras" / name)), saved_weights(str(tmp_path / "ours" / name))
        assert relative_error(received, expected) == 0.0


def test_a_monitor_the_model_does_not_log_is_refused_at_the_first_batch_before_any_save(tmp_path):
    model = make_model()
    with pytest.raises(ValueError, match=r"^monitor must be a metric the model logs \(\['loss'\]\).*received: 'bogus_metric'"):
        fit(model, [ChiefModelCheckpoint(tmp_path / "best.keras", monitor="bogus_metric", save_best_only=True)])
    assert int(model.optimizer.iterations.numpy()) == 1 and not os.listdir(tmp_path)
    with pytest.raises(ValueError, match="received: 'bogus_metric'"):  # Keras would fail at the epoch's end
        fit(make_model(), [ChiefModelCheckpoint(tmp_path / "last.keras", monitor="bogus_metric")])
    fit(make_model(), [ChiefModelCheckpoint(tmp_path / "best.keras", monitor="val_loss", save_best_only=True)])


@pytest.mark.parametrize("index, chief", [(0, True), (1, False)])
def test_only_the_chief_writes_the_path_and_the_others_leave_nothing(tmp_path, monkeypatch, index, chief):
    monkeypatch.setenv("TF_CONFIG", tf_config(index))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    checkpoint = ChiefModelCheckpoint(tmp_path / "ckpt" / "epoch_{epoch}.keras")
    during = ListFolder(tmp_path / "scratch")
    fit(make_model(), [checkpoint, during])
    expected = [f"epoch_{epoch}.keras" for epoch in range(1, EPOCHS + 1)]
    if chief:
        assert sorted(os.listdir(tmp_path / "ckpt")) == expected
        assert during.listings[-1] == []
    else:
        assert not (tmp_path / "ckpt").exists()
        scratch = os.path.dirname(checkpoint.filepath)
        assert during.listings[-1] == [os.path.basename(scratch)] and scratch.startswith(str(tmp_path / "scratch"))
        assert not os.path.exists(scratch)


# Serialization


@pytest.mark.parametrize(
    "callback",
    [
        ChiefModelCheckpoint("ckpt/model.keras", monitor="loss", save_best_only=True, save_freq=5),
        WorkerBackupAndRestore("run/backup", save_freq=7, delete_checkpoint=False),
    ],
    ids=["ChiefModelCheckpoint", "WorkerBackupAndRestore"],
)
def test_config_round_trips(callback):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(restored) is type(callback)
    assert restored.get_config() == callback.get_config()


# Exact resume with the default, shuffled and augmented, CIFAR-10 pipeline (one process)

CIFAR_BATCH, CIFAR_STEPS = 16, 4


@pytest.fixture(scope="module")
def cifar():
    from lepton_keras.data import load_cifar10

    return load_cifar10("sample", shard=None, train_limit=CIFAR_BATCH * CIFAR_STEPS, validation_limit=0)


def fit_cifar(data, repeat, callbacks):
    model = make_cifar_model()
    train = data.train_dataset(CIFAR_BATCH, augment=True, repeat=repeat)  # shuffle=True, the default
    steps = data.steps_per_epoch(CIFAR_BATCH) if repeat else None
    model.fit(train, epochs=EPOCHS, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=callbacks)
    return model


def model_state(model):
    return [*model.get_weights(), *(np.asarray(v.numpy()) for v in model.optimizer.variables)]


@pytest.mark.parametrize("repeat", [False, True], ids=["finite", "repeated"])
@pytest.mark.parametrize(
    "save_freq, interrupted_after, cut_short",
    [(3, 6, False), ("epoch", 8, False), (3, 11, True)],
    ids=["mid-epoch", "epoch-boundary", "killed-mid-save"],
)
def test_a_shuffled_augmented_cifar10_run_resumes_bitwise(tmp_path, cifar, repeat, save_freq, interrupted_after,
                                                          cut_short):
    uninterrupted = model_state(fit_cifar(cifar, repeat, []))
    backup_dir = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        callbacks = [WorkerBackupAndRestore(backup_dir, save_freq=save_freq), Interrupt(interrupted_after)]
        fit_cifar(cifar, repeat, callbacks)
    if cut_short:  # killed between writing the newest state's weights and its metadata
        newest = max(backup_dir.glob("*.json"))
        newest.unlink()
        newest.with_suffix("").with_suffix(".tmp.weights.h5").write_bytes(b"partial")
    backup = WorkerBackupAndRestore(backup_dir, save_freq=save_freq)
    resumed = fit_cifar(cifar, repeat, [backup])
    assert backup.restored_position is not None and backup.restored_position != (0, 0)
    assert int(resumed.optimizer.iterations.numpy()) == EPOCHS * CIFAR_STEPS
    for received, expected in zip(model_state(resumed), uninterrupted, strict=True):
        assert np.array_equal(received, expected)
