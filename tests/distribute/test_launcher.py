"""The local launcher and `lepton-keras launch`: TF_CONFIG per worker, prefixed output, failure
propagation, no orphans whatever signal the launcher gets, a closed output, bad requests (the
command's help and lr-find: tests/test_cli.py)."""

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from lepton_keras import cli
from lepton_keras.distribute.launcher import TIMED_OUT_EXIT_CODE, cluster_tf_configs, free_ports, launch

# The console script itself: `python -m lepton_keras.cli` would import TensorFlow (lepton_keras does).
COMMAND = os.path.join(os.path.dirname(sys.executable), "lepton-keras")
LAUNCHER = [sys.executable, COMMAND, "launch"]

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
        [*LAUNCHER, "--workers", "2", "--grace-seconds", "0.5", "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for_files(tmp_path, 2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert not any_alive(recorded_pids(tmp_path, 2))


@pytest.mark.multiworker
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL])
def test_no_worker_or_grandchild_survives_a_signal_to_the_launcher(tmp_path, signum):
    # SIGHUP (a closed terminal), SIGQUIT and SIGKILL used to leave both workers and their children.
    command = [sys.executable, "-c", WORKER, str(tmp_path), "sleep"]
    process = subprocess.Popen(
        [*LAUNCHER, "--workers", "2", "--", *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # as from a terminal of its own: the signal goes to the launcher alone
    )  # fmt: skip
    try:
        wait_for_files(tmp_path, 2)
        pids = recorded_pids(tmp_path, 2)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=30)
        assert not any_alive(pids, timeout=10), output
        expected = -signal.SIGKILL if signum == signal.SIGKILL else 128 + signum
        assert process.returncode == expected, output
    finally:
        for pid in recorded_pids(tmp_path, 2) if len(os.listdir(tmp_path)) == 2 else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # a failed test must not leave sleepers behind


@pytest.mark.multiworker
@pytest.mark.parametrize("status", [0, 3])
def test_a_closed_output_neither_blocks_the_job_nor_changes_its_status(status):
    # `lepton-keras launch ... | head -1` used to hang: the forwarders died on the closed pipe
    # and the workers blocked on their full pipes.
    program = f"for i in range(100_000): print('line', i)\nraise SystemExit({status})"
    pipeline = shlex.join([*LAUNCHER, "--workers", "2", "--", sys.executable, "-c", program])
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {pipeline} | head -1"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == status, result.stderr
    assert result.stdout.startswith("[worker ") and result.stdout.count("\n") == 1
    assert "Error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_character_the_output_cannot_encode_is_replaced_not_fatal():
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert launch([sys.executable, "-c", "print('caf\\u00e9'); print('next')"], 1, out=out) == 0
    out.flush()
    assert out.buffer.getvalue() == b"[worker 0] caf?\n[worker 0] next\n"


