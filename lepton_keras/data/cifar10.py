"""CIFAR-10 as tf.data pipelines, from tensorflow-datasets, an image folder, or a bundled sample.

Sources:
- "tfds": tensorflow-datasets `cifar10` (honours TFDS_DATA_DIR or `data_dir`); its test
  split is the validation set.
- "folder": a directory with one folder per class (`airplane/0001.jpg`, ...), as in the
  `cifar10-train-jpeg.tar.gz` archive, or its parent holding `train/`. The validation set
  is carved out of it (a seeded random choice, the same on every worker).
- "sample": 2,000 real CIFAR-10 training images (200 per class, JPEG) shipped in the
  package, so the tutorial runs with no network and no data.
- "auto": "folder" when `data_dir` is given, else "tfds" when `cifar10` is already
  prepared on disk, else "sample".

Under several workers each one decodes and trains on its own shard of the training
images (`Cifar10.train_dataset(..., strategy=strategy)` feeds each worker's replicas
from its shard); every worker holds the whole validation set, which Keras shards by
data during `evaluate`.

Each epoch's order and augmentation are a pure function of (seed, epoch), drawn with
stateless random ops (`lepton_keras.data.epochs`), so a job resumed by
`lepton_keras.callbacks.WorkerBackupAndRestore` reads the batches an uninterrupted run reads.
"""

from __future__ import annotations

import dataclasses
import numbers
import os

import numpy as np
import tensorflow as tf

from lepton_keras.data.augment import augment_dataset
from lepton_keras.data.epochs import epoch_dataset
from lepton_keras.distribute import cluster, parameter_server
from lepton_keras.distribute.input_plan import InputPlan, worker_shard
from lepton_keras.validation import check_bool, check_choice, check_int, invalid

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (32, 32, 3)
SOURCES = ("auto", "tfds", "folder", "sample")
SAMPLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_sample.npz")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_DECODE_BATCH = 2048


