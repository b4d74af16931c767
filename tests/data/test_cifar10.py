"""load_cifar10 and its Cifar10 datasets: the three sources, errors that name the path, sharding, pipelines."""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.data import CLASS_NAMES, load_cifar10, tfds_prepared
from lepton_keras.data.cifar10 import SAMPLE_PATH
from lepton_keras.distribute import get_strategy
from tests.support.harness import REPO_ROOT, launch_workers

ARCHIVE = os.path.join(REPO_ROOT, "..", "shared", "datasets", "cifar10-train-jpeg.tar.gz")
PER_CLASS = 12


def sample_jpegs():
    with np.load(SAMPLE_PATH) as sample:
        data, offsets, labels = sample["jpeg_bytes"].tobytes(), sample["offsets"], sample["labels"]
    return [(data[offsets[i] : offsets[i + 1]], int(labels[i])) for i in range(len(labels))]


@pytest.fixture
def image_folder(tmp_path):
    """A small CIFAR-10 image folder (`train/<class>/NNNN.jpg`) made from the bundled sample."""
    counts = dict.fromkeys(range(10), 0)
    for blob, label in sample_jpegs():
        if counts[label] < PER_CLASS:
            folder = tmp_path / "train" / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{counts[label]:04d}.jpg").write_bytes(blob)
            counts[label] += 1
    return tmp_path


def hashes(images):
    return {hashlib.sha1(image.tobytes()).hexdigest() for image in images}


