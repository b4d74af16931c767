"""Does the range test's suggestion train well? One epoch at the suggestion, 10x below and 10x above.

    python benchmarks/lr_finder_check.py --data-dir /tmp/cifar10/train   # the CIFAR-10 image folder
    python benchmarks/lr_finder_check.py                                 # the bundled 2,000-image sample

For each seed: build the tutorial CNN, run `find_learning_rate` (Adam by default), then train
one epoch from the same initial weights, on the same batches, at lr/10, lr and 10 lr, and
print the validation accuracy of each; then the mean over the seeds. Nothing is extracted
here: give an extracted folder, or no folder for the sample.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import keras
import numpy as np

from lepton_keras.callbacks.lr_finder import find_learning_rate
from lepton_keras.data import load_cifar10

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._tutorial import build_model  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder; default: the bundled sample")
    parser.add_argument("--train-count", type=int, default=4000)
    parser.add_argument("--validation-count", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--min-lr", type=float, default=1e-7)
    parser.add_argument("--max-lr", type=float, default=10.0)
    parser.add_argument("--method", default="minimum", choices=("minimum", "steepest", "valley"))
    parser.add_argument("--seeds", type=int, default=3)
    return parser.parse_args(argv)


def make_model(build_model, optimizer: str, learning_rate: float | None = None):
    model = build_model()
    optimizer = keras.optimizers.get(optimizer)
    if learning_rate is not None:
        optimizer.learning_rate = learning_rate
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None):
    args = parse_args(argv)
    if args.data_dir:
        data = load_cifar10("folder", data_dir=args.data_dir, validation_size=args.validation_count,
                            train_limit=args.train_count, shard=None)  # fmt: skip
    else:
        data = load_cifar10("sample", shard=None)
    print(data.describe())
    validation = data.validation_dataset(256, one_hot=True)
    rows = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        keras.utils.set_random_seed(seed)
        model = make_model(build_model, args.optimizer)
        initial = model.get_weights()
        finder = find_learning_rate(model, data.train_dataset(args.batch_size, seed=seed, one_hot=True), min_learning_rate=args.min_lr, max_learning_rate=args.max_lr,
                                    steps=args.steps, verbose=0)  # fmt: skip
        suggested = finder.suggestion(args.method)
        accuracies = []
        for learning_rate in (suggested / 10, suggested, suggested * 10):
            keras.utils.set_random_seed(seed)
            model = make_model(build_model, args.optimizer, learning_rate)
            model.set_weights(initial)
            # a new pipeline with the same seed: the same batches in the same order for each learning rate
            model.fit(data.train_dataset(args.batch_size, seed=seed, one_hot=True), epochs=1, verbose=0,
                      shuffle=False)  # fmt: skip
            accuracies.append(model.evaluate(validation, verbose=0, return_dict=True)["accuracy"])
        rows.append(accuracies)
        print(
            f"seed {seed}: {args.method} suggestion {suggested:.3e} (all: "
            + ", ".join(f"{k} {v:.2e}" for k, v in finder.suggestions().items())
            + f"; {len(finder.results['losses'])} steps); validation accuracy after 1 epoch: "
            f"lr/10 {accuracies[0]:.4f}, lr {accuracies[1]:.4f}, 10 lr {accuracies[2]:.4f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    mean = np.mean(rows, axis=0)
    print(f"mean over {args.seeds} seed(s): lr/10 {mean[0]:.4f}, lr {mean[1]:.4f}, 10 lr {mean[2]:.4f}")


if __name__ == "__main__":
    main()
