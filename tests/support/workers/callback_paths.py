"""Worker program: Keras's own file-writing callbacks with the chief/worker path helpers.

Every worker runs ModelCheckpoint, BackupAndRestore and TensorBoard, as Keras requires
under MultiWorkerMirroredStrategy; the paths keep any two workers off the same file.
"""

import argparse
import json
import os

import keras
import numpy as np
import tensorflow as tf

from lepton_keras.distribute import chief_path, get_strategy, task_info, worker_path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    strategy = get_strategy()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.normal(size=(64, 1)).astype(np.float32)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
    callbacks = [
        keras.callbacks.BackupAndRestore(worker_path(os.path.join(args.out, "backup")), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(chief_path(os.path.join(args.out, "ckpt", "model.keras"))),
        keras.callbacks.TensorBoard(chief_path(os.path.join(args.out, "logs"))),
    ]
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=3, verbose=0, callbacks=callbacks)
    with open(os.path.join(args.out, f"weights_{task_info(strategy).worker_index}.json"), "w") as file:
        json.dump([w.tolist() for w in model.get_weights()], file)


if __name__ == "__main__":
    main()
