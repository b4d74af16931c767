"""The tutorial's CNN trained by a recipe against stock Adam: validation accuracy per epoch, and a table.

    python benchmarks/recipe.py --data-dir /tmp/cifar10/train --epochs 30
    python benchmarks/recipe.py --data-dir /tmp/cifar10/train --epochs 30 --reuse \\
        --extra "fast, 3 epochs=runs/recipe/c3_fast"    # add finished runs to the table

Runs tutorials/cifar10_cnn.py as a subprocess, the same model and the same 5,000-image
validation split carved from the 50,000 training images (load_cifar10's default for a folder):

- stock Adam: Adam at a constant 1e-3, global batch 64 (the Keras docs' CNN), no augmentation;
- the recipe (`--recipe`, default fast; see the tutorial's docstring);
- a recipe for a short budget (`--short-recipe`, default sprint) for `--short-epochs` (3): its
  1cycle schedule spans those epochs, so it is a run of its own, not the start of the long one.

Each run writes its summary.json under --runs-dir; `--reuse` skips a run whose summary.json is
already there with --epochs epochs. Writes a PNG of the validation accuracy per epoch with the
70% and 80% lines (--plot) and a markdown table (--table): the first epoch at which each
accuracy was reached, the best and final accuracy, and the mean wall seconds per epoch
(validation included) of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from benchmarks._plots import save_figure  # noqa: E402
from benchmarks._tables import write_markdown_table  # noqa: E402

TUTORIAL = os.path.join(REPO_ROOT, "tutorials", "cifar10_cnn.py")
RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results")
STOCK_FLAGS = ["--recipe", "none", "--optimizer", "adam", "--learning-rate", "1e-3", "--batch-size", "64"]
THRESHOLDS = (0.70, 0.80)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the CIFAR-10 training image folder (one folder per class)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--recipe", default="fast", help="the tutorial's --recipe to compare with stock Adam")
    parser.add_argument("--short-recipe", default="sprint", help="a recipe for a short budget, also plotted")
    parser.add_argument("--short-epochs", type=int, default=3, help="its epochs (0: no short run)")
    parser.add_argument("--runs-dir", default="runs/recipe", help="where each run writes its summary.json")
    parser.add_argument("--reuse", action="store_true", help="skip a run whose summary.json has --epochs epochs")
    parser.add_argument("--extra", action="append", default=[], metavar="LABEL=DIR",
                        help="a finished tutorial run (its output dir) to add to the table")  # fmt: skip
    parser.add_argument("--plot", default=os.path.join(RESULTS, "recipe_curves.png"))
    parser.add_argument("--table", default=os.path.join(RESULTS, "recipe.md"))
    return parser.parse_args(argv)


def run_tutorial(output_dir: str, flags: list[str], epochs: int, args) -> dict:
    """Runs the tutorial for `epochs` epochs (unless --reuse finds the run) and returns its summary."""
    path = os.path.join(output_dir, "summary.json")
    if args.reuse and os.path.exists(path):
        summary = read_summary(output_dir)
        if len(summary["history"]["val_accuracy"]) == epochs:
            print(f"reusing {path}")
            return summary
    command = [sys.executable, TUTORIAL, "--data-dir", args.data_dir, "--epochs", str(epochs),
               "--output-dir", output_dir, "--verbose", "2", *flags]  # fmt: skip
    print("running", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    return read_summary(output_dir)


def read_summary(output_dir: str) -> dict:
    with open(os.path.join(output_dir, "summary.json")) as file:
        return json.load(file)


def first_epoch_reaching(accuracies: list[float], threshold: float) -> int | None:
    """The 1-based epoch at which the accuracy first reached `threshold`, None if never."""
    return next((epoch for epoch, value in enumerate(accuracies, 1) if value >= threshold), None)


def table_row(label: str, summary: dict) -> list[str]:
    accuracies = summary["history"]["val_accuracy"]
    reached = [first_epoch_reaching(accuracies, t) for t in THRESHOLDS]
    seconds = summary.get("epoch_seconds") or []
    per_epoch = f"{sum(seconds) / len(seconds):.0f}" if seconds else "n/a"
    best = max(accuracies)
    cells = [label, str(len(accuracies)), *(str(e) if e else "not reached" for e in reached),
             f"{best:.4f} (epoch {accuracies.index(best) + 1})", f"{accuracies[-1]:.4f}", per_epoch]  # fmt: skip
    return cells


def write_table(rows: list[tuple[str, dict]], path: str) -> str:
    header = ["run", "epochs", "epoch to 70%", "epoch to 80%", "best validation accuracy",
              "final validation accuracy", "s/epoch"]  # fmt: skip
    return write_markdown_table(header, [table_row(label, summary) for label, summary in rows], path)


def plot(curves: list[tuple[str, dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for label, summary in curves:
        accuracies = summary["history"]["val_accuracy"]
        axes.plot(range(1, len(accuracies) + 1), accuracies, marker="o", markersize=3, label=label)
    for threshold in THRESHOLDS:
        axes.axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
        axes.text(0.5, threshold + 0.004, f"{threshold:.0%}", color="gray", fontsize=8)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy (5,000 held-out training images)")
    axes.set_title("CIFAR-10, the tutorial's CNN (unchanged)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    save_figure(figure, path)


def main(argv=None):
    args = parse_args(argv)
    stock = run_tutorial(os.path.join(args.runs_dir, "stock_adam"), STOCK_FLAGS, args.epochs, args)
    recipe = run_tutorial(os.path.join(args.runs_dir, args.recipe), ["--recipe", args.recipe], args.epochs, args)
    curves = [("stock Adam 1e-3, batch 64", stock), (f"--recipe {args.recipe}", recipe)]
    if args.short_recipe and args.short_epochs:
        directory = os.path.join(args.runs_dir, f"{args.short_recipe}_{args.short_epochs}")
        short = run_tutorial(directory, ["--recipe", args.short_recipe], args.short_epochs, args)
        curves.append((f"--recipe {args.short_recipe}, {args.short_epochs} epochs", short))
    extras = []
    for item in args.extra:
        label, _, directory = item.rpartition("=")
        extras.append((label, read_summary(directory)))
    plot(curves, args.plot)
    print(write_table(curves + extras, args.table))
    print(f"wrote {args.plot} and {args.table}")


if __name__ == "__main__":
    main()
