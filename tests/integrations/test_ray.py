"""lepton_keras.integrations.ray on a real local Ray cluster (127.0.0.1, 2 workers of 1 CPU).

The same training function (tests/support/workers/ray_training.py: the tutorial CNN, shuffled
and augmented sample images, a backup every 3 batches) runs under `lepton-keras launch
--workers 2` and through `tensorflow_trainer`, in a run that loses worker 1 (SIGKILL) in its
second epoch, which Ray restarts from the latest checkpoint. The README's Ray block (Train v2)
and the tutorial on Ray (Train v1) run as a user runs them.
"""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ray", reason='the Ray extra: pip install -e ".[ray]" (.ci/run installs it)')

from lepton_keras.integrations.ray import RayBackupAndRestore, tensorflow_trainer  # noqa: E402
from tests.support.harness import REPO_ROOT, launch_workers  # noqa: E402

RAY_TIMEOUT_SECONDS = 420


def _run(command, log_path, timeout=RAY_TIMEOUT_SECONDS):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path, "w") as log:
        status = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode  # fmt: skip
    output = open(log_path).read()
    assert status == 0, f"{command} failed with status {status}:\n{output[-6000:]}"
    return output


def _variables(folder):
    with np.load(os.path.join(folder, "result.npz")) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def _assert_bitwise_equal(actual, expected, what):
    assert len(actual) == len(expected), what
    for index, (a, e) in enumerate(zip(actual, expected)):
        difference = np.max(np.abs(a - e)) if a.shape == e.shape else "shape"
        assert a.shape == e.shape and np.array_equal(a, e), f"{what}: variable {index} differs by {difference}"


@pytest.mark.multiworker
def test_ray_train_resumes_a_killed_worker_to_the_weights_of_launch_bitwise(tmp_path):
    # One Ray run proves both: Ray Train gives the launcher's numbers, and a restart resumes exactly.
    launched = tmp_path / "launch"
    launched.mkdir()
    launch_workers("tests.support.workers.ray_training", ["--out", str(launched)], workers=2)
    output = _run([sys.executable, "-m", "tests.support.workers.ray_training", "--ray", "--out", str(tmp_path)],
                  tmp_path / "ray.log")  # fmt: skip
    driver = json.loads((tmp_path / "driver.json").read_text())

    # Worker 1 died at global batch 8; Ray restarted both from a mid-run checkpoint.
    assert (tmp_path / "killed" / "killed.marker").exists() and "KILLING worker" in output
    killed = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert killed["restored_position"] in ([0, 3], [1, 2]), killed  # the backups before batch 8
    assert (killed["iterations"], killed["workers"], killed["intra_op_threads"]) == (12, 2, 1)  # 1 thread: 1 CPU
    _assert_bitwise_equal(_variables(tmp_path / "killed"), _variables(launched), "Ray Train (killed, resumed) "
                          "against lepton-keras launch")  # fmt: skip

    # Every worker reported (the barrier passed); Ray kept rank 0's metrics and the chief's checkpoint.
    assert driver["error"] == "None"
    metrics = driver["metrics"]
    assert (metrics["epoch"], metrics["batch"]) == (2, 4) and np.isfinite(metrics["loss"]), metrics
    assert driver["checkpoint_files"] == ["backup-e2-b4.json", "backup-e2-b4.weights.h5"]
    checkpoints = sorted(filter(os.path.isdir, glob.glob(str(tmp_path / "storage" / "killed" / "checkpoint_*"))))
    assert len(checkpoints) >= 4  # the backups at batches 3, 6, 9 and 12 (one more after the restart)
    for folder in checkpoints:  # written by the chief only: one backup, no other worker's files
        names = sorted(os.listdir(folder))
        assert len(names) == 2 and names[0].endswith(".json") and names[1].endswith(".weights.h5"), names
    assert "Ray would restore its checkpoints into this run" in driver["reused_name_error"]
    # keras_compat's probes say nothing on success, even with TensorFlow's INFO logs shown (Ray shows them).
    # (Not "no Traceback": with two local Ray clusters at once, as under pytest-xdist, Ray's own
    # PlacementGroupCleaner prints one for "Found multiple active Ray instances", harmlessly.)
    assert "Error reported to Coordinator" not in output and "Invalid reduction dimension" not in output


