"""Worker program: load CIFAR-10 (this worker's shard), train one epoch, record what was read.

Then two epochs more from a repeated dataset with `steps_per_epoch`, counting their steps, and
the error of a global batch larger than the two shards.
"""

import argparse
import hashlib
import json
import os

import keras

from lepton_keras.data import load_cifar10
from lepton_keras.distribute import get_strategy, task_info

GLOBAL_BATCH = 32


class CountImages(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-limit", type=int, default=None)
    args = parser.parse_args()
    strategy = get_strategy()
    data = load_cifar10("folder" if args.data_dir else "sample", data_dir=args.data_dir, train_limit=args.train_limit)
    with strategy.scope():
        model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    counter = CountImages()
    model.fit(data.train_dataset(GLOBAL_BATCH, strategy=strategy), epochs=1, verbose=0, callbacks=[counter])
    steps_per_epoch = data.steps_per_epoch(GLOBAL_BATCH, strategy=strategy)
    repeated = CountImages()
    model.fit(data.train_dataset(GLOBAL_BATCH, strategy=strategy, repeat=True), epochs=2, verbose=0,
              steps_per_epoch=steps_per_epoch, callbacks=[repeated])
    try:
        data.train_dataset(1802, strategy=strategy)
        oversized_batch_error = None
    except ValueError as error:
        oversized_batch_error = str(error)
    record = {
        "shard": list(data.shard),
        "describe": data.describe(),
        "train_hashes": [hashlib.sha1(image.tobytes()).hexdigest() for image in data.train_images],
        "validation_count": len(data.validation_labels),
        "steps": counter.steps,
        "steps_per_epoch": steps_per_epoch,
        "repeated_steps": repeated.steps,
        "oversized_batch_error": oversized_batch_error,
    }
    with open(os.path.join(args.out, f"worker_{task_info(strategy).worker_index}.json"), "w") as file:
        json.dump(record, file)


if __name__ == "__main__":
    main()