def test_the_bundled_sample_is_2000_real_images_under_2_mb():
    assert os.path.getsize(SAMPLE_PATH) < 2_000_000
    data = load_cifar10("sample", shard=None)
    assert data.source == "sample" and "sample" in data.describe()
    assert data.train_images.shape == (1800, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.validation_images.shape == (200, 32, 32, 3)
    labels = np.concatenate([data.train_labels, data.validation_labels])
    assert np.bincount(labels).tolist() == [200] * 10
    assert 40 < data.train_images.mean() < 200 and data.train_images.std() > 30  # photos, not blanks
    assert not hashes(data.train_images) & hashes(data.validation_images)


def test_the_validation_split_is_seeded():
    first, again, other = (load_cifar10("sample", shard=None, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(first.validation_images, again.validation_images)
    assert hashes(first.validation_images) != hashes(other.validation_images)


@pytest.mark.parametrize("subfolder", ["", "train"])
def test_an_image_folder_is_read_with_its_labels(image_folder, subfolder):
    data = load_cifar10(data_dir=str(image_folder / subfolder), validation_size=20, shard=None)
    assert data.source == "folder" and str(image_folder / "train") in data.describe()
    assert len(data.train_labels) == 10 * PER_CLASS - 20 and len(data.validation_labels) == 20
    expected = {}
    for blob, label in sample_jpegs():
        expected.setdefault(hashlib.sha1(tf.io.decode_jpeg(blob).numpy().tobytes()).hexdigest(), label)
    for image, label in zip(data.train_images, data.train_labels):
        assert expected[hashlib.sha1(image.tobytes()).hexdigest()] == label


def test_auto_reads_the_folder_given_else_the_sample(image_folder, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("empty_tfds")))
    assert load_cifar10(data_dir=str(image_folder), shard=None).source == "folder"
    assert load_cifar10(shard=None).source == "sample"


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
    """A real tensorflow-datasets `cifar10` directory, prepared by tfds's own builder from
    bundled-sample images written in the CIFAR-10 binary format (100 train, 20 test); only
    the download is replaced, since the tests have no network."""
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("cifar10_download")
    batches = root / "cifar-10-batches-bin"
    batches.mkdir()
    (batches / "batches.meta.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    images = [(tf.io.decode_jpeg(blob).numpy(), label) for blob, label in sample_jpegs()[::16][:120]]

    def records(pairs):
        return b"".join(bytes([label]) + image.transpose(2, 0, 1).tobytes() for image, label in pairs)

    for part in range(5):
        (batches / f"data_batch_{part + 1}.bin").write_bytes(records(images[20 * part : 20 * (part + 1)]))
    (batches / "test_batch.bin").write_bytes(records(images[100:]))
    data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", return_value=str(root)):
        tfds.builder("cifar10", data_dir=str(data_dir)).download_and_prepare()
    return data_dir, hashes(image for image, _ in images[:100]), hashes(image for image, _ in images[100:])


def test_tensorflow_datasets_is_read_when_prepared_and_shards_by_records(tfds_data_dir, monkeypatch):
    data_dir, train_hashes, test_hashes = tfds_data_dir
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
    assert tfds_prepared()
    whole = load_cifar10(shard=None)  # "auto" picks tensorflow-datasets once it is on disk
    assert whole.source == "tfds" and whole.validation_name == "test" and "tfds" in whole.describe()
    assert hashes(whole.train_images) == train_hashes and hashes(whole.validation_images) == test_hashes
    halves = [load_cifar10("tfds", shard=(i, 2)) for i in range(2)]
    first, second = (hashes(half.train_images) for half in halves)
    assert len(first) == len(second) == 50 and first | second == train_hashes
    assert len(load_cifar10("tfds", data_dir=str(data_dir), validation_limit=5, shard=None).validation_labels) == 5


OFFLINE_LOAD = """
import json, sys
import tensorflow_datasets.core.download.downloader as downloader
from lepton_keras.data import load_cifar10
downloader.MAX_RETRIES = 0  # tfds's own setting: its 10 retries back off for 200 s before failing the same way
try:
    load_cifar10("tfds", data_dir=sys.argv[1])
except ValueError as error:
    cause = type(error.__cause__)
    with open(sys.argv[2], "w") as file:
        json.dump({"cause": f"{cause.__module__}.{cause.__name__}", "message": str(error)}, file)
"""


def test_tensorflow_datasets_without_network_says_to_use_the_folder_or_the_sample(tmp_path):
    # A real download attempt through an unreachable proxy (nothing listens on port 9), into an empty
    # tfds directory: tfds raises requests' ProxyError, a ConnectionError, as it does with no network.
    unreachable = "http://127.0.0.1:9"
    environment = {name: value for name, value in os.environ.items() if name.lower() != "no_proxy"}
    environment.update(HTTPS_PROXY=unreachable, HTTP_PROXY=unreachable, https_proxy=unreachable,
                       http_proxy=unreachable, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="3")  # fmt: skip
    environment.pop("TF_CONFIG", None)
    result = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-c", OFFLINE_LOAD, str(tmp_path / "tfds"), str(result)],
                          env=environment, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and result.exists(), done.stdout[-2000:] + done.stderr[-3000:]
    cause, message = json.loads(result.read_text()).values()
    assert cause == "requests.exceptions.ProxyError"
    assert message.startswith("no network to download CIFAR-10 through tensorflow-datasets (ProxyError; nothing "
                              f"prepared in {tmp_path / 'tfds'}")  # fmt: skip
    assert 'use --data-dir DIR / source="folder" with an image folder, or source="sample" (the bundled sample), ' \
        "like this:" in message
    assert 'load_cifar10("folder", data_dir="cifar10/train")' in message and 'load_cifar10("sample")' in message


def test_a_missing_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_cifar10(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a CIFAR-10 image folder"):
        load_cifar10(data_dir=str(tmp_path))


def test_an_empty_class_folder_is_an_error_naming_it(image_folder):
    cat = image_folder / "train" / "cat"
    for file in cat.iterdir():
        file.unlink()
    with pytest.raises(FileNotFoundError, match=f"no images .* in class folder {cat}"):
        load_cifar10(data_dir=str(image_folder))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not an image", "not a readable image"),
        ("truncated", "not a readable image"),
        ("large", "expected a 32x32 RGB image, found shape"),
    ],
)
def test_a_corrupt_image_is_an_error_naming_it(image_folder, content, message):
    bad = image_folder / "train" / "dog" / "0003.jpg"
    if content == "truncated":
        content = bad.read_bytes()[:200]
    elif content == "large":
        content = tf.io.encode_jpeg(tf.zeros((64, 64, 3), tf.uint8)).numpy()
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=f"{bad}: {message}"):
        load_cifar10(data_dir=str(image_folder), validation_size=0, shard=None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"source": "imagenet"}, "source must be one of"),
        ({"source": "folder"}, 'source="folder" needs data_dir'),
        ({"source": "sample", "shard": (2, 2)}, "shard must be"),
        ({"source": "sample", "validation_size": 2000},
         r"validation_size must be an integer in \[0, 2000\) or None, received: 2000"),
        ({"source": "sample", "train_limit": 0}, "train_limit must be an integer >= 1 or None, received: 0"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_cifar10(**kwargs)


SHARD_MESSAGE = 'shard must be "auto", None or \\(index, count\\) with 0 <= index < count, received: '


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("source", None, "source must be one of 'auto', 'tfds', 'folder', 'sample', received: None"),
        ("data_dir", 3, "data_dir must be a path or None, received: 3"),
        ("data_dir", "", "data_dir must be a path or None, received: ''"),
        ("shard", 2, SHARD_MESSAGE + "2"),
        ("shard", (1,), SHARD_MESSAGE + "\\(1,\\)"),
        ("shard", (0, 2, 1), SHARD_MESSAGE),
        ("shard", (0.0, 2), SHARD_MESSAGE),
        ("shard", (-1, 2), SHARD_MESSAGE),
        ("shard", "0/2", SHARD_MESSAGE + "'0/2'"),
        ("train_limit", 10.0, "train_limit must be an integer >= 1 or None, received: 10.0"),
        ("train_limit", "100", "train_limit must be an integer >= 1 or None, received: '100'"),
        ("train_limit", True, "train_limit must be an integer >= 1 or None, received: True"),
        ("validation_size", -1, "validation_size must be an integer >= 0 or None, received: -1"),
        ("validation_size", 0.5, "validation_size must be an integer >= 0 or None, received: 0.5"),
        ("validation_limit", -5, "validation_limit must be an integer >= 0 or None, received: -5"),
        ("seed", -1, "seed must be an integer >= 0, received: -1"),
        ("seed", None, "seed must be an integer >= 0, received: None"),
        ("seed", 1.5, "seed must be an integer >= 0, received: 1.5"),
    ],
)
def test_bad_load_arguments_are_errors_naming_them_before_any_work(name, value, message):
    kwargs = {"source": "sample", name: value}
    with pytest.raises(ValueError, match=f"^{message}"):
        load_cifar10(**kwargs)
    if name == "data_dir":
        with pytest.raises(ValueError, match=f"^{message}"):
            tfds_prepared(value)


