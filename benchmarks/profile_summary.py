"""Where a train step's time goes, from the TensorFlow profiles `scaling.py --profile-dir` writes.

Reads every `*.xplane.pb` under a folder (one per process: "single-0", "workers-0",
"workers-1", ...) and prints, per process and per train step (averages over the profiled
epoch):

    step ms         the train step's wall time (Keras's `*_step_on_iterator` calls)
    between steps   the time from the end of one step to the start of the next (Keras's
                    Python loop, callbacks)
    compute ms      time TensorFlow's compute threads were running kernels (the union of
                    their events; with one thread per replica, the time one core computed)
    conv+matmul ms  of it, in convolutions and matrix products (forward and backward)
    all-reduce ms   from start to end of the cross-replica reductions (CollectiveReduceV2 and
                    kin: the transfer and the wait for the other workers), summed over them
    hidden ms       of the time some reduction is in flight, the part during which a compute
                    thread runs a kernel (communication overlapped with the backward pass)
    exposed ms      the rest: reductions in flight while no kernel computes
    not computing   step ms - compute ms / compute threads in use: the part of the step a
                    replica's core spent waiting (communication, the other worker, the OS)

    python benchmarks/profile_summary.py /tmp/profiles

The profile is TensorFlow's own (`tf.profiler.experimental`); TensorBoard's profile plugin
shows the same files as a timeline.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

COLLECTIVE_OPS = ("CollectiveReduceV2", "CollectiveGatherV2", "CollectiveBcastSendV2", "CollectiveBcastRecvV2",
                  "CollectiveAllToAllV2", "NcclAllReduce")
STEP_EVENTS = ("one_step_on_iterator", "multi_step_on_iterator")


def _union(intervals) -> list[tuple[int, int]]:
    """The disjoint, sorted (start, end) intervals that cover the same time as `intervals`."""
    merged: list[list[int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def _union_length(intervals) -> int:
    """Total length covered by (start, end) intervals."""
    return sum(end - start for start, end in _union(intervals))


def _overlap_length(first, second) -> int:
    """Length of the time covered by both unions of intervals (each disjoint and sorted)."""
    total, i, j = 0, 0, 0
    while i < len(first) and j < len(second):
        start, end = max(first[i][0], second[j][0]), min(first[i][1], second[j][1])
        total += max(0, end - start)
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return total


def summarize(path: str) -> dict:
    """The per-step averages of one process's profile (times in milliseconds)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as file:
        space.ParseFromString(file.read())
    host = next(plane for plane in space.planes if plane.name == "/host:CPU")
    step_durations, gaps, compute_busy, compute_threads, conv, collective = [], [], 0, 0, 0, 0
    kernel_intervals, collective_intervals = [], []
    for line in host.lines:
        names = [(host.event_metadata[event.metadata_id].name, event) for event in line.events]
        if line.name.startswith("python"):
            step_events = sorted((event.offset_ps, event.duration_ps) for name, event in names if name in STEP_EVENTS)
            step_durations += [duration for _, duration in step_events]
            gaps += [later[0] - (offset + duration) for (offset, duration), later in zip(step_events, step_events[1:])]
        if line.name.startswith("tf_Compute"):
            busy = _union_length((event.offset_ps, event.offset_ps + event.duration_ps) for _, event in names
                                 if event.duration_ps > 0)
            compute_busy += busy
            compute_threads += busy > 0
        for name, event in names:
            op_type = name.rsplit(":", 1)[-1] if ":" in name else ""
            interval = (line.timestamp_ns * 1000 + event.offset_ps,
                        line.timestamp_ns * 1000 + event.offset_ps + event.duration_ps)
            if op_type in COLLECTIVE_OPS:
                collective += event.duration_ps
                collective_intervals.append(interval)
            elif line.name.startswith("tf_Compute") and event.duration_ps > 0:
                kernel_intervals.append(interval)
                if "Conv2D" in op_type or "MatMul" in op_type:
                    conv += event.duration_ps
    steps = len(step_durations)
    if not steps:
        raise ValueError(f"{path}: no train step events ({' or '.join(STEP_EVENTS)}) in the profile")
    per_step = 1e9 * steps  # picoseconds to milliseconds per step
    step = sum(step_durations) / per_step
    compute = compute_busy / per_step
    in_flight = _union(collective_intervals)
    hidden = _overlap_length(in_flight, _union(kernel_intervals))
    return {
        "steps": steps,
        "step_ms": step,
        "between_steps_ms": sum(gaps) / max(len(gaps), 1) / 1e9,
        "compute_ms": compute,
        "compute_threads": compute_threads,
        "conv_matmul_ms": conv / per_step,
        "all_reduce_ms": collective / per_step,
        "hidden_ms": hidden / per_step,
        "exposed_ms": (_union_length(in_flight) - hidden) / per_step,
        "not_computing_ms": step - compute / max(compute_threads, 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile_dir")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(os.path.join(args.profile_dir, "*", "plugins", "profile", "*", "*.xplane.pb")))
    if not paths:
        sys.exit(f"no *.xplane.pb under {args.profile_dir}/<process>/plugins/profile/")
    print("| process | steps | step ms | between steps ms | compute ms | conv+matmul ms | all-reduce ms "
          "| hidden ms | exposed ms | not computing ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        process = os.path.relpath(path, args.profile_dir).split(os.sep)[0]
        row = summarize(path)
        print(f"| {process} | {row['steps']} | {row['step_ms']:.1f} | {row['between_steps_ms']:.1f} | "
              f"{row['compute_ms']:.1f} | "
              f"{row['conv_matmul_ms']:.1f} | {row['all_reduce_ms']:.1f} | {row['hidden_ms']:.1f} | "
              f"{row['exposed_ms']:.1f} | {row['not_computing_ms']:.1f} |")


if __name__ == "__main__":
    main()
