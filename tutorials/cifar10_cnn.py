"""Train the classic CIFAR-10 CNN on one device, N replicas or N workers with the same script.

    python tutorials/cifar10_cnn.py                              # automatic strategy
    python tutorials/cifar10_cnn.py --cpu-replicas 2             # MirroredStrategy on 2 CPU devices
    lepton-keras launch --workers 2 -- python tutorials/cifar10_cnn.py   # 2 local workers
    python tutorials/cifar10_cnn.py --data-dir /tmp/cifar10/train # the image-folder archive

The data comes from tensorflow-datasets when `cifar10` is on disk, from `--data-dir` when
given, else from the small sample shipped in lepton_keras. The chief writes `summary.json`
and `curves.png` to `--output-dir`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import keras
import tensorflow as tf

import lepton_keras
from lepton_keras import distribute

NUM_CLASSES = 10


def build_model() -> keras.Model:
    """The CNN of the docs: two conv/pool blocks, a 512-unit dense layer, softmax over 10 classes."""
    return keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )


class ImagesPerSecond(keras.callbacks.Callback):
    """Measures training throughput, leaving out each epoch's first step (tracing, warm-up)."""

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.images = 0
        self.seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch > 0:
            self.images += self.global_batch_size
            self.seconds += now - self._last
        self._last = now

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="auto", choices=["auto", "default", "mirrored", "multi_worker"])
    parser.add_argument("--cpu-replicas", type=int, default=None, help="mirror over N logical CPU devices")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size (all replicas)")
    parser.add_argument("--optimizer", default="adam", help="a Keras optimizer name (default adam)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--data-source", default="auto", choices=lepton_keras.data.SOURCES)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (one folder per class)")
    parser.add_argument("--train-limit", type=int, default=None, help="train on this many images only")
    parser.add_argument("--output-dir", default="runs/cifar10_cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=None, help="Keras verbosity (default: auto)")
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch of 4 steps on 256 images, 128 to validate (for tests)"
    )
    return parser.parse_args(argv)


def strategy_name(strategy) -> str:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "MirroredStrategy"
    return "default strategy"


def plot_curves(history: dict, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = range(1, len(history["loss"]) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for axes, key in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(epochs, history[key], marker="o", label="training")
        if f"val_{key}" in history:
            axes.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(key)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.smoke:
        args.epochs, args.train_limit, args.batch_size = 1, args.train_limit or 256, min(args.batch_size, 64)
    strategy = distribute.get_strategy(args.strategy, cpu_replicas=args.cpu_replicas)
    replicas = strategy.num_replicas_in_sync
    keras.utils.set_random_seed(args.seed)

    data = lepton_keras.data.load_cifar10(
        args.data_source,
        data_dir=args.data_dir,
        train_limit=args.train_limit,
        validation_limit=128 if args.smoke else None,
        seed=args.seed,
    )
    print(data.describe())
    print(f"strategy: {strategy_name(strategy)} with {replicas} replica(s), global batch {args.batch_size}")
    train = data.train_dataset(args.batch_size, strategy=strategy, seed=args.seed, one_hot=True)
    validation = data.validation_dataset(args.batch_size, one_hot=True)

    with strategy.scope():
        model = build_model()
        optimizer = keras.optimizers.get(args.optimizer)
        optimizer.learning_rate = args.learning_rate
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

    meter = ImagesPerSecond(args.batch_size)
    verbose = args.verbose if args.verbose is not None else ("auto" if sys.stdout.isatty() else 2)
    history = model.fit(
        train, validation_data=validation, epochs=args.epochs, callbacks=[meter], verbose=verbose, shuffle=False
    )
    loss, accuracy = history.history["val_loss"][-1], history.history["val_accuracy"][-1]
    print(
        f"final {data.validation_name} accuracy {accuracy:.4f} (loss {loss:.4f}); "
        f"{meter.images_per_second:.1f} images/s"
    )
    summary = {
        "data": data.describe(),
        "source": data.source,
        "strategy": strategy_name(strategy),
        "replicas": replicas,
        "workers": distribute.task_info(strategy).num_workers,
        "epochs": args.epochs,
        "global_batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        f"final_{data.validation_name}_accuracy": float(accuracy),
        f"final_{data.validation_name}_loss": float(loss),
        "images_per_second": meter.images_per_second,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
    }
    if distribute.is_chief(strategy):
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "summary.json"), "w") as file:
            json.dump(summary, file, indent=2)
        title = f"CIFAR-10 CNN, {strategy_name(strategy)}, {replicas} replica(s), global batch {args.batch_size}"
        plot_curves(history.history, title, os.path.join(args.output_dir, "curves.png"))
        print(f"wrote {args.output_dir}/summary.json and curves.png")
    return summary


if __name__ == "__main__":
    main()
