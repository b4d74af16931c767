"""Muon's split orthogonalisation against every replica orthogonalising every matrix: time per step.

    python benchmarks/muon_split.py                                 # 2 local workers, 1 CPU thread each
    python benchmarks/muon_split.py --width 1024 --layers 4 --rounds 7

Runs `--workers` local worker processes (`lepton-keras launch`: MultiWorkerMirroredStrategy, one
replica each, `--threads` CPU threads each). Each trains the same MLP, `--layers` hidden
`--width` x `--width` matrices and a 10-unit head (AdamW's), twice: with
Muon(split_orthogonalization=False), where every worker runs Newton-Schulz on every matrix, and
with True, where each runs it on its share and the results are exchanged in one all-reduce. The
two alternate in `--rounds` rounds of `--steps` steps (one more round first, untimed: tracing);
the chief prints the median seconds per step of each, the median of the per-round ratios, and
the largest difference between the two models' weights after the same steps (rounding only).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args) -> None:
    sys.path.insert(0, REPO_ROOT)
    from lepton_keras import distribute

    distribute.configure_cpu_threads(args.threads)
    import keras
    import numpy as np
    import tensorflow as tf

    from lepton_keras.optimizers import Muon

    strategy = distribute.get_strategy("multi_worker")
    batch = args.per_replica_batch * strategy.num_replicas_in_sync
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(batch * args.steps, args.width)).astype("float32")
    targets = rng.normal(size=(batch * args.steps, 10)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(batch).repeat()
    models = {}
    for split in (False, True):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((args.width,)),
                                      *[keras.layers.Dense(args.width, activation="tanh") for _ in range(args.layers)],
                                      keras.layers.Dense(10, name="head")])  # fmt: skip
            model.compile(optimizer=Muon(0.02, exclude_layers=["head"], split_orthogonalization=split), loss="mse")
        models[split] = model
    seconds = {False: [], True: []}
    for round_index in range(args.rounds + 1):
        for split in (False, True) if round_index % 2 == 0 else (True, False):
            start = time.perf_counter()
            models[split].fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0)
            if round_index > 0:
                seconds[split].append((time.perf_counter() - start) / args.steps)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(models[False].get_weights(),
                                                                  models[True].get_weights()))  # fmt: skip
    result = {
        "workers": strategy.num_replicas_in_sync,
        "matrices": f"{args.layers} x ({args.width}, {args.width})",
        "unsplit_seconds_per_step": statistics.median(seconds[False]),
        "split_seconds_per_step": statistics.median(seconds[True]),
        "median_ratio_unsplit_over_split": statistics.median(u / s for u, s in zip(seconds[False], seconds[True])),
        "max_weight_difference": difference,
    }
    if distribute.is_chief(strategy):
        print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per worker")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--per-replica-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, REPO_ROOT)
    from lepton_keras.distribute.launcher import launch

    flags = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items() if name != "worker"]
    log = io.StringIO()
    status = launch([sys.executable, os.path.abspath(__file__), "--worker", *flags], args.workers,
                    env={**os.environ, "PYTHONPATH": REPO_ROOT}, out=log, timeout_seconds=args.timeout)  # fmt: skip
    if status != 0:
        raise SystemExit(f"the workers failed with status {status}:\n{log.getvalue()[-4000:]}")
    line = next(line for line in log.getvalue().splitlines() if "RESULT " in line)
    print(json.dumps(json.loads(line.split("RESULT ", 1)[1]), indent=2))


if __name__ == "__main__":
    main()
