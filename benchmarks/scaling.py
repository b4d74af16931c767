"""Measures what data parallelism costs and gains for the tutorial CNN: images/s and scaling efficiency.

Runs the tutorial's CNN (Adam, per-replica batch 64 by default) for a fixed number of
steps per epoch, two epochs, and times the second one, in three set-ups, each in fresh
processes with a fixed number of CPU threads per replica:

    single                   1 process, 1 replica                      (the baseline)
    mirrored                 1 process, MirroredStrategy over 2 logical CPU devices
    workers                  2 local worker processes (MultiWorkerMirroredStrategy), 1 replica each,
                             Keras's single all-reduce after the backward pass
    workers_buckets          the same, gradients summed in buckets of --bucket-bytes in backward
                             order (GradientCommunication), overlapping the backward pass
    workers_buckets_float16  the same buckets, each summed in float16 (half the bytes)
    workers_every_4          2 local workers with periodic synchronisation (PeriodicSync(every=4)):
    workers_every_16         each trains on its own shard and the weights are averaged every 4,
    workers_every_64         16 or 64 steps (one all-reduce of the weights per sync)
    workers_ps               parameter-server training: a chief, 2 workers and 1 parameter server
                             (`lepton-keras launch --workers 2 --ps 1`); each step runs on one
                             worker, asynchronously, with its own per-replica batch
    independent              2 `single` processes started together, with no communication at all:
                             their summed images/s is the compute bound of 2 replicas on this
                             machine, the most any data-parallel scheme can reach here

Every replica sees the same per-replica batch (weak scaling), so N replicas do N times
the work per step; scaling efficiency = images/s / (N x single-process images/s). The
set-ups run in alternating rounds (`--rounds`, default 3); each speed-up divides by the
single process of its own round, and the table gives the medians. `--profile-dir` adds
one untimed round that writes a TensorFlow profile of every process
(`profile_summary.py` breaks it down per step).

    python benchmarks/scaling.py --data-dir /tmp/cifar10/train --steps 50 --profile-dir /tmp/profiles
    python benchmarks/scaling.py --setups single workers workers_buckets workers_buckets_float16 --bucket-bytes 1048576

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
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

SETUPS = {"single": 1, "mirrored": 2, "workers": 2, "workers_buckets": 2, "workers_buckets_float16": 2,
          "workers_every_4": 2, "workers_every_16": 2, "workers_every_64": 2, "workers_ps": 2, "independent": 2}
SYNC_EVERY_PREFIX = "workers_every_"


def sync_every(setup: str) -> int:
    """The H of a workers_every_H set-up; 1 (every step) for the others."""
    return int(setup[len(SYNC_EVERY_PREFIX):]) if setup.startswith(SYNC_EVERY_PREFIX) else 1
PROFILE_MARGIN = 5  # steps left out of the profile at each end of the timed epoch


def worker(args) -> None:
    """One process of a set-up: trains two epochs, prints the chief's JSON result line."""
    import tensorflow as tf

    if args.threads:
        replicas_here = 2 if args.setup == "mirrored" else 1
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads or args.threads * replicas_here)

    import keras

    from benchmarks._tutorial import build_model
    from lepton_keras import data as lepton_data
    from lepton_keras import distribute
    from lepton_keras.distribute.gradient_communication import (
        bucket_plan,
        payload_bytes,
    )
    from lepton_keras.optimizers import get as get_optimizer

    communication = _gradient_communication(args.setup, args.bucket_bytes)
    if args.setup == "single":
        strategy = distribute.get_strategy("default")
    elif args.setup == "mirrored":
        strategy = distribute.get_strategy("mirrored", cpu_replicas=2 if args.cpu else None)
    elif args.setup == "workers_ps":
        strategy = distribute.get_strategy("parameter_server")  # a worker or parameter server serves here
    else:
        strategy = distribute.get_strategy(
            "multi_worker", communication=args.communication, bytes_per_pack=args.bytes_per_pack,
            gradient_communication=communication, periodic_sync=distribute.PeriodicSync(every=sync_every(args.setup)),
        )
    asynchronous = args.setup == "workers_ps"
    replicas = strategy.num_replicas_in_sync
    global_batch = args.per_replica_batch * replicas
    images = args.steps * global_batch * (SETUPS[args.setup] if asynchronous else 1)
    repeat = args.repeat or asynchronous  # parameter-server workers read their copies without end
    source = "folder" if args.data_dir else "sample"
    data = lepton_data.load_cifar10(source, data_dir=args.data_dir, train_limit=images, validation_size=0)
    train = data.train_dataset(global_batch, strategy=strategy, one_hot=True, repeat=repeat)
    steps_per_epoch = data.steps_per_epoch(global_batch, strategy=strategy) if repeat else None
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_model()
        model.compile(optimizer=get_optimizer(args.optimizer, learning_rate=1e-3), loss="categorical_crossentropy")

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start
            self.steps = self.params.get("steps")

    class Profile(keras.callbacks.Callback):
        """Profiles the second epoch but its first and last PROFILE_MARGIN steps."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch == PROFILE_MARGIN:
                task = distribute.task_info(strategy)
                tf.profiler.experimental.start(os.path.join(args.profile_dir, f"{args.setup}-{task.worker_index}"))

        def on_train_batch_end(self, batch, logs=None):
            # Stopped while every worker still trains: a worker whose peers had exited
            # crashed in the profiler's stop.
            if self.epoch == 1 and batch == self.params["steps"] - PROFILE_MARGIN - 1:
                tf.profiler.experimental.stop()

    # A callback with batch hooks turns off Keras's asynchronous callback dispatch: the timed runs have none.
    timer = EpochTimer()
    model.fit(train, epochs=2, verbose=0, callbacks=[timer, *([Profile()] if args.profile_dir else [])],
              shuffle=False, steps_per_epoch=steps_per_epoch)
    steps = timer.steps
    sent = [payload_bytes([int(v.value.shape.num_elements())], [v.dtype], communication) for v in model.trainable_variables]
    result = {
        "setup": args.setup,
        "replicas": SETUPS[args.setup] if asynchronous else replicas,
        "global_batch": global_batch,
        "steps": steps,
        "seconds": timer.seconds,
        "images_per_second": steps * global_batch / timer.seconds,
        # What one replica contributes to the sums per step; a ring sends 2 (R - 1) / R of it. A
        # periodic sync sends the float32 weights once per H steps.
        "allreduce_bytes_per_step": sum(sent) / sync_every(args.setup) if replicas > 1 else 0,  # (none under ps)
        "collectives_per_step": len(bucket_plan(sent, communication.bucket_bytes)) / sync_every(args.setup)
        if replicas > 1 else 0,
    }
    if asynchronous:
        counts = distribute.observed_staleness(model)
        result["staleness_mean"] = sum(s * n for s, n in counts.items()) / max(sum(counts.values()), 1)
        result["staleness_max"] = max(counts, default=0)
    if distribute.is_chief(strategy):
        print("RESULT " + json.dumps(result), flush=True)


def _gradient_communication(setup: str, bucket_bytes: int):
    from lepton_keras.distribute import GradientCommunication

    if setup == "workers_buckets":
        return GradientCommunication(bucket_bytes=bucket_bytes)
    if setup == "workers_buckets_float16":
        return GradientCommunication(bucket_bytes=bucket_bytes, compression="float16")
    return GradientCommunication()


def run_setup(setup: str, args) -> dict:
    if setup == "independent":
        return run_independent(args)
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--setup", setup, *_shared_flags(args)]
    env = _environment(args)
    if setup.startswith("workers"):
        from lepton_keras.distribute.launcher import launch

        log = _Capture()
        ps = 1 if setup == "workers_ps" else 0
        status = launch(command, SETUPS[setup], ps=ps, env=env, out=log, timeout_seconds=args.timeout)
        output = log.text
    else:
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        status, output = finished.returncode, finished.stdout + finished.stderr
    if status != 0:
        raise RuntimeError(f"set-up {setup} failed with status {status}:\n{output[-4000:]}")
    line = next(line for line in output.splitlines() if "RESULT " in line)
    return json.loads(line.split("RESULT ", 1)[1])


def _environment(args) -> dict:
    from lepton_keras.distribute.launcher import CPU_ALLOCATOR

    # Every set-up with the allocator the launcher gives its workers, the single process too.
    env = {**CPU_ALLOCATOR, **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT}
    env.pop("TF_CONFIG", None)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def run_independent(args) -> dict:
    """Two `single` processes at once, no communication: their images/s added up (the compute bound)."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--setup", "single", *_shared_flags(args)]
    processes = [subprocess.Popen(command, env=_environment(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(SETUPS["independent"])]  # fmt: skip
    results = []
    for process in processes:
        output, _ = process.communicate(timeout=args.timeout)
        if process.returncode != 0:
            raise RuntimeError(f"set-up independent failed with status {process.returncode}:\n{output[-4000:]}")
        line = next(line for line in output.splitlines() if "RESULT " in line)
        results.append(json.loads(line.split("RESULT ", 1)[1]))
    return {**results[0], "setup": "independent", "replicas": len(results),
            "images_per_second": sum(r["images_per_second"] for r in results),
            "seconds": max(r["seconds"] for r in results)}  # fmt: skip


class _Capture:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def _shared_flags(args) -> list[str]:
    flags = ["--steps", str(args.steps), "--per-replica-batch", str(args.per_replica_batch),
             "--threads", str(args.threads), "--inter-op-threads", str(args.inter_op_threads),
             "--communication", args.communication,
             "--bytes-per-pack", str(args.bytes_per_pack), "--bucket-bytes", str(args.bucket_bytes),
             "--optimizer", args.optimizer,
             "--repeat" if args.repeat else "--no-repeat"]
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
    parser.add_argument("--inter-op-threads", type=int, default=0,
                        help="threads that run a process's ready ops (default 0: --threads x replicas in the process)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (default: the bundled sample)")
    parser.add_argument("--communication", default="auto", choices=["auto", "ring", "nccl"])
    parser.add_argument("--bytes-per-pack", type=int, default=0, help="TensorFlow's own packing (forward order)")
    parser.add_argument("--bucket-bytes", type=int, default=1 << 20,
                        help="bucket size of the workers_buckets* set-ups (default 1 MiB)")
    parser.add_argument("--optimizer", default="adam",
                        help="a lepton_keras.optimizers registry name (default adam: Keras's own)")
    parser.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=True,
                        help="mirror over logical CPU devices (--no-cpu: over the visible GPUs)")
    parser.add_argument("--repeat", action=argparse.BooleanOptionalAction, default=True,
                        help="one repeated dataset with steps_per_epoch (default), so that Keras keeps one "
                             "iterator; --no-repeat: a new iterator every epoch, as by default in Keras")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every set-up; medians are reported")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--profile-dir", default=None,
                        help="after the timed rounds, run every set-up once more and write a TensorFlow profile of "
                             f"each process's second epoch (but its first and last {PROFILE_MARGIN} steps) "
                             "here (see profile_summary.py)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setup", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile_dir and args.steps <= 2 * PROFILE_MARGIN:
        parser.error(f"--profile-dir needs --steps above {2 * PROFILE_MARGIN}")
    if args.worker:
        worker(args)
        return

    # Rounds alternate the set-ups, and each speed-up divides by the single process of its own
    # round, so that a load that changes during the run (a shared machine) affects both alike.
    untimed = argparse.Namespace(**{**vars(args), "profile_dir": None})
    rounds = [{setup: run_setup(setup, untimed) for setup in args.setups} for _ in range(args.rounds)]
    print_table(rounds, args)
    if args.profile_dir:  # one more round, profiled and not timed: the profiler slows the epoch
        for setup in args.setups:
            try:
                run_setup(setup, args)
            except RuntimeError as error:  # the timed table above stands; say which profile is missing
                print(f"no profile of {setup}: {str(error).splitlines()[0]}", flush=True)


def print_table(rounds: list[dict], args) -> None:
    """The medians over rounds of every set-up's images/s and speed-up, as a Markdown table."""
    print(f"tutorial CNN, {args.optimizer}, per-replica batch {args.per_replica_batch}, {args.steps} steps per epoch, "
          f"{args.threads or 'default'} thread(s) per replica, inter-op threads "
          f"{args.inter_op_threads or 'as many'}, {os.cpu_count()} CPUs, communication "
          f"{args.communication}, bytes_per_pack {args.bytes_per_pack}, bucket_bytes {args.bucket_bytes}, "
          f"{'repeated dataset' if args.repeat else 'new iterator every epoch'}, median of {args.rounds} round(s)\n")
    print("| set-up | replicas | images/s | speed-up | scaling efficiency | of independent | speed-up per round "
          "| all-reduce bytes/step | collectives/step |\n|---|---|---|---|---|---|---|---|---|")
    for setup in args.setups:
        replicas = rounds[0][setup]["replicas"]
        speedups = [r[setup]["images_per_second"] / r["single"]["images_per_second"] for r in rounds if "single" in r]
        speedup = statistics.median(speedups) if speedups else float("nan")
        bounds = [r[setup]["images_per_second"] / r["independent"]["images_per_second"] for r in rounds
                  if "independent" in r]  # fmt: skip
        of_bound = f"{statistics.median(bounds):.0%}" if bounds and replicas > 1 else ""
        images = statistics.median(r[setup]["images_per_second"] for r in rounds)
        print(f"| {setup} | {replicas} | {images:.0f} | {speedup:.2f}x | {speedup / replicas:.0%} | {of_bound} | "
              f"{', '.join(f'{value:.2f}' for value in speedups)} | "
              f"{rounds[0][setup]['allreduce_bytes_per_step']:,.0f} | {rounds[0][setup]['collectives_per_step']:g} |",
              flush=True)
    if "workers_ps" in args.setups:  # how far behind the parameter servers a step's read was
        means = ", ".join(f"{r['workers_ps']['staleness_mean']:.2f}" for r in rounds)
        print(f"\nworkers_ps staleness (other workers' updates between a step's read and its write): mean per round "
              f"{means}; max {max(r['workers_ps']['staleness_max'] for r in rounds)}")


if __name__ == "__main__":
    main()
