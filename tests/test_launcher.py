"""The local launcher: TF_CONFIG per worker, prefixed output, failure propagation, no orphans."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lepton_keras import cli
from lepton_keras.distribute.launcher import INTERRUPTED_EXIT_CODE, TIMED_OUT_EXIT_CODE, launch

# A worker program: records its pid (and its child's), then behaves as told by its index.
WORKER = r"""
import json, os, signal, subprocess, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
out_dir, behaviour = sys.argv[1], sys.argv[2]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(os.path.join(out_dir, f"{index}.pids"), "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
if behaviour == "ignore_sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if behaviour in ("fail", "killed") and index == 1:  # fail once worker 0 has recorded its pids
    while not os.path.exists(os.path.join(out_dir, "0.pids")):
        time.sleep(0.01)
    time.sleep(0.1)
if behaviour == "fail" and index == 1:
    sys.exit(3)
if behaviour == "killed" and index == 1:
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def any_alive(pids, timeout=5.0) -> bool:
    """Whether any of `pids` still runs `timeout` seconds from now (a SIGKILL lands asynchronously)."""
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def recorded_pids(out_dir, workers):
    pids = []
    for index in range(workers):
        with open(os.path.join(out_dir, f"{index}.pids")) as file:
            pids.extend(int(pid) for pid in file.read().split())
    return pids


def wait_for_files(out_dir, count, timeout=60):
    deadline = time.monotonic() + timeout
    while len([f for f in os.listdir(out_dir) if f.endswith(".pids")]) < count:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    time.sleep(0.2)  # let the files be written out


def test_every_worker_gets_its_own_tf_config_and_prefixed_output():
    out = io.StringIO()
    program = "import os; print('hello'); print(os.environ['TF_CONFIG'])"
    assert launch([sys.executable, "-c", program], 3, out=out) == 0
    lines = out.getvalue().splitlines()
    assert sorted(line for line in lines if line.endswith("hello")) == [f"[worker {i}] hello" for i in range(3)]
    configs = {}
    for line in lines:
        if line.endswith("}"):
            prefix, text = line.split("] ", 1)
            configs[int(prefix.removeprefix("[worker "))] = json.loads(text)
    assert sorted(configs) == [0, 1, 2]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    for index, config in configs.items():
        assert config == {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}


@pytest.mark.parametrize("behaviour, status", [("fail", 3), ("killed", 128 + signal.SIGKILL)])
def test_a_failing_worker_stops_the_others_and_leaves_no_process(tmp_path, behaviour, status):
    out = io.StringIO()
    started = time.monotonic()
    assert launch([sys.executable, "-c", WORKER, str(tmp_path), behaviour], 2, out=out) == status
    assert time.monotonic() - started < 30  # the healthy worker would sleep 60 s
    assert not any_alive(recorded_pids(tmp_path, 2))
    assert f"stopped all 2 (exit {status})" in out.getvalue()


def test_a_job_past_its_timeout_is_stopped(tmp_path):
    out = io.StringIO()
    command = [sys.executable, "-c", WORKER, str(tmp_path), "sleep"]
    assert launch(command, 2, timeout_seconds=5, out=out) == TIMED_OUT_EXIT_CODE
    assert not any_alive(recorded_pids(tmp_path, 2))
    assert "the job ran out of time; stopped all 2 (exit 124)" in out.getvalue()


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    command = [sys.executable, "-c", WORKER, str(tmp_path), "ignore_sigterm"]
    process = subprocess.Popen(
        [sys.executable, "-m", "lepton_keras.cli", "launch", "--workers", "2", "--grace-seconds", "0.5", "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for_files(tmp_path, 2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == INTERRUPTED_EXIT_CODE
    assert not any_alive(recorded_pids(tmp_path, 2))


def test_ctrl_c_stops_every_worker(tmp_path):
    command = [sys.executable, "-c", WORKER, str(tmp_path), "sleep"]
    process = subprocess.Popen(
        [sys.executable, "-m", "lepton_keras.cli", "launch", "--workers", "2", "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for_files(tmp_path, 2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == INTERRUPTED_EXIT_CODE, output
    assert not any_alive(recorded_pids(tmp_path, 2))


def test_the_cli_returns_the_job_status():
    assert cli.main(["launch", "--workers", "2", "--", sys.executable, "-c", "pass"]) == 0
    assert cli.main(["launch", "--workers", "1", "--", sys.executable, "-c", "raise SystemExit(5)"]) == 5
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    assert cli.main(["launch", "--workers", "1", "--timeout", "1", "--", *sleeper]) == TIMED_OUT_EXIT_CODE


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: launch([], 2), "command must name the program"),
        (lambda: launch(["true"], 0), "workers must be a positive integer"),
        (lambda: cli.main(["launch", "--workers", "2", "--"]), "give the command to run after --"),
    ],
)
def test_bad_launch_requests_are_clear_errors(call, message):
    with pytest.raises((ValueError, SystemExit), match=message):
        call()
