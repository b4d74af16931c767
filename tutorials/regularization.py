"""Mean-variance (MV) regularization, L2 and Dropout side by side on the CIFAR-10 CNN.

Trains the tutorial's CNN four times on the same data from the same starting weights:
without regularization; with every Conv2D and Dense layer wrapped in
`lepton_keras.layers.MVRegularization` (the design documents' lambda/2 sum w^2 / sum x^2,
here in its per-example form); with L2 weight decay on the same kernels; and with
Dropout after the flattened features and the 512-unit layer. It prints each run's final
validation accuracy and (chief only) writes `summary.json` and `regularization.png`,
the four validation curves. (Keras adds each model's penalties, MV or L2, to its
validation loss; the accuracies compare like with like.)

    python tutorials/regularization.py --epochs 10
    python tutorials/regularization.py --cpu-replicas 2                       # the same under MirroredStrategy
    lepton-keras launch --workers 2 -- python tutorials/regularization.py   # or 2 workers
"""

from __future__ import annotations

import argparse
import json
import os
import sys

VARIANTS = ("none", "mv", "l2", "dropout")
DATA_SOURCES = ("auto", "tfds", "folder", "sample")  # lepton_keras.data.SOURCES (a test keeps them equal)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="auto", choices=["auto", "default", "mirrored", "multi_worker"])
    parser.add_argument("--cpu-replicas", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--mv-lambda", type=float, default=0.005, help="MV strength (per-example form)")
    parser.add_argument("--l2", type=float, default=1e-4, help="L2 factor")
    parser.add_argument("--dropout", type=float, default=0.5, help="Dropout rate")
    parser.add_argument("--data-source", default="auto", choices=DATA_SOURCES)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--output-dir", default="runs/regularization")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 256 images (for tests)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # --help and bad flags answer before TensorFlow loads (it takes a minute on a loaded machine).
    parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ code: errors only

import lepton_keras  # noqa: E402  (first: it loads TensorFlow without its start-up noise)
import keras  # noqa: E402

from lepton_keras import distribute  # noqa: E402
from lepton_keras.layers import MVRegularization  # noqa: E402


def build_model(variant: str, *, mv_lambda: float, l2: float, dropout: float) -> keras.Model:
    """The tutorial CNN with one kind of regularization."""
    kernel_regularizer = keras.regularizers.L2(l2) if variant == "l2" else None

    def regularized(layer):
        return MVRegularization(layer, lambda_=mv_lambda, per_example=True) if variant == "mv" else layer

    def dropped():
        return [keras.layers.Dropout(dropout)] if variant == "dropout" else []

    return keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            regularized(keras.layers.Conv2D(32, (3, 3), activation="relu", kernel_regularizer=kernel_regularizer)),
            keras.layers.MaxPooling2D((2, 2)),
            regularized(keras.layers.Conv2D(64, (3, 3), activation="relu", kernel_regularizer=kernel_regularizer)),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            *dropped(),
            regularized(keras.layers.Dense(512, activation="relu", kernel_regularizer=kernel_regularizer)),
            *dropped(),
            regularized(keras.layers.Dense(10, activation="softmax", kernel_regularizer=kernel_regularizer)),
        ]
    )


def plot(histories: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for variant, history in histories.items():
        epochs = range(1, len(history["val_loss"]) + 1)
        axes[0].plot(epochs, history["val_accuracy"], marker="o", label=variant)
        axes[1].plot(epochs, history["val_loss"], marker="o", label=variant)
    for ax, name in zip(axes, ["validation accuracy", "validation loss"]):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    figure.suptitle("CIFAR-10 CNN: no regularization, MV, L2, Dropout")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.smoke:
        args.epochs, args.train_limit, args.batch_size = 1, args.train_limit or 256, min(args.batch_size, 64)
    strategy = distribute.get_strategy(args.strategy, cpu_replicas=args.cpu_replicas)
    data = lepton_keras.data.load_cifar10(
        args.data_source, data_dir=args.data_dir, train_limit=args.train_limit,
        validation_limit=128 if args.smoke else None, seed=args.seed,
    )  # fmt: skip
    print(data.describe())
    train = data.train_dataset(args.batch_size, strategy=strategy, seed=args.seed, one_hot=True)
    validation = data.validation_dataset(args.batch_size, one_hot=True)
    verbose = args.verbose if args.verbose is not None else ("auto" if sys.stdout.isatty() else 2)

    histories, results = {}, {}
    for variant in VARIANTS:
        keras.utils.set_random_seed(args.seed)  # the same starting weights for every variant
        with strategy.scope():
            model = build_model(variant, mv_lambda=args.mv_lambda, l2=args.l2, dropout=args.dropout)
            model.compile(keras.optimizers.Adam(args.learning_rate), "categorical_crossentropy", metrics=["accuracy"])
        print(f"--- {variant}")
        history = model.fit(train, validation_data=validation, epochs=args.epochs, verbose=verbose, shuffle=False)
        histories[variant] = {k: [float(v) for v in values] for k, values in history.history.items()}
        results[variant] = {"val_accuracy": histories[variant]["val_accuracy"][-1], "val_loss": histories[variant]["val_loss"][-1]}
    for variant, result in results.items():
        print(f"{variant:>8}: final {data.validation_name} accuracy {result['val_accuracy']:.4f}, loss {result['val_loss']:.4f}")
    summary = {"data": data.describe(), "epochs": args.epochs, "results": results, "histories": histories,
               "mv_lambda": args.mv_lambda, "l2": args.l2, "dropout": args.dropout}  # fmt: skip
    if distribute.is_chief(strategy):
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "summary.json"), "w") as file:
            json.dump(summary, file, indent=2)
        plot(histories, os.path.join(args.output_dir, "regularization.png"))
        print(f"wrote {args.output_dir}/summary.json and regularization.png")
    distribute.finish_job(strategy)  # workers leave together, the chief last: no stray errors at exit
    return summary


if __name__ == "__main__":
    main()
