"""Times every registered optimizer against Keras's Adam, in the same run.

Two measurements:

1. Train step: the tutorial CNN (batch 64, 32x32x3 inputs), one compiled model per
   optimizer, timed in rounds that alternate between the optimizers and Keras's Adam;
   the ratio is the median over rounds of (optimizer step time / Adam step time in the
   same round). Wrappers are timed around Adam ("lookahead_adam"), so their ratio is
   the overhead the wrapper adds.
2. Update only: `optimizer.apply` on about 33.5 million float32 parameters (8 variables)
   with fixed gradients, reporting the time of one update, its ratio to Keras's Adam with
   the apply XLA-compiled (tf.function(jit_compile=True), the reference; each timing is
   paired with one of the reference and the ratio is the median of the pairs), and the bytes the
   update must move (parameters, gradients and per-element slots, read and written; slots
   only read, such as x0, are counted as written too) per second, next to the machine's
   memory-copy bandwidth measured in the same run. Rows: Keras's Adam with the apply in a
   plain tf.function and XLA-compiled, each lepton_keras optimizer with `fused_updates`
   on and off (apply in a plain tf.function), and "fused_adam" (FusedUpdates(Adam)).

    python benchmarks/optimizer_step.py                 # everything registered
    python benchmarks/optimizer_step.py --names radam lookahead_adam --rounds 3
    python benchmarks/optimizer_step.py --skip-train-step --update-repeats 5
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._tutorial import build_model  # noqa: E402


def default_names() -> list[str]:
    from lepton_keras.optimizers import list_optimizers

    names = [name for name, _ in list_optimizers() if name != "adam"]
    wrappers = {name for name, _ in list_optimizers(kind="wrapper")}
    return [f"{name}_adam" if name in wrappers else name for name in names]


def train_step_ratios(names, *, rounds, steps, batch_size):
    import keras
    import tensorflow as tf

    from lepton_keras.optimizers import get

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=(batch_size, 32, 32, 3)).astype(np.float32))
    labels = tf.constant(np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch_size)])
    models = {}
    for name in ["adam", *names]:
        keras.utils.set_random_seed(0)
        model = build_model()
        model.compile(optimizer=get(name, learning_rate=1e-4), loss="categorical_crossentropy")
        model.train_on_batch(images, labels)  # trace and build outside the timing
        models[name] = model

    def time_steps(model):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(images, labels)
        return (time.perf_counter() - start) / steps

    ratios = {name: [] for name in names}
    adam_times = []
    for _ in range(rounds):
        for name in names:
            adam = time_steps(models["adam"])
            ours = time_steps(models[name])
            adam_times.append(adam)
            ratios[name].append(ours / adam)
    return statistics.median(adam_times), {name: statistics.median(values) for name, values in ratios.items()}


def memory_copy_bandwidth(floats: int, repeats: int = 5) -> float:
    """Bytes per second of a large NumPy copy (read + write)."""
    source = np.ones(floats, np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = min(_timed(lambda: np.copyto(target, source)) for _ in range(repeats))
    return 2 * source.nbytes / best


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def update_only_cases(names=None):
    """(label, registry name, options, jit_compile of the whole apply) of every update-only row."""
    from lepton_keras.optimizers import list_optimizers

    lepton = [name for kind in ("elementwise", "layerwise", "global") for name, _ in list_optimizers(kind=kind)]
    if names:
        lepton = [name for name in lepton if name in names]
    cases = [("keras adam", "adam", {}, False), ("keras adam, XLA apply", "adam", {}, True)]
    for name in lepton:
        cases += [(f"{name} fused", name, {"fused_updates": True}, False),
                  (f"{name} unfused", name, {"fused_updates": False}, False)]
    return [*cases, ("fused_adam", "fused_adam", {}, False)]


def update_only(cases, *, parameters, repeats):
    """(element count, rows of (label, median seconds, ratio, slots, bytes moved per second)).

    Each timing of a case is paired with one of Keras's Adam with the apply XLA-compiled (kept
    built throughout), and the ratio is the median of the paired ratios, so that a load that
    changes during the run (a shared machine) affects both sides of each ratio alike.
    """
    import keras
    import tensorflow as tf

    from lepton_keras.optimizers import get

    pieces = 8
    shape = (parameters // pieces // 1024, 1024)
    element_count = pieces * shape[0] * shape[1]
    rng = np.random.default_rng(1)
    gradients = [tf.constant(rng.normal(scale=1e-3, size=shape).astype(np.float32)) for _ in range(pieces)]

    def compiled_step(name, options, jit_compile):
        # Non-zero weights, so trust ratios and distances (LARS, Prodigy) take their usual path.
        variables = [keras.Variable(np.full(shape, 0.01, np.float32)) for _ in range(pieces)]
        optimizer = get(name, learning_rate=1e-4, **options)
        optimizer.build(variables)
        slots = sum(1 for v in optimizer.variables if tuple(v.shape) == shape) // pieces
        step = tf.function(functools.partial(optimizer.apply, gradients, variables), autograph=False,
                           jit_compile=jit_compile)
        step()
        step()
        return step, slots

    reference, _ = compiled_step("adam", {}, True)
    rows = []
    for label, name, options, jit_compile in cases:
        step, slots = compiled_step(name, options, jit_compile)
        times, ratios = [], []
        for _ in range(repeats):
            reference_seconds = _timed(reference)
            times.append(_timed(step))
            ratios.append(times[-1] / reference_seconds)
        seconds = statistics.median(times)
        moved = element_count * 4 * (3 + 2 * slots)  # read g, p, slots; write p, slots
        rows.append((label, seconds, statistics.median(ratios), slots, moved / seconds))
        del step
    return element_count, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="*", default=None, help="registry names (default: all registered)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="train steps per timing")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--parameters", type=int, default=32 * 2**20, help="parameters in the update-only run")
    parser.add_argument("--update-repeats", type=int, default=5)
    parser.add_argument("--skip-update-only", action="store_true")
    parser.add_argument("--skip-train-step", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    if not args.skip_train_step:
        names = args.names or default_names()
        print(f"{os.cpu_count()} CPUs; tutorial CNN, batch {args.batch_size}, {args.rounds} rounds of "
              f"{args.steps} steps")
        adam_seconds, ratios = train_step_ratios(names, rounds=args.rounds, steps=args.steps,
                                                 batch_size=args.batch_size)
        print(f"\nKeras Adam train step: {adam_seconds * 1e3:.1f} ms (median)\n")
        print("| optimizer | step time / Keras Adam |\n|---|---|")
        for name in names:
            print(f"| {name} | {ratios[name]:.2f} |")

    if args.skip_update_only:
        return
    bandwidth = memory_copy_bandwidth(args.parameters)
    count, rows = update_only(update_only_cases(args.names), parameters=args.parameters,
                              repeats=args.update_repeats)
    print(f"\nUpdate only, {os.cpu_count()} CPUs, {count / 1e6:.1f} M float32 parameters; "
          f"memory copy {bandwidth / 1e9:.1f} GB/s\n")
    print("| optimizer | update ms | / Keras Adam XLA apply | slots | GB/s moved | of memory copy |\n"
          "|---|---|---|---|---|---|")
    for label, seconds, ratio, slots, rate in rows:
        print(f"| {label} | {seconds * 1e3:.1f} | {ratio:.2f} | {slots} | {rate / 1e9:.1f} | "
              f"{rate / bandwidth:.0%} |")


if __name__ == "__main__":
    main()
