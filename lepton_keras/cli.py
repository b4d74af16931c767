"""The `lepton-keras` command.

    lepton-keras launch --workers 2 -- python tutorials/cifar10_cnn.py --epochs 1
    lepton-keras lr-find --source sample --steps 100            # learning-rate range test of the CIFAR-10 CNN
    lepton-keras launch --workers 2 -- lepton-keras lr-find     # the same test on 2 local workers

A bad request (a flag out of range, an unknown optimizer, missing data, a program that does
not exist) is a one-line `lepton-keras <command>: error: ...` with exit status 2. `--help` and
`launch` never import TensorFlow; `lr-find` quiets TensorFlow's C++ start-up logs
(TF_CPP_MIN_LOG_LEVEL=2) unless the environment sets TF_CPP_MIN_LOG_LEVEL.
"""

from __future__ import annotations

import argparse
import os
import sys

from lepton_keras import __version__


# The flag behind each argument name that the library's messages start with.
_FLAGS = {
    "workers": "--workers", "ps": "--ps", "host": "--host", "grace_seconds": "--grace-seconds", "timeout_seconds": "--timeout",
    "min_learning_rate": "--min-lr", "max_learning_rate": "--max-lr", "steps": "--steps",
    "cpu_replicas": "--cpu-replicas", "train_limit": "--train-limit", "global_batch_size": "--batch-size",
}  # fmt: skip


def _or_usage_error(parser: argparse.ArgumentParser, call, *args, **kwargs):
    """`call(*args, **kwargs)`; a ValueError or a missing file becomes the parser's one-line error (exit 2)."""
    try:
        return call(*args, **kwargs)
    except (ValueError, FileNotFoundError) as error:
        name, _, rest = str(error).partition(" ")
        parser.error(f"{_FLAGS[name]} {rest}" if name in _FLAGS else str(error))


def _launch(args: argparse.Namespace) -> int:
    from lepton_keras.distribute import launcher

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        args.parser.error("give the command to run after --, e.g. -- python train.py")
    # launch() checks every argument before it starts anything.
    return _or_usage_error(
        args.parser, launcher.launch, command, args.workers, ps=args.ps, host=args.host,
        grace_seconds=args.grace_seconds, timeout_seconds=args.timeout,
    )  # fmt: skip


