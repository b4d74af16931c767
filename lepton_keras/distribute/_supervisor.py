"""The process between the launcher and one worker: `python -I _supervisor.py LAUNCHER_PID COMMAND...`.

The launcher (lepton_keras/distribute/launcher.py) starts one supervisor per worker in a new
session, so the supervisor leads the worker's process group; the supervisor runs the worker in
that group. While the launcher lives, a signal to the group is the launcher's stop: the worker
and its children get it too, and the supervisor waits for the worker and exits with its status
(128 + N for signal N). When the launcher dies, even by SIGKILL, Linux sends the supervisor
SIGTERM (prctl PR_SET_PDEATHSIG) and the supervisor SIGKILLs the whole group: the worker and
every child left in it.

Run by path with `python -I`, it imports the standard library only: importing lepton_keras
would load TensorFlow into every supervisor.
"""

import ctypes
import os
import signal
import subprocess
import sys

STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(signum: int) -> None:
    """Asks Linux to send `signum` to this process when the thread that started it ends.

    The launcher starts every supervisor from the thread that waits for the job, which lives
    until the job ends; the check in `main` tells a launcher thread's end from the launcher's.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def main() -> None:
    launcher_pid, command = int(sys.argv[1]), sys.argv[2:]

    def on_signal(signum, frame):
        if os.getppid() != launcher_pid:  # reparented: the launcher died
            os.killpg(0, signal.SIGKILL)

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != launcher_pid:  # the launcher died before the parent-death signal was set
        os.killpg(0, signal.SIGKILL)
    try:
        worker = subprocess.Popen(command)
    except OSError as error:
        print(f"lepton-keras launch: cannot run {command[0]!r}: {error.strerror}", flush=True)
        sys.exit(127)
    status = worker.wait()  # the handler returns, so the wait goes on (PEP 475)
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