def _readme_ray_block():
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    blocks = re.findall(r"^```python ray\n(.*?)^```$", text, re.S | re.M)
    assert len(blocks) == 1, "the README has one ```python ray block"
    return blocks[0]


@pytest.mark.multiworker
def test_the_readme_s_ray_example_runs_as_written_in_a_fresh_process(tmp_path):
    script = tmp_path / "readme_ray.py"
    script.write_text(_readme_ray_block())
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # as a user: the installed package
    with open(tmp_path / "log.txt", "w") as log:
        status = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT, timeout=RAY_TIMEOUT_SECONDS).returncode  # fmt: skip
    output = (tmp_path / "log.txt").read_text()
    assert status == 0, output[-6000:]
    assert "['backup-e2-b0.json', 'backup-e2-b0.weights.h5']" in output
    assert re.search(r"'loss': [0-9.]+.*'epoch': 2, 'batch': 0", output), output[-3000:]


@pytest.mark.multiworker
def test_the_tutorial_runs_on_two_ray_workers_under_ray_train_v1(tmp_path, monkeypatch):
    # Train v1 (the README's block runs v2, Ray's default): its trainer actor would take one of the
    # 2 CPUs and the run would wait for ever.
    monkeypatch.setenv("RAY_TRAIN_V2_ENABLED", "0")
    command = [sys.executable, os.path.join(REPO_ROOT, "tutorials", "ray", "cifar10_ray.py"), "--workers", "2",
               "--storage-path", str(tmp_path / "ray"), "--", "--smoke", "--data-source", "sample",
               "--output-dir", str(tmp_path / "out")]  # fmt: skip
    output = _run(command, tmp_path / "log.txt")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["strategy"], summary["workers"], summary["replicas"]) == ("MultiWorkerMirroredStrategy", 2, 2)
    assert "final metrics" in output and "'val_accuracy'" in output and "checkpoint (the chief's last backup)" in output


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_workers": 0}, "num_workers"),
        ({"num_workers": 2, "cpus_per_worker": 0}, "cpus_per_worker"),
        ({"num_workers": 2, "resume": True}, "resume=True continues the run of that name"),
        ({"num_workers": 2, "max_failures": -2}, "max_failures"),
        ({"num_workers": 2, "train_loop_config": [1]}, "train_loop_config"),
    ],
)
def test_tensorflow_trainer_refuses_bad_arguments(options, message):
    with pytest.raises(ValueError, match=message):
        tensorflow_trainer(lambda: None, **options)


def test_tensorflow_trainer_names_each_run_and_refuses_an_existing_name(tmp_path):
    first = tensorflow_trainer(lambda: None, num_workers=2, storage_path=str(tmp_path))
    second = tensorflow_trainer(lambda: None, num_workers=2, storage_path=str(tmp_path))
    assert first.run_config.name != second.run_config.name and first.run_config.name.startswith("lepton_keras-")
    assert first.scaling_config.resources_per_worker == {"CPU": 1}
    (tmp_path / "earlier").mkdir()
    with pytest.raises(ValueError, match="a Ray run named 'earlier' exists"):
        tensorflow_trainer(lambda: None, num_workers=2, storage_path=str(tmp_path), name="earlier")
    resumed = tensorflow_trainer(lambda: None, num_workers=2, storage_path=str(tmp_path), name="earlier", resume=True)
    assert resumed.run_config.name == "earlier"


def test_ray_backup_and_restore_round_trips_its_config(tmp_path):
    callback = RayBackupAndRestore(save_freq=5, backup_dir=str(tmp_path))
    rebuilt = RayBackupAndRestore.from_config(callback.get_config())
    assert (rebuilt.save_freq, rebuilt.backup_dir) == (5, str(tmp_path))
    assert RayBackupAndRestore().get_config() == {"save_freq": "epoch", "backup_dir": None}


def test_ray_backup_and_restore_outside_ray_train_is_a_clear_error(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(RuntimeError, match="outside of a Ray Train training function"):
        callback = RayBackupAndRestore(backup_dir=str(tmp_path))
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0, callbacks=[callback])


def test_import_lepton_keras_alone_does_not_import_ray():
    program = "import sys, lepton_keras; assert 'ray' not in sys.modules, 'ray imported'"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