def _cifar10_cnn():
    """The CNN of tutorials/cifar10_cnn.py (the package never imports tutorials/; a test keeps the two equal)."""
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def _lr_find(args: argparse.Namespace) -> int:
    parser = args.parser
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir must be an existing folder, received: {args.data_dir!r}")
    if args.source == "folder" and args.data_dir is None:
        parser.error("--source folder needs --data-dir, the folder with one folder per class")
    from lepton_keras import _tensorflow_logs

    _tensorflow_logs.quiet_tensorflow_logs()  # TF_CPP_MIN_LOG_LEVEL=2 unless set, before TensorFlow loads
    _tensorflow_logs.import_tensorflow()  # without the start-up lines that level does not reach
    import keras

    from lepton_keras import distribute, optimizers
    from lepton_keras.callbacks.lr_finder import CSV_NAME, PLOT_NAME, LearningRateFinder, find_learning_rate
    from lepton_keras.data import load_cifar10
    from lepton_keras.distribute.strategy import finish_job

    # The sweep's own checks, before the strategy and the data are set up.
    _or_usage_error(parser, LearningRateFinder, args.min_lr, args.max_lr, args.steps, mode=args.mode)
    strategy = _or_usage_error(parser, distribute.get_strategy, "auto", cpu_replicas=args.cpu_replicas)
    _or_usage_error(parser, keras.utils.set_random_seed, args.seed)
    with strategy.scope():
        optimizer = _or_usage_error(parser, optimizers.get, args.optimizer)
    data = _or_usage_error(
        parser, load_cifar10, args.source, data_dir=args.data_dir, train_limit=args.train_limit, validation_limit=0,
        seed=args.seed,
    )  # fmt: skip
    print(data.describe())
    plan = _or_usage_error(parser, data.input_plan, args.batch_size, strategy=strategy)  # the data path's checks
    print(f"{plan.replicas} replica(s), global batch {plan.global_batch_size}, {args.steps} steps")
    train = _or_usage_error(
        parser, data.train_dataset, args.batch_size, strategy=strategy, seed=args.seed, one_hot=True
    )
    with strategy.scope():
        model = _cifar10_cnn()
        model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    finder = find_learning_rate(
        model, train, min_learning_rate=args.min_lr, max_learning_rate=args.max_lr, steps=args.steps,
        mode=args.mode, output_dir=args.output_dir, verbose=args.verbose,
    )  # fmt: skip
    print(f"ran {len(finder.results['losses'])} of {args.steps} steps")
    suggestions = finder.suggestions()
    if not suggestions:
        print("too few steps for a suggestion; run more --steps")
    for method, value in suggestions.items():
        print(f"{method:>8}: {value:.3e}")
    if distribute.is_chief(strategy):
        print(f"wrote {os.path.join(args.output_dir, CSV_NAME)} and {PLOT_NAME}")
    finish_job(strategy)  # under several workers: the chief exits last, without coordination errors
    return 0


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
    launch.add_argument(
        "--ps", type=int, default=0,
        help="parameter servers: > 0 runs parameter-server training, the command on a chief besides the workers (default 0)",
    )  # fmt: skip
    launch.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    launch.add_argument(
        "--grace-seconds", type=float, default=3.0, help="time stopped workers get before SIGKILL (default 3)"
    )
    launch.add_argument(
        "--timeout", type=float, default=None, help="stop all workers after this many seconds (exit 124)"
    )
    launch.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command, e.g. -- python train.py")
    launch.set_defaults(handler=_launch, parser=launch)

    lr_find = commands.add_parser(
        "lr-find",
        help="learning-rate range test of the CIFAR-10 CNN",
        description="Train the CIFAR-10 CNN of the tutorial for --steps steps with a rising learning rate "
        "(Smith 2017), print the suggested learning rates and write lr_find.csv and lr_find.png.",
    )
    lr_find.add_argument("--source", "--data-source", default="auto", choices=("auto", "tfds", "folder", "sample"))
    lr_find.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (one folder per class)")
    lr_find.add_argument("--train-limit", type=int, default=None, help="use this many training images only")
    lr_find.add_argument(
        "--optimizer", default="adam",
        help="a lepton_keras.optimizers registry name: Keras's own (adam), ours (radam, adabelief) or "
        "wrappers composed with '_' (lookahead_radam); default adam",
    )  # fmt: skip
    lr_find.add_argument("--batch-size", type=int, default=128, help="global batch size (default 128)")
    lr_find.add_argument("--steps", type=int, default=100, help="steps of the sweep (default 100)")
    lr_find.add_argument("--min-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    lr_find.add_argument("--max-lr", type=float, default=10.0, help="last learning rate (default 10)")
    lr_find.add_argument("--mode", default="exponential", choices=("exponential", "linear"))
    lr_find.add_argument("--cpu-replicas", type=int, default=None, help="mirror over N logical CPU devices")
    lr_find.add_argument("--output-dir", default="runs/lr_find", help="where the chief writes the CSV and the plot")
    lr_find.add_argument("--seed", type=int, default=0)
    lr_find.add_argument("--verbose", type=int, default=0, help="Keras verbosity of the sweep (default 0)")
    lr_find.set_defaults(handler=_lr_find, parser=lr_find)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    finally:
        _drop_output_to_a_closed_pipe()


def _drop_output_to_a_closed_pipe() -> None:
    """When stdout was closed early (`lepton-keras launch ... | head`, a terminal hung up), sends
    what is left to /dev/null, so Python's final flush neither prints an error nor changes the
    exit status."""
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
