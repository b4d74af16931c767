"""Start N worker processes on this machine as a MultiWorkerMirroredStrategy or parameter-server cluster.

    lepton-keras launch --workers 2 -- python tutorials/cifar10_cnn.py --epochs 1
    lepton-keras launch --workers 2 --ps 1 -- python tutorials/cifar10_cnn.py --epochs 1

With `--ps N` the cluster is a parameter-server cluster: a chief, the workers and N parameter
servers, every one running the same command. `get_strategy()` returns the chief's
ParameterServerStrategy there, and on a worker or parameter server serves the chief until it
is stopped. The chief's exit ends the job with its status; a worker that fails does not (the
chief runs its steps on the other workers), a parameter server that fails makes the chief stop.

Each worker gets a free port on 127.0.0.1 and a TF_CONFIG naming all of them, and, unless the
environment sets them, TF_CPP_MIN_LOG_LEVEL=2 (TensorFlow's C++ errors only) and
TF_CPU_ALLOCATOR_USE_BFC=true (`CPU_ALLOCATOR`: under a distribution strategy, with TensorFlow's
default CPU allocator, the tutorial CNN's train step ran 1.6-1.8x slower than without a
strategy, with the same kernels; with the BFC allocator 1.1x).
Every output line is prefixed with the worker's index. When a worker fails, the others are
stopped (SIGTERM, then SIGKILL after a grace period) and the launcher exits with that
worker's exit status; SIGINT (Ctrl-C), SIGTERM, SIGHUP (a closed terminal or ssh session)
and SIGQUIT stop all and exit with 128 + the signal number.

Nothing outlives the launcher. Each worker runs under a small supervisor (`_supervisor.py`) that
leads the worker's own process group: the launcher stops a worker by signalling that group,
which reaches the worker's children too. On Linux the kernel also tells each supervisor when
the launcher dies, even by SIGKILL (a parent-death signal, prctl PR_SET_PDEATHSIG), and the
supervisor then kills its group. Only a process that leaves its group on purpose (setsid,
setpgid) escapes, as it would escape a shell's job control. A closed output (`... | head`)
never blocks the job: lines are then dropped, the workers' pipes are still drained.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from lepton_keras._tensorflow_logs import quiet_tensorflow_logs
from lepton_keras.distribute._supervisor import STOP_SIGNALS
from lepton_keras.validation import check_int, check_non_negative, check_positive, check_string, invalid

INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT  # 130, as a shell reports Ctrl-C
TIMED_OUT_EXIT_CODE = 124  # as coreutils' timeout
_POLL_SECONDS = 0.05
_SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_supervisor.py")

# TensorFlow's BFC allocator for the CPU: measured per train step of the tutorial CNN on one CPU
# thread, a 1-device MirroredStrategy took 130 ms with the default allocator and 83 ms with this
# one (no strategy: 73-76 ms with either); see benchmarks/README.md.
CPU_ALLOCATOR = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that are free on `host` right now.

    Raises:
        ValueError: `count` is not an integer >= 1, or `host` is not an address of this machine.
    """
    count = check_int("count", count, minimum=1)
    host = check_string("host", host)
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        try:
            for sock in sockets:
                sock.bind((host, 0))
        except OSError as error:
            raise invalid("host", host, f"an IPv4 address of this machine to listen on ({error})") from None
        return [sock.getsockname()[1] for sock in sockets]


def cluster_tasks(workers: int, ps: int = 0) -> list[tuple[str, int]]:
    """The (task type, index) of every process of a local cluster: the chief first when `ps` > 0."""
    workers = check_int("workers", workers, minimum=1)
    ps = check_int("ps", ps, minimum=0)
    chief = [("chief", 0)] if ps else []
    return [*chief, *(("worker", index) for index in range(workers)), *(("ps", index) for index in range(ps))]


def cluster_tf_configs(workers: int, host: str = "127.0.0.1", ps: int = 0) -> list[str]:
    """One TF_CONFIG JSON string per process of a local cluster (`cluster_tasks`'s order)."""
    tasks = cluster_tasks(workers, ps)
    addresses = iter(f"{host}:{port}" for port in free_ports(len(tasks), host))
    cluster = {}
    for kind, _ in tasks:
        cluster.setdefault(kind, []).append(next(addresses))
    return [json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}) for kind, index in tasks]


class _Output:
    """The launcher's prefixed output, shared by the forwarding threads.

    Once a write fails (a pipe closed by `head`, a full disk), later lines are dropped: the
    forwarders keep draining the workers' pipes, so no worker blocks on a full pipe.
    """

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()
        self.failed = False

    def write(self, text: str) -> None:
        with self.lock:
            if self.failed:
                return
            try:
                try:
                    self.stream.write(text)
                except UnicodeEncodeError:  # a character the stream cannot encode: replace it
                    encoding = getattr(self.stream, "encoding", None) or "ascii"
                    self.stream.write(text.encode(encoding, "replace").decode(encoding))
                self.stream.flush()
            except (OSError, ValueError):  # ValueError: the stream was closed
                self.failed = True


def _forward_lines(stream, prefix: str, output: _Output) -> None:
    for line in iter(stream.readline, ""):
        output.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
    stream.close()


