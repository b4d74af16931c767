"""A 2-worker job loses a worker mid-training, is launched again, and ends as if never interrupted.

Also the multi-worker check of ChiefModelCheckpoint: only the chief writes the checkpoint
path, and the other worker's scratch files are gone when training ends.
"""

import io
import json
import os
import sys

import numpy as np
import pytest

from lepton_keras.distribute.launcher import launch
from tests.harness import REPO_ROOT, launch_workers
from tests.workers import fault_tolerance_worker as job

MODULE = "tests.workers.fault_tolerance_worker"
SIGKILL_EXIT_STATUS = 128 + 9


def _weights(path, prefix):
    with np.load(path) as saved:
        return [saved[f"{prefix}_{i}"] for i in range(sum(name.startswith(prefix) for name in saved.files))]


def _max_difference(a, b):
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, b))


@pytest.mark.multiworker
def test_killed_worker_job_resumes_from_agreed_backup_and_matches_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the workers' scratch files land here
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "run"
    out.mkdir()

    # First launch: worker 1 kills itself after batch 6, before its own backup of it.
    log = io.StringIO()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")])}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    status = launch([sys.executable, "-m", MODULE, "--out", str(out)], 2, env=env, out=log,
                    grace_seconds=1.0, timeout_seconds=120)
    assert status == SIGKILL_EXIT_STATUS, log.getvalue()
    assert "KILLING worker" in log.getvalue()

    # Second launch: both workers restore the newest backup both hold, finish, then train
    # an uninterrupted model in the same cluster.
    output = launch_workers(MODULE, ["--out", str(out), "--reference"])
    chief, worker = (json.loads((out / f"result_{i}.json").read_text()) for i in range(2))

    # The chief had backed up batch 6 (epoch 1, 2 batches in); worker 1 only batch 3.
    assert chief["saved_before"] == ["backup-e0-b3.json", "backup-e1-b2.json"], output
    assert worker["saved_before"] == ["backup-e0-b3.json"], output
    # Both resumed after 3 batches of epoch 0 (not from scratch, not the chief's newer state)
    # and trained exactly the remaining 9 batches.
    assert chief["restored_position"] == worker["restored_position"] == [0, 3]
    assert chief["iterations"] == worker["iterations"] == job.EPOCHS * job.STEPS

    resumed = [_weights(out / f"result_{i}.npz", "resumed") for i in range(2)]
    uninterrupted = [_weights(out / f"result_{i}.npz", "reference") for i in range(2)]
    single = job.make_model()
    single.fit(job.training_data(), epochs=job.EPOCHS, shuffle=False, verbose=0)
    assert _max_difference(resumed[0], resumed[1]) == 0.0
    assert _max_difference(resumed[0], uninterrupted[0]) < 1e-5
    assert _max_difference(resumed[0], single.get_weights()) < 1e-5

    # Backups are removed after the successful run.
    assert not (out / "backup").exists()

    # ChiefModelCheckpoint: the chief wrote every epoch to the real path, nothing else is there,
    # and its last file holds the final weights.
    ckpt = out / "ckpt"
    assert sorted(os.listdir(ckpt)) == [f"epoch_{e}.weights.h5" for e in range(1, job.EPOCHS + 1)]
    assert chief["checkpoint_path"] == str(ckpt / "epoch_{epoch}.weights.h5")
    saved = job.make_model()
    saved.optimizer.build(saved.trainable_variables)
    saved.load_weights(ckpt / f"epoch_{job.EPOCHS}.weights.h5")
    assert _max_difference(saved.get_weights(), resumed[0]) == 0.0
    # Worker 1 saved too (into a scratch folder of its own), which is gone now.
    scratch = os.path.dirname(worker["checkpoint_path"])
    assert not scratch.startswith(str(out))
    assert worker["checkpoint_folder_during_training"][-1] == sorted(os.listdir(ckpt))
    assert not worker["checkpoint_folder_exists_after"]
