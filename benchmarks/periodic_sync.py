"""Periodic synchronisation against every-step all-reduce: validation accuracy against wall-clock time.

    python benchmarks/periodic_sync.py --data-dir /tmp/cifar10/train                  # sprint, 3 epochs
    python benchmarks/periodic_sync.py --data-dir /tmp/cifar10/train --recipe large-batch --batch-size 2048 \\
        --epochs 30 --variants every-8-warmup-250 --runs-dir runs/periodic_sync_2048 \\
        --table benchmarks/results/periodic_sync_2048.md --plot benchmarks/results/periodic_sync_2048.png

Runs tutorials/cifar10_cnn.py on `--workers` local workers (`lepton-keras launch`, 1 CPU thread
each) once per variant, on the 5,000-image validation split carved from the 50,000 training
images, for the same epochs and recipe:

    every-1                 the gradient all-reduce of every step (today's synchronous path)
    every-H                 local SGD: each worker trains on its own shard, the weights are
                            averaged every H steps (--sync-every H)
    every-H-warmup-W        post-local SGD: W synchronous steps first (--sync-warmup-steps W)
    every-H-diloco          DiLoCo's outer Nesterov step (--outer-optimizer diloco)

Writes a markdown table (--table: final and best validation accuracy, its difference from
every-1, the wall-clock time of fit and the images/s) and a PNG (--plot) of validation accuracy
against the wall-clock time of fit, so the trade is seen. `--reuse` skips a variant whose
summary.json has --epochs epochs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from benchmarks._plots import save_figure  # noqa: E402
from benchmarks._tables import write_markdown_table  # noqa: E402

TUTORIAL = os.path.join(REPO_ROOT, "tutorials", "cifar10_cnn.py")
RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results")
VARIANT = re.compile(r"^every-(\d+)(?:-warmup-(\d+))?(-diloco)?$")


def variant_flags(variant: str) -> list[str]:
    """The tutorial's flags of a variant name (see the module docstring)."""
    match = VARIANT.match(variant)
    if match is None:
        raise argparse.ArgumentTypeError(f"{variant!r} is not every-H, every-H-warmup-W or every-H-diloco")
    every, warmup, diloco = match.groups()
    flags = ["--sync-every", every]
    if warmup:
        flags += ["--sync-warmup-steps", warmup]
    if diloco:
        flags += ["--outer-optimizer", "diloco"]
    return flags


def run_variant(variant: str, args) -> dict:
    from lepton_keras.distribute.launcher import launch

    output_dir = os.path.join(args.runs_dir, variant)
    path = os.path.join(output_dir, "summary.json")
    if args.reuse and os.path.exists(path):
        summary = json.load(open(path))
        if len(summary["history"]["val_accuracy"]) == args.epochs:
            print(f"reusing {path}", flush=True)
            return summary
    command = [sys.executable, TUTORIAL, "--data-dir", args.data_dir, "--epochs", str(args.epochs),
               "--recipe", args.recipe, "--output-dir", output_dir, "--verbose", "2", "--cpu-threads", "1",
               *(["--batch-size", str(args.batch_size)] if args.batch_size else []), *variant_flags(variant)]  # fmt: skip
    print("running", variant, ":", " ".join(command), flush=True)
    status = launch(command, args.workers, env={**os.environ, "PYTHONPATH": REPO_ROOT})
    if status != 0:
        raise RuntimeError(f"variant {variant} failed with exit status {status}")
    return json.load(open(path))


def write_table(runs: list[tuple[str, dict]], path: str) -> str:
    synchronous = dict(runs).get("every-1")
    header = ["variant", "epochs", "steps", "final validation accuracy", "vs every-1 (points)",
              "best validation accuracy", "fit seconds", "images/s"]  # fmt: skip
    rows = []
    for variant, summary in runs:
        accuracies = summary["history"]["val_accuracy"]
        difference = f"{100 * (accuracies[-1] - synchronous['history']['val_accuracy'][-1]):+.2f}" \
            if synchronous else "n/a"  # fmt: skip
        steps = 45_000 // summary["global_batch_size"] * len(accuracies)  # the training split, whole batches
        rows.append([variant, str(len(accuracies)), f"{steps:,}", f"{accuracies[-1]:.4f}", difference,
                     f"{max(accuracies):.4f}", f"{summary['fit_seconds']:.0f}",
                     f"{summary['steady_state_images_per_second']:.0f}"])  # fmt: skip
    return write_markdown_table(header, rows, path)


def plot(runs: list[tuple[str, dict]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for variant, summary in runs:
        seconds = list(itertools.accumulate(summary["epoch_seconds"]))
        axes.plot(seconds, summary["history"]["val_accuracy"], marker="o", markersize=3, label=variant)
    axes.set_xlabel("wall-clock seconds of fit (end of each epoch)")
    axes.set_ylabel("validation accuracy (5,000 held-out images)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    save_figure(figure, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the CIFAR-10 training image folder (one folder per class)")
    parser.add_argument("--recipe", default="sprint")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (default: the recipe's)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", nargs="+", type=str,
                        default=["every-1", "every-8", "every-32", "every-32-warmup-700"])  # fmt: skip
    parser.add_argument("--runs-dir", default="runs/periodic_sync")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--table", default=os.path.join(RESULTS, "periodic_sync.md"))
    parser.add_argument("--plot", default=os.path.join(RESULTS, "periodic_sync.png"))
    args = parser.parse_args(argv)
    for variant in args.variants:
        variant_flags(variant)  # every name checked before the first run
    runs = [(variant, run_variant(variant, args)) for variant in args.variants]
    print(write_table(runs, args.table))
    batch = runs[0][1]["global_batch_size"]
    plot(runs, args.plot, f"CIFAR-10 CNN, --recipe {args.recipe}, {args.workers} workers, global batch {batch}")


if __name__ == "__main__":
    main()