@pytest.fixture(scope="module")
def small():
    return load_cifar10("sample", shard=None, train_limit=40, validation_limit=10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"global_batch_size": 0}, "global_batch_size must be an integer >= 1, received: 0"),
        ({"global_batch_size": 8.0}, "global_batch_size must be an integer >= 1, received: 8.0"),
        ({"global_batch_size": None}, "global_batch_size must be an integer >= 1, received: None"),
        ({"global_batch_size": 8, "shuffle": "yes"}, "shuffle must be True or False, received: 'yes'"),
        ({"global_batch_size": 8, "augment": 1}, "augment must be True or False, received: 1"),
        ({"global_batch_size": 8, "repeat": None}, "repeat must be True or False, received: None"),
        ({"global_batch_size": 8, "one_hot": "False"}, "one_hot must be True or False, received: 'False'"),
        ({"global_batch_size": 8, "seed": -3}, "seed must be an integer >= 0, received: -3"),
        ({"global_batch_size": 8, "per_worker_pipelines": 0},
         "per_worker_pipelines must be True or False, received: 0"),
        ({"global_batch_size": 8, "per_worker_pipelines": True},
         "per_worker_pipelines must be False or None without a strategy, received: True"),
        ({"global_batch_size": 8, "strategy": "mirrored"},
         "strategy must be a tf.distribute.Strategy or None, received: 'mirrored'"),
    ],
)
def test_bad_train_dataset_arguments_are_errors_naming_them(small, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        small.train_dataset(**kwargs)
    if set(kwargs) <= {"global_batch_size", "per_worker_pipelines", "strategy"}:
        with pytest.raises(ValueError, match=f"^{message}"):
            small.steps_per_epoch(**kwargs)


def test_a_global_batch_larger_than_the_shard_is_an_error_naming_both(small):
    for call in (small.train_dataset, small.steps_per_epoch):
        with pytest.raises(ValueError, match="^global_batch_size must be at most the 40 training images, received: 64"):
            call(64)
    assert small.steps_per_epoch(40) == 1
    strategy = get_strategy("mirrored", cpu_replicas=2)
    for per_worker_pipelines in (False, True):
        with pytest.raises(ValueError, match="^global_batch_size must be at most the 40 training images, received: 42"):
            small.train_dataset(42, strategy=strategy, per_worker_pipelines=per_worker_pipelines)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"global_batch_size": 0}, "global_batch_size must be an integer >= 1, received: 0"),
        ({"global_batch_size": "32"}, "global_batch_size must be an integer >= 1, received: '32'"),
        ({"global_batch_size": 8, "one_hot": None}, "one_hot must be True or False, received: None"),
    ],
)
def test_bad_validation_dataset_arguments_are_errors_naming_them(small, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        small.validation_dataset(**kwargs)


def test_shards_are_distinct_equal_and_cover_the_training_set(monkeypatch):
    whole = load_cifar10("sample", shard=None)
    shards = [load_cifar10("sample", shard=(i, 3)) for i in range(3)]
    assert [len(s.train_labels) for s in shards] == [600, 600, 600]
    parts = [hashes(s.train_images) for s in shards]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == hashes(whole.train_images)
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}),
    )
    assert load_cifar10("sample").shard == (1, 2)


