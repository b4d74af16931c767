"""The tutorial's CIFAR-10 CNN on a Ray cluster, through lepton_keras.integrations.ray.

    pip install "lepton_keras[ray]"
    python tutorials/ray/cifar10_ray.py --workers 2 -- --epochs 10 --data-dir /data/cifar10/train

Everything after `--` is tutorials/cifar10_cnn.py's own flags: the training function of each
Ray worker is that tutorial's `main`, unchanged, with one more callback, RayBackupAndRestore,
which reports each epoch's metrics to Ray (from every worker) with a checkpoint from the chief,
and resumes exactly from Ray's latest checkpoint when Ray restarts the workers
(`--max-failures`). Without `--address` it starts a local Ray cluster on 127.0.0.1 with
`--workers` x `--cpus-per-worker` CPUs; with `--address auto` (or `ray://...`) it joins yours,
and then `--storage-path` must be a folder every node shares (or cloud storage) and the
tutorial's folder must reach the workers (here: Ray's `working_dir`).
"""

import argparse
import os

# Before Ray is imported: a local cluster keeps 127.0.0.1, not the machine's network address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
TUTORIALS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(config: dict) -> None:
    """One Ray worker: the tutorial's main, with Ray's reporting and checkpoints added."""
    import cifar10_cnn  # from Ray's working_dir, a copy of tutorials/ on every node

    from lepton_keras.integrations.ray import RayBackupAndRestore

    cifar10_cnn.main(config["tutorial_args"], callbacks=[RayBackupAndRestore()])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: start a local one)")
    parser.add_argument("--storage-path", default="runs/ray", help="where Ray keeps checkpoints and results")
    parser.add_argument("--name", default=None, help="the run's name (default: a new one)")
    parser.add_argument("--resume", action="store_true", help="continue the run --name from its latest checkpoint")
    parser.add_argument("--max-failures", type=int, default=1, help="restarts after a worker fails")
    parser.add_argument("tutorial_args", nargs=argparse.REMAINDER, help="-- then tutorials/cifar10_cnn.py's flags")
    args = parser.parse_args(argv)
    if args.tutorial_args[:1] == ["--"]:
        args.tutorial_args = args.tutorial_args[1:]
    if "--output-dir" not in args.tutorial_args:  # else in Ray's working_dir copy, which Ray deletes
        args.tutorial_args += ["--output-dir", os.path.abspath("runs/cifar10_cnn")]
    return args


def main(argv=None):
    args = parse_args(argv)
    import ray

    from lepton_keras.integrations.ray import tensorflow_trainer

    runtime_env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}, "working_dir": TUTORIALS}
    if args.address is None:
        ray.init(address="local", num_cpus=args.workers * args.cpus_per_worker, _node_ip_address="127.0.0.1",
                 include_dashboard=False, runtime_env=runtime_env)  # fmt: skip
    else:
        ray.init(address=args.address, runtime_env=runtime_env)
    trainer = tensorflow_trainer(
        train, num_workers=args.workers, cpus_per_worker=args.cpus_per_worker,
        storage_path=os.path.abspath(args.storage_path), name=args.name, resume=args.resume,
        max_failures=args.max_failures, train_loop_config={"tutorial_args": args.tutorial_args},
    )  # fmt: skip
    result = trainer.fit()
    print(f"Ray run {trainer.run_config.name}: final metrics {result.metrics}")
    print(f"checkpoint (the chief's last backup): {result.checkpoint.path}")
    ray.shutdown()
    return result


if __name__ == "__main__":
    main()