@dataclasses.dataclass(frozen=True, eq=False)
class Cifar10:
    """Images (uint8, N x 32 x 32 x 3) and labels (int64 in [0, 10)) of one worker's shard.

    Attributes:
        train_images, train_labels: this worker's shard of the training images.
        validation_images, validation_labels: the whole validation (or test) set.
        source: "tfds", "folder" or "sample".
        location: where the images came from (a path, or the tensorflow-datasets directory).
        validation_name: "test" (tensorflow-datasets' test split) or "validation" (carved out).
        shard: (index, count) of this worker's training shard.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    source: str
    location: str
    validation_name: str
    shard: tuple[int, int] = (0, 1)

    def describe(self) -> str:
        """One line saying which source was used and how much of it this worker holds."""
        index, count = self.shard
        shard = f", training shard {index + 1} of {count}" if count > 1 else ""
        return (
            f"CIFAR-10 from {self.source} ({self.location}): {len(self.train_labels)} training and "
            f"{len(self.validation_labels)} {self.validation_name} images{shard}"
        )

    def train_dataset(
        self,
        global_batch_size: int,
        *,
        strategy=None,
        shuffle: bool = True,
        seed: int = 0,
        one_hot: bool = False,
        per_worker_pipelines: bool | None = None,
        augment: bool = False,
        repeat: bool = False,
    ):
        """Shuffled training batches of `global_batch_size` images in all, across all replicas.

        Args:
            global_batch_size: images per step over all replicas and workers; a multiple
                of the replica count.
            strategy: the `tf.distribute.Strategy` you train with (default: none).
            shuffle: reshuffle every epoch (default True); epoch e's order is a pure
                function of (`seed`, e), with `seed` an integer >= 0 (default 0).
            one_hot: one-hot float32 label rows instead of int64 labels (default False).
            per_worker_pipelines: feed each worker's replicas from that worker's own shard
                (`strategy.distribute_datasets_from_function`). Default: when the strategy
                has several workers. Otherwise the result is a plain `tf.data.Dataset` of
                global batches, which Keras splits between the replicas.
            augment: random 32x32 crops of the image zero-padded by 4 pixels, flipped
                horizontally half of the time (`lepton_keras.data.augment`), drawn anew each
                epoch, a pure function of (`seed`, epoch, worker) (default False).
            repeat: run through the epochs without end, each reshuffled (and re-augmented),
                for `model.fit(..., steps_per_epoch=data.steps_per_epoch(global_batch_size,
                strategy=strategy))` (default False). Keras then keeps one iterator for the
                whole fit instead of building a new one each epoch; under
                MultiWorkerMirroredStrategy that stalled the first step of every epoch by about
                a second on 2 CPU cores (benchmarks/README.md).

        Incomplete batches are dropped, so every step has the same shape everywhere.
        Images are float32 in [0, 1]. Pass the result to `model.fit` as it is.

        Every epoch is the same in whichever process reads it (`lepton_keras.data.epochs`),
        so a job that `lepton_keras.callbacks.WorkerBackupAndRestore` resumes after an
        interruption reads the batches of an uninterrupted run, and ends with its weights.
        Under a ParameterServerStrategy every worker reads its own copy of this dataset; each
        copy then shuffles (and augments) in an order of its own, drawn from its worker's
        clock, so that the workers do not train on the same batches at the same time
        (asynchronous training is not reproducible anyway).

        Raises:
            ValueError: a bad argument, or a global batch larger than the training images
                (of this worker's shard), which would train nothing.
        """
        plan = self.input_plan(global_batch_size, strategy=strategy, per_worker_pipelines=per_worker_pipelines)
        shuffle, one_hot = check_bool("shuffle", shuffle), check_bool("one_hot", one_hot)
        augment, repeat = check_bool("augment", augment), check_bool("repeat", repeat)
        seed = check_int("seed", seed, minimum=0)
        own_order_per_copy = parameter_server.is_parameter_server_strategy(strategy)
        options = (shuffle, seed, one_hot, augment, repeat, own_order_per_copy)
        if not plan.per_worker_pipelines:
            return self._pipeline(plan, *options)

        def pipeline_for_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
            # Images loaded as this worker's shard are its own; of the whole set, it takes its own.
            holds_its_shard = self.shard[1] > 1
            worker_plan = plan if holds_its_shard else plan.for_worker(context.input_pipeline_id)
            return self._pipeline(worker_plan, *options)

        return strategy.distribute_datasets_from_function(pipeline_for_worker)

    def steps_per_epoch(self, global_batch_size: int, *, strategy=None, per_worker_pipelines: bool | None = None) -> int:
        """The steps of one epoch of `train_dataset` with the same arguments: the same on every worker.

        Pass it to `model.fit(steps_per_epoch=...)` with `train_dataset(..., repeat=True)`.
        """
        plan = self.input_plan(global_batch_size, strategy=strategy, per_worker_pipelines=per_worker_pipelines)
        return plan.steps_per_epoch

    def input_plan(
        self, global_batch_size: int, *, strategy=None, per_worker_pipelines: bool | None = None
    ) -> InputPlan:
        """How `train_dataset` with the same arguments reads these images: shards, batches, steps.

        Raises:
            ValueError: a bad argument, images loaded as a shard that this strategy's workers do
                not match, or a global batch larger than the training images (of a shard).
        """
        return InputPlan.from_strategy(
            global_batch_size, strategy, examples=len(self.train_labels), held_shard=self.shard,
            per_worker_pipelines=per_worker_pipelines,
        )  # fmt: skip

    def _pipeline(self, plan: InputPlan, shuffle, seed, one_hot, augment, repeat, own_order_per_copy) -> tf.data.Dataset:
        """The batches of `plan`'s worker: `plan.pipeline_batches_per_step` of them a step."""
        images, labels = self.train_images, self.train_labels
        if self.shard[1] == 1:  # the whole set: take this worker's shard
            images, labels = images[plan.shard], labels[plan.shard]
        size = plan.steps_per_epoch * plan.per_worker_batch
        images, labels = tf.constant(images[:size]), tf.constant(labels[:size])
        worker = plan.worker_index  # each worker draws its own augmentation

        def one_epoch(epoch):
            # Everything random in epoch e is a pure function of (seed, e): a restarted job
            # reads the epoch it resumes at, not a replay of the first (lepton_keras.data.epochs).
            epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
            if own_order_per_copy:  # read where the copy runs: each worker's clock, each epoch
                epoch_seed = tf.random.experimental.stateless_fold_in(epoch_seed, tf.bitcast(tf.timestamp(), tf.int64))
            order = tf.range(size)
            if shuffle:
                order = tf.random.experimental.stateless_shuffle(order, seed=epoch_seed)
            epoch_data = tf.data.Dataset.from_tensor_slices((tf.gather(images, order), tf.gather(labels, order)))
            if augment:
                augment_seed = tf.random.experimental.stateless_fold_in(epoch_seed, 1 + worker)
                epoch_data = augment_dataset(epoch_data, seed=augment_seed)
            return epoch_data

        dataset = epoch_dataset(one_epoch, repeat=repeat, counted=not own_order_per_copy)
        dataset = _batch_and_scale(dataset, plan.pipeline_batch_size, drop_remainder=True, one_hot=one_hot)
        batches = tf.data.INFINITE_CARDINALITY if repeat else plan.steps_per_epoch * plan.pipeline_batches_per_step
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
        if plan.pipeline_batches_per_step > 1:
            dataset = _hide_length(dataset)
        return dataset

    def validation_dataset(self, global_batch_size: int, *, one_hot: bool = False) -> tf.data.Dataset:
        """Validation (or test) batches of `global_batch_size`, in a fixed order.

        Every worker gets the whole set; Keras splits each batch between workers and replicas.
        """
        global_batch_size = check_int("global_batch_size", global_batch_size, minimum=1)
        one_hot = check_bool("one_hot", one_hot)
        dataset = tf.data.Dataset.from_tensor_slices((self.validation_images, self.validation_labels))
        return _batch_and_scale(dataset, global_batch_size, drop_remainder=False, one_hot=one_hot)


def _hide_length(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with an unknown length, for a pipeline that feeds several replicas a step.

    Keras takes a distributed dataset's length for the steps of an epoch, but that length is the
    number of per-replica batches, local replicas times the steps, so Keras would run out of
    data mid-epoch. With an unknown length it runs until the data ends: the epoch.
    """
    return dataset.filter(lambda images, labels: True)


def _batch_and_scale(dataset: tf.data.Dataset, batch_size: int, drop_remainder: bool, one_hot: bool):
    def scale(images, labels):
        labels = tf.one_hot(labels, len(CLASS_NAMES)) if one_hot else labels
        return tf.cast(images, tf.float32) / 255.0, labels

    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(scale, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _decode_image(data: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(data, channels=3, expand_animations=False)


def _decode_images(blobs: list[bytes] | list[str], names: list[str], *, from_files: bool) -> np.ndarray:
    """Decodes encoded images (or the files at those paths) into one uint8 array.

    Raises:
        ValueError: an image is corrupt or not 32 x 32; the message names it.
    """
    if not names:
        return np.zeros((0, *IMAGE_SHAPE), np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices(list(blobs))
    if from_files:
        dataset = dataset.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(_decode_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images = []
    try:
        for image in dataset:
            if tuple(image.shape) != IMAGE_SHAPE:
                name = names[len(images)]
                raise ValueError(f"{name}: expected a 32x32 RGB image, found shape {tuple(image.shape)}")
            images.append(image.numpy())
    except tf.errors.OpError as error:  # undecodable, or a file that cannot be read
        name = names[len(images)]
        raise ValueError(f"{name}: not a readable image ({error.message.splitlines()[0]})") from None
    return np.stack(images)


def _folder_root(data_dir: str) -> str:
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"CIFAR-10 image folder not found: {data_dir}")
    for root in (data_dir, os.path.join(data_dir, "train")):
        if os.path.isdir(root) and set(CLASS_NAMES) <= set(os.listdir(root)):
            return root
    raise FileNotFoundError(
        f"{data_dir} is not a CIFAR-10 image folder: expected one folder per class "
        f"({', '.join(CLASS_NAMES)}) in it or in {os.path.join(data_dir, 'train')}"
    )


def _list_image_folder(data_dir: str) -> tuple[list[str], np.ndarray]:
    """Paths (sorted per class) and labels of every image under a CIFAR-10 image folder."""
    root = _folder_root(data_dir)
    paths, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class folder {folder}")
        paths.extend(os.path.join(folder, f) for f in files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, np.int64)


def _split(count: int, validation_size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index arrays; the same on every worker."""
    if validation_size is None:
        validation_size = min(5000, count // 10)
    if not validation_size < count:
        raise invalid("validation_size", validation_size, f"an integer in [0, {count}) or None")
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[validation_size:]), np.sort(order[:validation_size])


def _shard(indices: np.ndarray, train_limit: int | None, shard: tuple[int, int], seed: int) -> np.ndarray:
    if train_limit is not None:
        chosen = np.random.default_rng(seed + 1).permutation(len(indices))[:train_limit]
        indices = np.sort(indices[chosen])
    return indices[worker_shard(len(indices), *shard)]


def _tfds_data_dir(data_dir: str | None) -> str:
    # Read TFDS_DATA_DIR now: tensorflow-datasets reads it once, when it is imported.
    return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _tfds_builder(data_dir: str | None):
    import tensorflow_datasets as tfds

    return tfds.builder("cifar10", data_dir=_tfds_data_dir(data_dir))


def _check_data_dir(data_dir) -> str | None:
    if data_dir is None:
        return None
    if not isinstance(data_dir, (str, os.PathLike)) or not os.fspath(data_dir):
        raise invalid("data_dir", data_dir, "a path or None")
    return os.fspath(data_dir)


def tfds_prepared(data_dir: str | None = None) -> bool:
    """True when tensorflow-datasets' `cifar10` is on disk (TFDS_DATA_DIR or `data_dir`)."""
    data_dir = _check_data_dir(data_dir)
    if not os.path.isdir(os.path.join(_tfds_data_dir(data_dir), "cifar10")):
        return False
    try:
        return _tfds_builder(data_dir).is_prepared()
    except Exception:  # an unreadable tfds directory is "not prepared", not a crash of "auto"
        return False


def _resolve_shard(shard) -> tuple[int, int]:
    if shard == "auto":
        info = cluster.refuse_evaluator(cluster.task_info())
        if info.parameter_servers:  # the chief builds every worker's input: it holds all the images
            return (0, 1)
        return (info.worker_index, info.num_workers)
    if shard is None:
        return (0, 1)
    valid = isinstance(shard, (tuple, list)) and len(shard) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in shard) and 0 <= shard[0] < shard[1]
    if not valid:
        raise invalid("shard", shard, '"auto", None or (index, count) with 0 <= index < count')
    return (int(shard[0]), int(shard[1]))


def load_cifar10(
    source: str = "auto",
    *,
    data_dir: str | None = None,
    validation_size: int | None = None,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    shard="auto",
    seed: int = 0,
) -> Cifar10:
    """Loads CIFAR-10 and says where from.

    Args:
        source: "auto" (default), "tfds", "folder" or "sample" (see the module docstring).
        data_dir: the image folder for "folder" (and "auto"); the tensorflow-datasets
            directory for "tfds" (default: TFDS_DATA_DIR, else ~/tensorflow_datasets).
        validation_size: images carved out of a folder or the sample for validation
            (default: 5,000, at most a tenth). Ignored for "tfds", which has a test split.
        train_limit: keep only this many training images (a seeded random choice), for
            quick runs; applied before sharding.
        validation_limit: keep only this many validation images (a seeded random choice from
            an image folder or the sample, the same on every worker; the first ones of
            tensorflow-datasets' test split).
        shard: "auto" (default: this worker's shard when TF_CONFIG describes a cluster),
            None (everything), or (index, count).
        seed: seed of the validation split and of `train_limit`'s choice (default 0).

    Raises:
        FileNotFoundError: the folder, a class folder or its images are missing (names the path).
        ValueError: a corrupt or wrongly sized image (names it), a bad argument, or "tfds" with nothing
            prepared and no network to download it (says to use the folder or the sample, and how).
    """
    source = check_choice("source", source, SOURCES)
    data_dir = _check_data_dir(data_dir)
    validation_size = check_int("validation_size", validation_size, minimum=0, allow_none=True)
    train_limit = check_int("train_limit", train_limit, minimum=1, allow_none=True)
    validation_limit = check_int("validation_limit", validation_limit, minimum=0, allow_none=True)
    seed = check_int("seed", seed, minimum=0)
    shard = _resolve_shard(shard)
    if source == "auto":
        source = "folder" if data_dir else ("tfds" if tfds_prepared() else "sample")
    if source == "tfds":
        return _load_tfds(data_dir, train_limit, validation_limit, shard, seed)
    if source == "folder":
        if not data_dir:
            raise ValueError('source="folder" needs data_dir, the folder with one folder per class')
        paths, labels = _list_image_folder(data_dir)
        items, names, from_files, location = paths, paths, True, os.path.abspath(_folder_root(data_dir))
    else:
        with np.load(SAMPLE_PATH) as sample:
            data, offsets, labels = sample["jpeg_bytes"].tobytes(), sample["offsets"], sample["labels"]
        items = [data[offsets[i] : offsets[i + 1]] for i in range(len(labels))]
        names = [f"{SAMPLE_PATH}[{i}]" for i in range(len(labels))]
        from_files, location = False, SAMPLE_PATH

    def decode(indices):
        return _decode_images([items[i] for i in indices], [names[i] for i in indices], from_files=from_files)

    train, validation = _split(len(items), validation_size, seed)
    train = _shard(train, train_limit, shard, seed)
    if validation_limit is not None:
        # a seeded random subset: the folder is sorted by class, so a prefix would miss classes
        chosen = np.random.default_rng(seed + 2).permutation(len(validation))[:validation_limit]
        validation = np.sort(validation[chosen])
    return Cifar10(
        decode(train), labels[train], decode(validation), labels[validation], source, location, "validation", shard
    )


def _tfds_arrays(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    images, labels = [], []
    for image_batch, label_batch in dataset.batch(_DECODE_BATCH):
        images.append(image_batch.numpy())
        labels.append(label_batch.numpy())
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _tfds_offline_message(tfds_dir: str, error: Exception) -> str:
    return (
        f"no network to download CIFAR-10 through tensorflow-datasets ({type(error).__name__}; nothing prepared in "
        f"{tfds_dir}): use --data-dir DIR / source=\"folder\" with an image folder, or source=\"sample\" (the "
        "bundled sample), like this:\n"
        '    load_cifar10("folder", data_dir="cifar10/train")  # one folder per class: airplane/0001.jpg, ...\n'
        '    load_cifar10("sample")                            # 2,000 real images shipped with lepton_keras\n'
        "or prepare tensorflow-datasets' cifar10 where there is network and point TFDS_DATA_DIR (or data_dir) at it"
    )


def _load_tfds(data_dir, train_limit, validation_limit, shard, seed) -> Cifar10:
    import requests  # tensorflow-datasets downloads with it
    import tensorflow_datasets as tfds

    builder = _tfds_builder(data_dir)
    try:
        builder.download_and_prepare()
    except (requests.exceptions.RequestException, tfds.download.DownloadError) as error:
        # a ValueError, so that `lepton-keras --source tfds` says it in one line, as it does other bad choices
        raise ValueError(_tfds_offline_message(builder.data_dir, error)) from error
    split = "train" if train_limit is None else f"train[:{train_limit}]"
    index, count = shard
    if count > 1:  # equal contiguous parts: each worker reads only its own records
        split = tfds.even_splits(split, count, drop_remainder=True)[index]
    train_images, train_labels = _tfds_arrays(builder, split)
    test_split = "test" if validation_limit is None else f"test[:{validation_limit}]"
    test_images, test_labels = _tfds_arrays(builder, test_split)
    return Cifar10(
        train_images, train_labels, test_images, test_labels, "tfds", builder.data_dir, "test", shard
    )