def test_pipelines_give_scaled_global_batches():
    data = load_cifar10("sample", shard=None, train_limit=100, validation_limit=50)
    train = list(data.train_dataset(32, one_hot=True))
    assert len(train) == 3  # 100 images: the incomplete batch is dropped
    images, labels = train[0]
    assert images.shape == (32, 32, 32, 3) and images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    assert labels.shape == (32, 10) and np.all(np.sum(labels, axis=1) == 1)
    assert [len(y) for _, y in data.validation_dataset(32)] == [32, 18]
    with pytest.raises(ValueError, match="multiple of the 4 replica"):
        data.train_dataset(30, strategy=get_strategy("mirrored", cpu_replicas=4))


def count_steps(model, dataset):
    steps = []
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    model.fit(dataset, epochs=1, verbose=0, callbacks=[callback])
    return len(steps)


@pytest.mark.parametrize("per_worker_pipelines", [False, True])
def test_mirrored_replicas_see_every_training_image_once_per_epoch(per_worker_pipelines):
    strategy = get_strategy("mirrored", cpu_replicas=2)
    data = load_cifar10("sample", shard=None, train_limit=300)
    dataset = data.train_dataset(64, strategy=strategy, per_worker_pipelines=per_worker_pipelines, shuffle=False)
    seen = []
    for _, labels in dataset:
        seen.append(np.concatenate([part.numpy() for part in strategy.experimental_local_results(labels)]))
    assert [len(step) for step in seen] == [64] * 4
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.sort(data.train_labels[:256]))
    with strategy.scope():
        model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert count_steps(model, dataset) == 4


