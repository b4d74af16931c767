"""Worker program: LSUV-initialize a small CNN under the cluster's strategy and save the weights.

Runs three scenarios, each on a fresh model built in the strategy's scope:
- "same_batch": every worker passes the same batch and seed (the single-device result expected);
- "own_batch": every worker passes its own batch (`make_batch(worker_index)`): the averaged
  variances must still give every worker the same weights;
- "unseeded": seed=None with Python's `random` seeded differently on each worker, so the
  orthonormal starts differ: the broadcast from the first replica must still give the
  same weights (worker 0's).

Writes `<out>/worker_<i>_<scenario>.npz` (the weights, in `model.get_weights()` order) and
`<out>/worker_<i>.json` (the strategy and each scenario's LSUV report). `build_model`,
`make_batch` and `run_lsuv` are also what tests/initializers/test_lsuv.py runs in one process.
"""

import argparse
import dataclasses
import json
import os
import random

import numpy as np

MODEL_SEED, LSUV_SEED = 0, 3
TARGET_VARIANCE, TOLERANCE = 0.5, 0.01
UNSEEDED_BASE = 100  # worker i seeds Python's random with UNSEEDED_BASE + i


def build_model():
    """A CNN with convolutions and Dense layers; non-zero biases, so LSUV needs several rescalings."""
    import keras

    keras.utils.set_random_seed(MODEL_SEED)
    bias = keras.initializers.RandomNormal(stddev=0.3, seed=MODEL_SEED)
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", bias_initializer=bias, name="conv_1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(12, 3, padding="same", activation="tanh", bias_initializer=bias, name="conv_2"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="elu", bias_initializer=bias, name="dense_1"),
            keras.layers.Dense(4, bias_initializer=bias, name="dense_2"),
        ]
    )


def make_batch(worker_index=None):
    """32 inputs (float32): the same on every worker, or with an index, that worker's own."""
    seed = 1 if worker_index is None else 10 + worker_index
    return np.random.default_rng(seed).normal(size=(32, 10, 10, 3)).astype(np.float32)


def run_lsuv(model, batch=None, seed=LSUV_SEED, **kwargs):
    from lepton_keras.initializers import lsuv_initialize

    batch = make_batch() if batch is None else batch
    return lsuv_initialize(model, batch, target_variance=TARGET_VARIANCE, tolerance=TOLERANCE, seed=seed, **kwargs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from lepton_keras.distribute import get_strategy, task_info

    strategy = get_strategy()
    worker = task_info(strategy).worker_index
    record = {"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync}
    for scenario in ("same_batch", "own_batch", "unseeded"):
        with strategy.scope():
            model = build_model()
            if scenario == "same_batch":
                report = run_lsuv(model)
            elif scenario == "own_batch":
                report = run_lsuv(model, make_batch(worker))
            else:
                random.seed(UNSEEDED_BASE + worker)
                report = run_lsuv(model, seed=None)
        weights = [np.asarray(w) for w in model.get_weights()]
        np.savez(os.path.join(args.out, f"worker_{worker}_{scenario}.npz"), *weights)
        record[scenario] = [dataclasses.asdict(layer) for layer in report]
    with open(os.path.join(args.out, f"worker_{worker}.json"), "w") as file:
        json.dump(record, file)


if __name__ == "__main__":
    main()
