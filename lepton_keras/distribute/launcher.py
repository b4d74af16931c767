"""Start N worker processes on this machine as a MultiWorkerMirroredStrategy cluster.

    lepton-keras launch --workers 2 -- python tutorials/cifar10_cnn.py --epochs 1

Each worker gets a free port on 127.0.0.1 and a TF_CONFIG naming all of them. Every
output line is prefixed with the worker's index. When a worker fails, the others are
stopped (SIGTERM, then SIGKILL after a grace period) and the launcher exits with that
worker's exit status; Ctrl-C (or SIGTERM) stops all. Each worker runs in its own
process group, so nothing it started outlives the launcher.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

INTERRUPTED_EXIT_CODE = 130
TIMED_OUT_EXIT_CODE = 124  # as coreutils' timeout
_POLL_SECONDS = 0.05


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that are free on `host` right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def cluster_tf_configs(workers: int, host: str = "127.0.0.1") -> list[str]:
    """One TF_CONFIG JSON string per worker of a local cluster with `workers` workers."""
    addresses = [f"{host}:{port}" for port in free_ports(workers, host)]
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
        for index in range(workers)
    ]


def _forward_lines(stream, prefix: str, out, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
            out.flush()
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


class _Terminated(Exception):
    """Raised in the launcher by SIGINT (Ctrl-C) or SIGTERM."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def launch(
    command: list[str],
    workers: int,
    *,
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
        host: address the workers listen on (default 127.0.0.1).
        env: environment for the workers (default: this process's); TF_CONFIG is added.
        grace_seconds: how long stopped workers get to exit before SIGKILL (default 3).
        timeout_seconds: stop every worker after this long (default None: no limit), for
            jobs that could hang, such as a collective waiting for a worker that never comes.
        out: text stream for the prefixed output (default sys.stdout).

    Returns:
        0 when every worker succeeded; otherwise the status of the first worker that failed
        (a negative status, -N for signal N, is returned as 128 + N), 124 when the job ran
        out of time, or 130 when interrupted.
    """
    if not command:
        raise ValueError("command must name the program to run, received an empty command")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, received: {workers!r}")
    out = out or sys.stdout
    base_env = dict(os.environ if env is None else env)
    base_env.setdefault("PYTHONUNBUFFERED", "1")
    lock = threading.Lock()
    processes, readers = [], []
    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
        # Installed explicitly: a process started in the background inherits an ignored SIGINT.
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[signum] = signal.signal(signum, _raise_terminated)
    status = 0
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    try:
        for index, tf_config in enumerate(cluster_tf_configs(workers, host)):
            process = subprocess.Popen(
                command,
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
                target=_forward_lines, args=(process.stdout, f"[worker {index}] ", out, lock), daemon=True
            )
            reader.start()
            readers.append(reader)
        while True:
            codes = [process.poll() for process in processes]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:
                status = failed[0] if failed[0] > 0 else 128 - failed[0]
                break
            if all(code == 0 for code in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                status = TIMED_OUT_EXIT_CODE
                break
            time.sleep(_POLL_SECONDS)
    except _Terminated:
        status = INTERRUPTED_EXIT_CODE
    finally:
        _stop(processes, grace_seconds)
        for reader in readers:
            reader.join(timeout=grace_seconds)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    if status:
        with lock:
            reason = "the job ran out of time" if status == TIMED_OUT_EXIT_CODE else "a worker failed or was interrupted"
            out.write(f"[launcher] {reason}; stopped all {workers} (exit {status})\n")
            out.flush()
    return status
