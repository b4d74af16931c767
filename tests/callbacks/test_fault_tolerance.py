"""A 2-worker job on shuffled, augmented CIFAR-10 loses a worker (also in the middle of the learning-rate
warmup), is launched again, and ends with bitwise the weights and optimizer state of an uninterrupted run;
launched again with another number of workers, it stops with an error and keeps its backups.

Also the multi-worker check of ChiefModelCheckpoint: only the chief writes the checkpoint
path, and the other worker's scratch files are gone when training ends.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lepton_keras.distribute.launcher import launch
from tests.support.harness import REPO_ROOT
from tests.support.numerics import relative_error
from tests.support.workers import fault_tolerance_worker as job

MODULE = "tests.support.workers.fault_tolerance_worker"
SIGKILL_EXIT_STATUS = 128 + 9


def _weights(path, prefix):
    with np.load(path) as saved:
        return [saved[f"{prefix}_{i}"] for i in range(sum(name.startswith(prefix) for name in saved.files))]


def _launch(out, args, workers=2):
    """(exit status, output) of the job as `workers` local workers, or as one plain process."""
    command = [sys.executable, "-m", MODULE, "--out", str(out), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")])}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if workers == 1:
        env.pop("TF_CONFIG", None)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        return (128 - done.returncode if done.returncode < 0 else done.returncode), done.stdout + done.stderr
    log = io.StringIO()
    status = launch(command, workers, env=env, out=log, grace_seconds=1.0, timeout_seconds=120)
    return status, log.getvalue()


def _listing(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


# (workers, options, how a worker dies, the backups each worker holds then, the agreed position)
SCENARIOS = {
    # Mid-epoch, after the chief's backup of batch 9 (epoch 2, 1 batch in), before worker 1's.
    "2-workers-finite-every-3-batches-killed-after-chief-saved": (
        2, ["--save-freq", "3"], ["--kill-after", "9"],
        (["backup-e1-b2.json", "backup-e2-b1.json"], ["backup-e0-b3.json", "backup-e1-b2.json"]), [1, 2]),
    # At the end of epoch 1, inside worker 1's save of it (weights written, not yet renamed).
    "2-workers-repeated-every-epoch-killed-mid-save": (
        2, ["--save-freq", "epoch", "--repeat"], ["--kill-during-save", "8"],
        (None, ["backup-e1-b0.json"]), [1, 0]),
    # Replicas that average every 4 steps (PeriodicSync), killed between the syncs after steps 8
    # and 12, in worker 1's save of batch 9 (every save is a full sync, a collective of both).
    "2-workers-periodic-sync-every-4-killed-between-syncs": (
        2, ["--save-freq", "3", "--periodic-sync-every", "4"], ["--kill-during-save", "9"],
        (None, ["backup-e0-b3.json", "backup-e1-b2.json"]), [1, 2]),
    # Killed in the middle of the learning-rate warmup (8 steps, from lr/2): after the chief's backup of
    # batch 6, before worker 1's; both resume at batch 3, where the warmup factor is 0.6875.
    "2-workers-killed-in-the-middle-of-the-warmup": (
        2, ["--save-freq", "3", "--warmup-epochs", "2"], ["--kill-after", "6"],
        (["backup-e0-b3.json", "backup-e1-b2.json"], ["backup-e0-b3.json"]), [0, 3]),
    # One process with no strategy, killed in the middle of the warmup (8 steps, from lr/10), in its
    # save of batch 6: it resumes at batch 3.
    "1-process-killed-in-the-middle-of-the-warmup": (
        1, ["--save-freq", "3", "--killed-worker", "0", "--warmup-epochs", "2"], ["--kill-during-save", "6"],
        (["backup-e0-b3.json"],), [0, 3]),
    # One process with no strategy, in its save of batch 9 (epoch 2, 1 batch in).
    "1-process-finite-every-3-batches-killed-mid-save": (
        1, ["--save-freq", "3", "--killed-worker", "0"], ["--kill-during-save", "9"],
        (["backup-e0-b3.json", "backup-e1-b2.json"],), [1, 2]),
}


@pytest.mark.multiworker
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_killed_worker_job_resumes_bitwise_on_shuffled_augmented_data(tmp_path, monkeypatch, scenario):
    workers, options, kill, saved, position = SCENARIOS[scenario]
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the workers' scratch files land here
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "run"
    out.mkdir()

    # First launch: a worker kills itself.
    status, log = _launch(out, [*options, *kill], workers)
    assert status == SIGKILL_EXIT_STATUS, log
    assert "KILLING worker" in log

    if workers == 2 and "finite" in scenario:
        # Relaunched as 1 process: a clear error, and the backups untouched.
        before = _listing(out / "backup")
        status, log = _launch(out, options, workers=1)
        assert status != 0, log
        message = (out / "error_0.txt").read_text()
        assert f"{out / 'backup'} holds the backups of a job with 2 worker(s), and this job was launched " \
            "with 1: relaunch it with 2 worker(s)" in message, message
        assert "delete or move" in message
        assert _listing(out / "backup") == before

    # Second launch: every worker restores the newest backup all hold, finishes, then trains
    # an uninterrupted model in the same cluster.
    status, output = _launch(out, ["--reference", *options], workers)
    assert status == 0, output
    results = [json.loads((out / f"result_{i}.json").read_text()) for i in range(workers)]
    for result, expected in zip(results, saved):
        if expected is not None:  # the chief's, when it may have saved once more before being stopped
            assert result["saved_before"] == expected, output
        # Resumed from the killed worker's newest complete backup (not from scratch, not the
        # chief's newer state) and trained exactly the remaining batches.
        assert result["restored_position"] == position
        assert result["iterations"] == job.EPOCHS * job.STEPS

    resumed = [_weights(out / f"result_{i}.npz", "resumed") for i in range(workers)]
    uninterrupted = [_weights(out / f"result_{i}.npz", "reference") for i in range(workers)]
    for i in range(workers):  # weights and optimizer variables, bitwise
        assert len(resumed[i]) == len(uninterrupted[i]) > len(job.make_model().get_weights())
        assert all(np.array_equal(a, b) for a, b in zip(resumed[i], uninterrupted[i])), relative_error(
            resumed[i], uninterrupted[i])
    # One model on every worker; under periodic sync the optimizer's slots stay each worker's own.
    compared = len(job.make_model().get_weights()) if "periodic-sync" in scenario else None
    assert relative_error(resumed[0][:compared], resumed[-1][:compared]) == 0.0

    # Backups are removed after the successful run.
    assert not (out / "backup").exists()

    # ChiefModelCheckpoint: the chief wrote every epoch to the real path, nothing else is there,
    # and its last file holds the final weights.
    ckpt = out / "ckpt"
    assert sorted(os.listdir(ckpt)) == [f"epoch_{e}.weights.h5" for e in range(1, job.EPOCHS + 1)]
    chief, worker = results[0], results[-1]
    assert chief["checkpoint_path"] == str(ckpt / "epoch_{epoch}.weights.h5")
    checkpointed = job.make_model()
    checkpointed.optimizer.build(checkpointed.trainable_variables)
    checkpointed.load_weights(ckpt / f"epoch_{job.EPOCHS}.weights.h5")
    weights = len(checkpointed.get_weights())
    assert relative_error(checkpointed.get_weights(), resumed[0][:weights]) == 0.0
    if workers == 1:
        return
    # Worker 1 saved too (into a scratch folder of its own), which is gone now.
    scratch = os.path.dirname(worker["checkpoint_path"])
    assert not scratch.startswith(str(out))
    written_after_resuming = [f"epoch_{e}.weights.h5" for e in range(position[0] + 1, job.EPOCHS + 1)]
    assert worker["checkpoint_folder_during_training"][-1] == written_after_resuming
    assert not worker["checkpoint_folder_exists_after"]