def test_the_cli_returns_the_job_status():
    assert cli.main(["launch", "--workers", "2", "--", sys.executable, "-c", "pass"]) == 0
    assert cli.main(["launch", "--workers", "1", "--", sys.executable, "-c", "raise SystemExit(5)"]) == 5
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    assert cli.main(["launch", "--workers", "1", "--timeout", "1", "--", *sleeper]) == TIMED_OUT_EXIT_CODE


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: launch([], 2), r"command must be a non-empty list of strings.*received: \[\]"),
        (lambda: launch("python train.py", 2), "command must be a non-empty list of strings"),
        (lambda: launch(["no-such-program-here"], 2), "command.0. must be a program on the workers' PATH"),
        (lambda: launch(["true"], 0), "workers must be an integer >= 1, received: 0"),
        (lambda: launch(["true"], 2.0), "workers must be an integer >= 1, received: 2.0"),
        (lambda: launch(["true"], 1, grace_seconds=-1), "grace_seconds must be a finite number >= 0"),
        (lambda: launch(["true"], 1, timeout_seconds=0), "timeout_seconds must be a finite number > 0"),
        (lambda: launch(["true"], 1, host="192.0.2.1"), "host must be an IPv4 address of this machine"),
        (lambda: free_ports(0), "count must be an integer >= 1, received: 0"),
        (lambda: free_ports(1, ""), "host must be a non-empty string, received: ''"),
        (lambda: cluster_tf_configs(-1), "workers must be an integer >= 1, received: -1"),
    ],
)
def test_bad_launch_requests_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0", "--", "true"], "--workers must be an integer >= 1, received: 0"),
        (["--workers", "-2", "--", "true"], "--workers must be an integer >= 1, received: -2"),
        (["--workers", "two", "--", "true"], "argument --workers: invalid int value: 'two'"),
        (["--workers", "2"], "give the command to run after --"),
        (["--workers", "2", "--"], "give the command to run after --"),
        (["--", "/no/such/program"], "command[0] must be a program on the workers' PATH"),
        (["--timeout", "-1", "--", "true"], "--timeout must be a finite number > 0"),
        (["--timeout", "soon", "--", "true"], "argument --timeout: invalid float value: 'soon'"),
        (["--grace-seconds", "nan", "--", "true"], "--grace-seconds must be a finite number >= 0, received: nan"),
    ],
)
def test_bad_launch_invocations_are_one_line_errors(args, message):
    # --workers 0, a missing command and a missing program used to end in tracebacks.
    result = subprocess.run([*LAUNCHER, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"lepton-keras launch: error: {message}"), result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


# The environment the workers get unless the user set it: quiet TensorFlow logs, the BFC CPU allocator.
@pytest.mark.parametrize(("variable", "default", "chosen"),
                         [("TF_CPP_MIN_LOG_LEVEL", "2", "0"), ("TF_CPU_ALLOCATOR_USE_BFC", "true", "false")])
def test_the_workers_get_the_launcher_s_default_unless_the_user_chose(variable, default, chosen):
    program = f"import os; print(os.environ[{variable!r}])"
    out = io.StringIO()
    env = {key: value for key, value in os.environ.items() if key != variable}
    assert launch([sys.executable, "-c", program], 1, env=env, out=out) == 0
    assert out.getvalue() == f"[worker 0] {default}\n"
    out = io.StringIO()
    assert launch([sys.executable, "-c", program], 1, env={**env, variable: chosen}, out=out) == 0
    assert out.getvalue() == f"[worker 0] {chosen}\n"


# A task program for --ps: the chief works a moment and exits as told; worker 1 fails at once; the others serve.
PARAMETER_SERVER_TASK = r"""
import json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])["task"]
if task["type"] == "chief":
    time.sleep(1.0)
    print("chief done", flush=True)
    sys.exit(int(sys.argv[1]))
if task == {"type": "worker", "index": 1}:
    sys.exit(3)
time.sleep(60)
"""


@pytest.mark.parametrize("chief_status", [0, 5])
def test_with_parameter_servers_the_chief_s_exit_ends_the_job_and_a_lost_worker_does_not(chief_status):
    out = io.StringIO()
    start = time.monotonic()
    status = launch([sys.executable, "-c", PARAMETER_SERVER_TASK, str(chief_status)], 2, ps=1, out=out)
    assert status == chief_status, out.getvalue()
    assert "[chief 0] chief done" in out.getvalue()  # worker 1's failure did not stop the job
    assert time.monotonic() - start < 30  # the servers, which never exit, were stopped
    if chief_status:
        assert f"[launcher] the chief failed; stopped all 4 (exit {chief_status})" in out.getvalue()


def test_a_parameter_server_cluster_has_a_chief_workers_and_parameter_servers_on_free_ports():
    configs = [json.loads(text) for text in cluster_tf_configs(2, ps=1)]
    assert [config["task"] for config in configs] == [
        {"type": "chief", "index": 0}, {"type": "worker", "index": 0}, {"type": "worker", "index": 1},
        {"type": "ps", "index": 0}]  # fmt: skip
    cluster = configs[0]["cluster"]
    assert {kind: len(addresses) for kind, addresses in cluster.items()} == {"chief": 1, "worker": 2, "ps": 1}
    assert len({address for addresses in cluster.values() for address in addresses}) == 4
