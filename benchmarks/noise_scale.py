"""The gradient noise scale of the tutorial's CNN under the fast recipe: the batch past which steps stop shrinking.

    python benchmarks/noise_scale.py --data-dir /tmp/cifar10/train --at-epochs 0 1 3 10

McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training", arXiv:1812.06162): with G
the full-batch gradient and S the covariance of one example's gradient, the simple noise scale

    B_noise = tr(S) / |G|^2

sets the trade between steps and epochs for reaching a given loss,

    steps  = S_min (1 + B_noise / B),      epochs = E_min (1 + B / B_noise):

far below B_noise a doubled batch halves the steps at the same epochs; far above it the steps no
longer shrink, and a fixed budget of epochs gives fewer useful steps.

Both terms are estimated from the squared norms of minibatch gradients at a small batch b and a
big batch B (the paper's Appendix A; unbiased, since E|G_b|^2 = |G|^2 + tr(S) / b):

    |G|^2 ~ (B |G_B|^2 - b |G_b|^2) / (B - b),     tr(S) ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B),

each squared norm averaged over many batches before the ratio is taken. The gradients are those
the optimizer sees: the recipe's loss (label smoothing) on its training batches (augmented).

Trains `--recipe fast` at batch 128 on its 30-epoch schedule up to the last of --at-epochs, and
measures at each of them (0: the initial weights). The noise scale is SGD's; AdaBelief and LAMB
precondition the gradient, so it places the critical batch only roughly for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from benchmarks._tables import write_markdown_table  # noqa: E402
from benchmarks._tutorial import tutorial  # noqa: E402

RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the CIFAR-10 training image folder (one folder per class)")
    parser.add_argument("--at-epochs", type=int, nargs="+", default=[0, 1, 3, 10])
    parser.add_argument("--schedule-epochs", type=int, default=30, help="the length of the recipe's schedule")
    parser.add_argument("--small-batch", type=int, default=128)
    parser.add_argument("--big-batch", type=int, default=2048)
    parser.add_argument("--images", type=int, default=32768, help="images per batch size and measurement")
    parser.add_argument("--table", default=os.path.join(RESULTS, "noise_scale.md"))
    return parser.parse_args(argv)


def noise_scale(small_batch: int, small_squared_norm: float, big_batch: int, big_squared_norm: float):
    """(|G|^2, tr S, B_noise) from the mean squared gradient norms at two batch sizes."""
    gradient_squared = (big_batch * big_squared_norm - small_batch * small_squared_norm) / (big_batch - small_batch)
    trace = (small_squared_norm - big_squared_norm) / (1.0 / small_batch - 1.0 / big_batch)
    return gradient_squared, trace, trace / gradient_squared


def mean_squared_gradient_norm(model, loss, dataset, batches: int) -> float:
    """The mean over `batches` of dataset's batches of |mean gradient of the batch|^2."""
    import tensorflow as tf

    @tf.function
    def squared_norm(images, labels):
        with tf.GradientTape() as tape:
            value = loss(labels, model(images, training=True))
        gradients = tape.gradient(value, model.trainable_variables)
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float64) ** 2) for g in gradients])

    norms = [float(squared_norm(images, labels)) for images, labels in dataset.take(batches)]
    if len(norms) < batches:
        raise ValueError(f"only {len(norms)} batches of the {batches} asked for; lower --images")
    return sum(norms) / len(norms)


def measure(model, loss, data, recipe, args, epoch: int) -> dict:
    squared = {}
    for batch in (args.small_batch, args.big_batch):
        dataset = data.train_dataset(batch, seed=10_000 + epoch, one_hot=True, augment=recipe.augment)
        squared[batch] = mean_squared_gradient_norm(model, loss, dataset, args.images // batch)
    gradient_squared, trace, scale = noise_scale(args.small_batch, squared[args.small_batch],
                                                 args.big_batch, squared[args.big_batch])  # fmt: skip
    row = {"epoch": epoch, "gradient_squared": gradient_squared, "trace": trace, "noise_scale": scale}
    print(json.dumps(row), flush=True)
    return row


def write_table(rows: list[dict], path: str) -> str:
    header = ["epoch", "‖G‖²", "tr(S)", "B_noise", "steps at 2,048 / at 128 (ideal 1/16)",
              "epochs at 2,048 / at 128", "epochs at 8,192 / at 128"]  # fmt: skip
    cells = []
    for row in rows:
        scale = row["noise_scale"]
        steps = (1 + scale / 2048) / (1 + scale / 128)
        epochs = [(1 + batch / scale) / (1 + 128 / scale) for batch in (2048, 8192)]
        cells.append([str(row["epoch"]), f"{row['gradient_squared']:.4g}", f"{row['trace']:.4g}", f"{scale:,.0f}",
                      f"{steps:.3f}", *(f"{e:.2f}" for e in epochs)])  # fmt: skip
    return write_markdown_table(header, cells, path)


def main(argv=None):
    args = parse_args(argv)
    module = tutorial()
    import keras

    import lepton_keras

    keras.utils.set_random_seed(0)
    data = lepton_keras.data.load_cifar10("folder", data_dir=args.data_dir, seed=0)
    recipe = module.RECIPES["fast"]
    steps_per_epoch = data.steps_per_epoch(recipe.batch_size)
    model = module.build_model()
    optimizer, loss, callbacks = module.build_training(recipe, args.schedule_epochs * steps_per_epoch)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    loss = keras.losses.get(loss)  # the recipe's loss object (label smoothing)

    rows, trained = [], 0
    train = data.train_dataset(recipe.batch_size, seed=0, one_hot=True, augment=recipe.augment)
    for epoch in sorted(set(args.at_epochs)):
        if epoch > trained:
            model.fit(train, epochs=epoch, initial_epoch=trained, callbacks=callbacks, verbose=2)
            trained = epoch
        rows.append(measure(model, loss, data, recipe, args, epoch))
    print(write_table(rows, args.table))
    print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