def _stop(processes: list[subprocess.Popen], grace_seconds: float) -> None:
    """SIGTERM every running worker's process group, then SIGKILL what is left after the grace."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(deadline - time.monotonic(), 0))
    for process in processes:
        # The group may outlive its leader (a worker's own children): kill it whatever.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 1.0
    for process in processes:  # give the kernel a moment to finish the killed groups off
        while time.monotonic() < deadline and _group_exists(process.pid):
            time.sleep(_POLL_SECONDS)


def _group_exists(group_id: int) -> bool:
    try:
        os.killpg(group_id, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class _Stopped(Exception):
    """Raised in the launcher's main thread by one of STOP_SIGNALS."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise _Stopped(signum)


def _check_command(command, env: dict[str, str]) -> list[str]:
    if isinstance(command, str) or not isinstance(command, (list, tuple)) or not command or not all(
        isinstance(part, str) for part in command
    ):
        raise invalid("command", command, "a non-empty list of strings: the program and its arguments")
    if shutil.which(command[0], path=env.get("PATH", os.defpath)) is None:
        raise invalid("command[0]", command[0], "a program on the workers' PATH or the path of an executable")
    return list(command)


def launch(
    command: list[str],
    workers: int,
    *,
    ps: int = 0,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    grace_seconds: float = 3.0,
    timeout_seconds: float | None = None,
    out=None,
) -> int:
    """Runs `command` as `workers` local workers; returns the exit status of the job.

    Args:
        command: the program and its arguments, the same for every worker.
        workers: number of worker processes (at least 1).
        ps: number of parameter servers (default 0: a MultiWorkerMirroredStrategy cluster of
            the workers). With ps > 0, a chief runs besides them and its exit ends the job.
        host: address the workers listen on (default 127.0.0.1).
        env: environment for the workers (default: this process's); TF_CONFIG is added, and
            PYTHONUNBUFFERED=1, TF_CPP_MIN_LOG_LEVEL=2 and `CPU_ALLOCATOR` unless it sets them.
        grace_seconds: how long stopped workers get to exit before SIGKILL (default 3).
        timeout_seconds: stop every worker after this long (default None: no limit), for
            jobs that could hang, such as a collective waiting for a worker that never comes.
        out: text stream for the prefixed output (default sys.stdout). When writing to it
            fails, the rest of the output is dropped and the job runs on.

    Returns:
        0 when every worker succeeded (with parameter servers: the chief's status, once it
        exits); otherwise the status of the first worker that failed (a negative status, -N
        for signal N, is returned as 128 + N), 124 when the job ran out of time, or 128 + N
        when the launcher got signal N (130 for Ctrl-C).

    Raises:
        ValueError: a bad argument (a program that does not exist, workers < 1, ps < 0, a
            negative grace, a timeout <= 0, a host that is not this machine's), before anything starts.
    """
    base_env = dict(os.environ if env is None else env)
    command = _check_command(command, base_env)
    tasks = cluster_tasks(workers, ps)
    grace_seconds = check_non_negative("grace_seconds", grace_seconds)
    timeout_seconds = check_positive("timeout_seconds", timeout_seconds, allow_none=True)
    tf_configs = cluster_tf_configs(workers, host, ps)
    base_env.setdefault("PYTHONUNBUFFERED", "1")
    base_env.update({name: value for name, value in CPU_ALLOCATOR.items() if name not in base_env})
    quiet_tensorflow_logs(base_env)  # TensorFlow's C++ start-up chatter, 2 lines a worker
    output = _Output(out or sys.stdout)
    processes, readers = [], []
    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
        # Installed explicitly: a process started in the background inherits an ignored SIGINT.
        for signum in STOP_SIGNALS:
            previous_handlers[signum] = signal.signal(signum, _raise_stopped)
    status, reason = 0, "a worker failed"
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    try:
        for (kind, index), tf_config in zip(tasks, tf_configs):
            # Started from this thread, which lives until the job ends: the parent-death
            # signal fires when the thread that forked the supervisor ends, not the process.
            process = subprocess.Popen(
                [sys.executable, "-I", _SUPERVISOR, str(os.getpid()), *command],
                env={**base_env, "TF_CONFIG": tf_config},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            processes.append(process)
            reader = threading.Thread(
                target=_forward_lines, args=(process.stdout, f"[{kind} {index}] ", output), daemon=True
            )
            reader.start()
            readers.append(reader)
        # With parameter servers the chief (first) decides: it runs a lost worker's steps elsewhere.
        decisive = processes[:1] if ps else processes
        while True:
            codes = [process.poll() for process in decisive]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:
                status = failed[0] if failed[0] > 0 else 128 - failed[0]
                reason = "the chief failed" if ps else reason
                break
            if all(code == 0 for code in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                status, reason = TIMED_OUT_EXIT_CODE, "the job ran out of time"
                break
            time.sleep(_POLL_SECONDS)
    except _Stopped as stopped:
        status, reason = 128 + stopped.signum, f"the launcher got {stopped}"
    finally:
        for signum in previous_handlers:  # a second signal must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        _stop(processes, grace_seconds)
        for reader in readers:
            reader.join(timeout=grace_seconds)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    if status:
        output.write(f"[launcher] {reason}; stopped all {len(tasks)} (exit {status})\n")
    return status