@pytest.mark.parametrize("replicas", [None, 2])
def test_steps_per_epoch_counts_the_batches_of_an_epoch(replicas):
    strategy = get_strategy("mirrored", cpu_replicas=replicas) if replicas else None
    for train_limit, global_batch in [(300, 64), (257, 32), (100, 100)]:
        data = load_cifar10("sample", shard=None, train_limit=train_limit)
        for per_worker_pipelines in ([None] if strategy is None else [False, True]):
            options = {"strategy": strategy, "per_worker_pipelines": per_worker_pipelines}
            epoch = sum(1 for _ in data.train_dataset(global_batch, **options))
            assert data.steps_per_epoch(global_batch, **options) == epoch == train_limit // global_batch


def test_a_worker_shard_fed_as_the_whole_set_is_a_clear_error():
    data = load_cifar10("sample", shard=(0, 2), train_limit=100)
    for call in (data.train_dataset, data.steps_per_epoch):
        with pytest.raises(ValueError, match="shard 0 of 2; feed them with per_worker_pipelines=True"):
            call(32)


def run_sharded_workers(tmp_path, extra_args=()):
    out = tmp_path / "out"
    out.mkdir()
    launch_workers("tests.support.workers.data_shards", ["--out", str(out), *extra_args])
    return [json.loads((out / f"worker_{i}.json").read_text()) for i in range(2)]


@pytest.mark.multiworker
def test_each_of_two_workers_reads_and_trains_on_its_own_shard(tmp_path):
    records = run_sharded_workers(tmp_path)
    whole = hashes(load_cifar10("sample", shard=None).train_images)
    first, second = (set(record["train_hashes"]) for record in records)
    assert [record["shard"] for record in records] == [[0, 2], [1, 2]]
    assert len(first) == len(second) == 900 and not first & second and first | second == whole
    assert [record["validation_count"] for record in records] == [200, 200]
    assert [record["steps"] for record in records] == [1800 // 32] * 2  # 900 images per worker, 16 per step
    assert [record["steps_per_epoch"] for record in records] == [1800 // 32] * 2
    assert [record["repeated_steps"] for record in records] == [2 * (1800 // 32)] * 2
    oversized = ("global_batch_size must be at most the 1800 training images (900 in each of the 2 workers' "
                 "shards), received: 1802")
    assert [record["oversized_batch_error"] for record in records] == [oversized] * 2


@pytest.mark.multiworker
@pytest.mark.skipif(not os.path.exists(ARCHIVE), reason="the CIFAR-10 archive (../shared/datasets) is not here")
def test_the_full_archive_is_read_as_an_image_folder(tmp_path):
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(tmp_path / "cifar10", filter="data")
    data = load_cifar10(data_dir=str(tmp_path / "cifar10"), shard=None)
    assert (len(data.train_labels), len(data.validation_labels)) == (45000, 5000)
    assert np.bincount(np.concatenate([data.train_labels, data.validation_labels])).tolist() == [5000] * 10
    records = run_sharded_workers(tmp_path, ["--data-dir", str(tmp_path / "cifar10"), "--train-limit", "4096"])
    first, second = (set(record["train_hashes"]) for record in records)
    assert len(first) == len(second) == 2048 and not first & second
    limited = load_cifar10(data_dir=str(tmp_path / "cifar10"), shard=None, train_limit=4096, validation_limit=0)
    assert first | second == hashes(limited.train_images) and first | second <= hashes(data.train_images)


def test_a_validation_limit_keeps_a_random_subset_with_every_class():
    full = load_cifar10("sample", shard=None)
    limited = load_cifar10("sample", shard=None, validation_limit=100)
    assert len(limited.validation_labels) == 100
    assert set(limited.validation_labels) == set(range(10))  # a prefix of the class-sorted folder has 5
    full_images = {image.tobytes(): label for image, label in zip(full.validation_images, full.validation_labels)}
    for image, label in zip(limited.validation_images, limited.validation_labels):
        assert full_images[image.tobytes()] == label
    again = load_cifar10("sample", shard=None, validation_limit=100)
    np.testing.assert_array_equal(again.validation_labels, limited.validation_labels)
