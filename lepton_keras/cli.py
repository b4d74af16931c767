"""The `lepton-keras` command.

    lepton-keras launch --workers 2 -- python tutorials/cifar10_cnn.py --epochs 1
"""

from __future__ import annotations

import argparse
import sys

from lepton_keras import __version__


def _launch(args: argparse.Namespace) -> int:
    from lepton_keras.distribute import launcher

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("lepton-keras launch: give the command to run after --, e.g. -- python train.py")
    return launcher.launch(
        command, args.workers, host=args.host, grace_seconds=args.grace_seconds, timeout_seconds=args.timeout
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lepton-keras", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lepton_keras {__version__}")
    commands = parser.add_subparsers(dest="subcommand", required=True)
    launch = commands.add_parser(
        "launch",
        help="run a script as N local MultiWorkerMirroredStrategy workers",
        description="Start N workers on this machine with a TF_CONFIG each; stop all if one fails.",
    )
    launch.add_argument("--workers", type=int, default=2, help="number of worker processes (default 2)")
    launch.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    launch.add_argument(
        "--grace-seconds", type=float, default=3.0, help="time stopped workers get before SIGKILL (default 3)"
    )
    launch.add_argument(
        "--timeout", type=float, default=None, help="stop all workers after this many seconds (exit 124)"
    )
    launch.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command, e.g. -- python train.py")
    launch.set_defaults(handler=_launch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
