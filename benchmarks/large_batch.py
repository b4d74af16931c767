"""The unchanged tutorial CNN from global batch 128 to 8,192: validation accuracy and images/s per recipe.

    python benchmarks/large_batch.py --data-dir /tmp/cifar10/train --epochs 30
    python benchmarks/large_batch.py --data-dir /tmp/cifar10/train --epochs 5 --batches 2048 8192 \\
        --runs-dir runs/large_batch_short --table benchmarks/results/large_batch_short.md \\
        --plot benchmarks/results/large_batch_short.png     # a short budget, to choose settings

Runs tutorials/cifar10_cnn.py as a subprocess for every (batch, variant), on the 5,000-image
validation split carved from the 50,000 training images, all for the same number of epochs:

- `naive`: the `fast` recipe (tuned at batch 128) at the new batch with its learning rate,
  warmup and optimizer unchanged;
- `linear`: the same optimizer with the linear rule (lr x B/128) and the warmup of
  `lepton_keras.distribute.large_batch.grown_warmup_epochs`;
- `large-batch`: `--recipe large-batch`, `scale_recipe`'s rate rule (up to the tutorial's
  critical batch), warmup and optimizer, and no augmentation in runs of fewer than 300 steps.

At batch 128 the three are the same run. Each run writes its summary.json under --runs-dir;
`--reuse` skips a run whose summary.json has --epochs epochs. Writes a markdown table (--table)
of the steps, the final and best validation accuracy, the final training accuracy and the
steady-state images/s of each run, and a PNG (--plot): the final validation accuracy against the
batch, one line per variant, and every run's validation curve.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from benchmarks._plots import save_figure  # noqa: E402
from benchmarks._tables import write_markdown_table  # noqa: E402
from benchmarks._tutorial import tutorial  # noqa: E402
from benchmarks.recipe import run_tutorial  # noqa: E402  (the same subprocess run, --reuse and summary)

RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results")
BASE = {"learning_rate": 4e-3, "batch_size": 128, "warmup_fraction": 0.25}  # the tutorial's fast recipe
VARIANTS = ("naive", "linear", "large-batch")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the CIFAR-10 training image folder (one folder per class)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512, 2048, 8192])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--runs-dir", default="runs/large_batch")
    parser.add_argument("--reuse", action="store_true", help="skip a run whose summary.json has --epochs epochs")
    parser.add_argument("--plot", default=os.path.join(RESULTS, "large_batch.png"))
    parser.add_argument("--table", default=os.path.join(RESULTS, "large_batch.md"))
    return parser.parse_args(argv)


def variant_flags(variant: str, batch: int, epochs: int) -> list[str]:
    """The tutorial's flags for one variant at global batch `batch`."""
    from lepton_keras.distribute.large_batch import grown_warmup_epochs, rule_learning_rate

    if variant == "large-batch":
        return ["--recipe", "large-batch", "--batch-size", str(batch)]
    flags = ["--recipe", "fast", "--batch-size", str(batch)]
    if variant == "linear" and batch != BASE["batch_size"]:
        rate = rule_learning_rate(BASE["learning_rate"], BASE["batch_size"], batch, "linear")
        warmup = grown_warmup_epochs(BASE["warmup_fraction"] * epochs, BASE["batch_size"], batch, per_doubling=1.0,
                                     epochs=epochs, max_fraction=0.5)  # fmt: skip
        flags += ["--learning-rate", f"{rate:g}", "--warmup-fraction", f"{warmup / epochs:g}"]
    return flags


def write_table(results: dict, path: str) -> str:
    header = ["global batch", "steps", "variant", "recipe", "final validation accuracy", "best (epoch)",
              "final training accuracy", "images/s"]  # fmt: skip
    training_images = tutorial().TRAINING_IMAGES
    rows, written = [], set()
    for (batch, variant), summary in sorted(results.items(), key=lambda item: (item[0][0], VARIANTS.index(item[0][1]))):
        if id(summary) in written:  # at the base batch the variants are one run
            continue
        written.add(id(summary))
        shared = [v for (b, v), other in results.items() if other is summary]
        variant = " = ".join(shared)
        history = summary["history"]
        accuracies = history["val_accuracy"]
        best = max(accuracies)
        choices = summary["recipe_choices"]
        recipe = f"{choices['optimizer']} lr {choices['learning_rate']:.4g}, warmup {choices['warmup_fraction']:.3g}"
        if not choices.get("augment", True):
            recipe += ", no augmentation"
        steps = len(accuracies) * (training_images // batch)  # the tutorial drops the last partial batch
        cells = [str(batch), f"{steps:,}", variant, recipe, f"{accuracies[-1]:.4f}",
                 f"{best:.4f} ({accuracies.index(best) + 1})", f"{history['accuracy'][-1]:.4f}",
                 f"{summary['steady_state_images_per_second']:,.0f}"]  # fmt: skip
        rows.append(cells)
    return write_markdown_table(header, rows, path)


def plot(results: dict, epochs: int, path: str) -> None:
    """Left: the final validation accuracy against the batch; right: every run's curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_batch, curves) = plt.subplots(1, 2, figsize=(13, 4.5))
    styles = dict(zip(VARIANTS, ("-", ":", "--")))
    batches = sorted({batch for batch, _ in results})
    colors = dict(zip(batches, plt.get_cmap("viridis")([i / max(1, len(batches) - 1) for i in range(len(batches))])))
    for variant in VARIANTS:
        points = sorted((batch, s["history"]["val_accuracy"][-1]) for (batch, v), s in results.items() if v == variant)
        if points:
            by_batch.plot(*zip(*points), marker="o", linestyle=styles[variant], label=variant)
        for batch, summary in sorted((b, s) for (b, v), s in results.items() if v == variant):
            if batch != BASE["batch_size"] or variant == VARIANTS[0]:
                accuracies = summary["history"]["val_accuracy"]
                curves.plot(range(1, len(accuracies) + 1), accuracies, linestyle=styles[variant],
                            color=colors[batch], label=f"{batch} {variant}")  # fmt: skip
    by_batch.set_xscale("log", base=2)
    by_batch.set_xlabel("global batch")
    by_batch.set_ylabel(f"validation accuracy after {epochs} epochs")
    by_batch.set_title("the fast recipe scaled to the batch")
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation accuracy")
    curves.set_title("every run (colour: batch, line: variant)")
    curves.legend(fontsize=7, ncol=2, loc="lower right")
    for axes in (by_batch, curves):
        axes.grid(alpha=0.3)
    by_batch.legend(loc="lower left")
    figure.suptitle("CIFAR-10, the tutorial's CNN (unchanged)")
    save_figure(figure, path)


def main(argv=None):
    args = parse_args(argv)
    results = {}
    for batch in args.batches:
        for variant in args.variants:
            if batch == BASE["batch_size"] and variant != args.variants[0]:
                results[(batch, variant)] = results[(batch, args.variants[0])]  # the same run at k = 1
                continue
            directory = os.path.join(args.runs_dir, f"{variant}_{batch}")
            flags = variant_flags(variant, batch, args.epochs)
            results[(batch, variant)] = run_tutorial(directory, flags, args.epochs, args)
    plot(results, args.epochs, args.plot)
    print(write_table(results, args.table))
    print(f"wrote {args.plot} and {args.table}")


if __name__ == "__main__":
    main()
