"""Measures what data parallelism costs and gains for the tutorial CNN: images/s and scaling efficiency.

Runs the tutorial's CNN (Adam, per-replica batch 64 by default) for a fixed number of
steps per epoch, two epochs, and times the second one, in three set-ups, each in fresh
processes with a fixed number of CPU threads per replica:

    single     1 process, 1 replica                      (the baseline)
    mirrored   1 process, MirroredStrategy over 2 logical CPU devices
    workers    2 local worker processes (MultiWorkerMirroredStrategy), 1 replica each

Every replica sees the same per-replica batch (weak scaling), so N replicas do N times
the work per step; scaling efficiency = images/s / (N x single-process images/s).

    python benchmarks/scaling.py --data-dir /tmp/cifar10/train --steps 100
    python benchmarks/scaling.py --communication ring --bytes-per-pack 262144

On a GPU machine the same script measures GPUs: pass `--threads 0` (TensorFlow's default
thread pools) and `--setups single workers`; "mirrored" then mirrors over the visible GPUs
when run without `--cpu`. On a real cluster, skip this driver: start
`python benchmarks/scaling.py --worker --setup workers ...` on every node with the
node's TF_CONFIG (Kubernetes operators set it; under Slurm build it from
SLURM_JOB_NODELIST, or use SlurmClusterResolver in your own script) and read the chief's
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

SETUPS = {"single": 1, "mirrored": 2, "workers": 2}


def worker(args) -> None:
    """One process of a set-up: trains two epochs, prints the chief's JSON result line."""
    import tensorflow as tf

    if args.threads:
        replicas_here = 2 if args.setup == "mirrored" else 1
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads * replicas_here)

    import keras

    from benchmarks._tutorial import build_model
    from lepton_keras import data as lepton_data
    from lepton_keras import distribute

    if args.setup == "single":
        strategy = distribute.get_strategy("default")
    elif args.setup == "mirrored":
        strategy = distribute.get_strategy("mirrored", cpu_replicas=2 if args.cpu else None)
    else:
        strategy = distribute.get_strategy(
            "multi_worker", communication=args.communication, bytes_per_pack=args.bytes_per_pack
        )
    replicas = strategy.num_replicas_in_sync
    global_batch = args.per_replica_batch * replicas
    images = args.steps * global_batch
    source = "folder" if args.data_dir else "sample"
    data = lepton_data.load_cifar10(source, data_dir=args.data_dir, train_limit=images, validation_size=0)
    train = data.train_dataset(global_batch, strategy=strategy, one_hot=True)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if args.profile_dir and epoch == 1:
                task = distribute.task_info(strategy)
                tf.profiler.experimental.start(os.path.join(args.profile_dir, f"{args.setup}-{task.worker_index}"))
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start
            self.steps = self.params.get("steps")
            if args.profile_dir and epoch == 1:
                tf.profiler.experimental.stop()

    timer = EpochTimer()
    model.fit(train, epochs=2, verbose=0, callbacks=[timer], shuffle=False)
    steps = timer.steps
    result = {
        "setup": args.setup,
        "replicas": replicas,
        "global_batch": global_batch,
        "steps": steps,
        "seconds": timer.seconds,
        "images_per_second": steps * global_batch / timer.seconds,
    }
    if distribute.is_chief(strategy):
        print("RESULT " + json.dumps(result), flush=True)


def run_setup(setup: str, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--setup", setup, *_shared_flags(args)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    if setup == "workers":
        from lepton_keras.distribute.launcher import launch

        log = _Capture()
        status = launch(command, SETUPS[setup], env=env, out=log, timeout_seconds=args.timeout)
        output = log.text
    else:
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        status, output = finished.returncode, finished.stdout + finished.stderr
    if status != 0:
        raise RuntimeError(f"set-up {setup} failed with status {status}:\n{output[-4000:]}")
    line = next(line for line in output.splitlines() if "RESULT " in line)
    return json.loads(line.split("RESULT ", 1)[1])


class _Capture:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def _shared_flags(args) -> list[str]:
    flags = ["--steps", str(args.steps), "--per-replica-batch", str(args.per_replica_batch),
             "--threads", str(args.threads), "--communication", args.communication,
             "--bytes-per-pack", str(args.bytes_per_pack)]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    if args.profile_dir:
        flags += ["--profile-dir", os.path.abspath(args.profile_dir)]
    if args.cpu:
        flags.append("--cpu")
    return flags


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch (default 50)")
    parser.add_argument("--per-replica-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per replica (0: TensorFlow's default)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (default: the bundled sample)")
    parser.add_argument("--communication", default="auto", choices=["auto", "ring", "nccl"])
    parser.add_argument("--bytes-per-pack", type=int, default=0)
    parser.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=True,
                        help="mirror over logical CPU devices (--no-cpu: over the visible GPUs)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--profile-dir", default=None,
                        help="write a TensorFlow profile of each process's timed epoch here (see profile_summary.py)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setup", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    results = {setup: run_setup(setup, args) for setup in args.setups}
    baseline = results.get("single")
    print(f"tutorial CNN, Adam, per-replica batch {args.per_replica_batch}, {args.steps} steps per epoch, "
          f"{args.threads or 'default'} thread(s) per replica, {os.cpu_count()} CPUs, communication "
          f"{args.communication}, bytes_per_pack {args.bytes_per_pack}\n")
    print("| set-up | replicas | images/s | speed-up | scaling efficiency |\n|---|---|---|---|---|")
    for setup, result in results.items():
        speedup = result["images_per_second"] / baseline["images_per_second"] if baseline else float("nan")
        print(f"| {setup} | {result['replicas']} | {result['images_per_second']:.0f} | {speedup:.2f}x | "
              f"{speedup / result['replicas']:.0%} |")


if __name__ == "__main__":
    main()
