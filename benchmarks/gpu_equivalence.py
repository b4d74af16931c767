"""On a GPU machine: the tutorial CNN trained 5 steps with and without GradientCommunication on the GPUs.

Trains the same weights from the same batches under MirroredStrategy over the visible GPUs
(NCCL all-reduce when there are several; one GPU otherwise) with Keras's single all-reduce,
with buckets in backward order, and with float16 and bfloat16 buckets, and prints the largest
difference of each from Keras's path (relative to max(1, |w|), as the test suite measures).
Exits 1 when buckets differ by more than 1e-5 or compression by more than 1e-2.

    python benchmarks/gpu_equivalence.py --data-dir /tmp/cifar10/train
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

VARIANTS = {
    "buckets": ({"bucket_bytes": 300_000}, 1e-5),
    "buckets_float16": ({"bucket_bytes": 300_000, "compression": "float16"}, 1e-2),
    "buckets_bfloat16": ({"bucket_bytes": 300_000, "compression": "bfloat16"}, 1e-2),
}


def train(communication: dict | None, data_dir: str | None, steps: int, global_batch: int) -> list[np.ndarray]:
    import keras
    import tensorflow as tf

    from benchmarks._tutorial import build_model
    from lepton_keras import data as lepton_data
    from lepton_keras.distribute import GradientCommunication, set_gradient_communication

    gpus = [f"/gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]
    strategy = tf.distribute.MirroredStrategy(devices=gpus)
    if communication:
        set_gradient_communication(strategy, GradientCommunication(**communication))
    source = "folder" if data_dir else "sample"
    cifar = lepton_data.load_cifar10(source, data_dir=data_dir, train_limit=steps * global_batch, validation_size=0)
    images = cifar.train_images[: steps * global_batch].astype(np.float32) / 255.0
    labels = np.eye(10, dtype=np.float32)[cifar.train_labels[: steps * global_batch]]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(global_batch)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    return [np.asarray(w, np.float64) for w in model.get_weights()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (default: the bundled sample)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--global-batch", type=int, default=64)
    args = parser.parse_args()

    import tensorflow as tf

    from tests.support.numerics import relative_error

    if not tf.config.list_physical_devices("GPU"):
        print("no GPU visible to TensorFlow")
        return 1
    keras_path = train(None, args.data_dir, args.steps, args.global_batch)
    failed = False
    for name, (communication, tolerance) in VARIANTS.items():
        error = relative_error(train(communication, args.data_dir, args.steps, args.global_batch), keras_path)
        failed |= error > tolerance
        print(f"{name}: largest difference from Keras's all-reduce {error:.3g} (allowed {tolerance:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
