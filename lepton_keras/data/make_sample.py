"""Rebuilds the bundled CIFAR-10 sample from the image-folder archive.

    python -m lepton_keras.data.make_sample --archive ../shared/datasets/cifar10-train-jpeg.tar.gz

Takes `--per-class` images of every class (a seeded random choice) and stores their
original JPEG bytes, unchanged, in `cifar10_sample.npz` next to this file: one byte
array, the offsets of each image in it, and the labels. No pickle is involved.
"""

from __future__ import annotations

import argparse
import os
import tarfile

import numpy as np

from lepton_keras.data.cifar10 import CLASS_NAMES, SAMPLE_PATH


def read_archive(archive: str) -> dict[str, list[tuple[str, bytes]]]:
    """Maps each class name to its (member name, JPEG bytes) pairs, sorted by name."""
    by_class: dict[str, list[tuple[str, bytes]]] = {name: [] for name in CLASS_NAMES}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) >= 2 and parts[-2] in by_class:
                by_class[parts[-2]].append((member.name, tar.extractfile(member).read()))
    return {name: sorted(files) for name, files in by_class.items()}


def make_sample(archive: str, per_class: int, seed: int, out: str) -> int:
    """Writes the sample to `out`; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    blobs, labels = [], []
    for label, (name, files) in enumerate(read_archive(archive).items()):
        if len(files) < per_class:
            raise ValueError(f"{archive}: class {name!r} has {len(files)} images, fewer than {per_class}")
        for index in sorted(rng.choice(len(files), per_class, replace=False)):
            blobs.append(files[index][1])
            labels.append(label)
    offsets = np.cumsum([0] + [len(blob) for blob in blobs]).astype(np.int64)
    np.savez(
        out,
        jpeg_bytes=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        offsets=offsets,
        labels=np.asarray(labels, dtype=np.int64),
    )
    return os.path.getsize(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, help="the cifar10-train-jpeg.tar.gz archive")
    parser.add_argument("--per-class", type=int, default=200, help="images per class (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choice (default 0)")
    parser.add_argument("--out", default=SAMPLE_PATH, help="output .npz (default: the bundled sample)")
    args = parser.parse_args()
    size = make_sample(args.archive, args.per_class, args.seed, args.out)
    print(f"wrote {args.out}: {10 * args.per_class} images, {size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
