"""TF_CONFIG and the cluster helpers: which task is the chief, per-worker and chief-only paths, and every
malformed TF_CONFIG a clear error before TensorFlow sees it."""

import json
import os

import pytest

from lepton_keras.distribute import chief_path, is_chief, task_info, worker_path
from lepton_keras.distribute.cluster import parse_tf_config


def tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


WORKERS = {"worker": ["127.0.0.1:1111", "127.0.0.1:2222", "127.0.0.1:3333"]}
WITH_CHIEF = {"chief": ["127.0.0.1:1000"], "worker": ["127.0.0.1:1111", "127.0.0.1:2222"]}


def test_without_a_cluster_this_process_is_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    info = task_info()
    assert (info.task_type, info.task_index, info.num_workers, info.worker_index, info.is_chief) == (
        "worker", 0, 1, 0, True,
    )  # fmt: skip
    assert worker_path("backup") == "backup"
    assert chief_path("ckpt/model.keras") == "ckpt/model.keras"


@pytest.mark.parametrize(
    "cluster, task_type, index, chief, worker_index",
    [
        (WORKERS, "worker", 0, True, 0),
        (WORKERS, "worker", 2, False, 2),
        (WITH_CHIEF, "chief", 0, True, 0),
        (WITH_CHIEF, "worker", 0, False, 1),
        (WITH_CHIEF, "worker", 1, False, 2),
    ],
)
def test_the_chief_is_the_chief_task_or_worker_zero(monkeypatch, cluster, task_type, index, chief, worker_index):
    monkeypatch.setenv("TF_CONFIG", tf_config(cluster, task_type, index))
    info = task_info()
    assert is_chief() is chief
    assert info.worker_index == worker_index
    assert info.num_workers == 3


PARAMETER_SERVER_CLUSTER = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"], "ps": ["127.0.0.1:4"]}


@pytest.mark.parametrize(
    "task_type, index, chief, worker_index",
    [("chief", 0, True, None), ("worker", 0, False, 0), ("worker", 1, False, 1), ("ps", 0, False, None)],
)
def test_in_a_parameter_server_cluster_the_workers_train_and_the_chief_coordinates(
    monkeypatch, task_type, index, chief, worker_index
):
    monkeypatch.setenv("TF_CONFIG", tf_config(PARAMETER_SERVER_CLUSTER, task_type, index))
    info = task_info()
    assert (info.is_chief, info.worker_index, info.num_workers, info.parameter_servers) == (chief, worker_index, 2, 1)


# What the Kubeflow training operator writes for a TFJob with Chief (1), Worker (2) and Evaluator (1)
# replicas: each pod's address is "<job>-<type>-<index>.<namespace>.svc:2222".
TFJOB = {
    "chief": ["cifar10-chief-0.default.svc:2222"],
    "worker": ["cifar10-worker-0.default.svc:2222", "cifar10-worker-1.default.svc:2222"],
    "evaluator": ["cifar10-evaluator-0.default.svc:2222"],
}


@pytest.mark.parametrize(
    "task_type, index, worker_index, chief",
    [("chief", 0, 0, True), ("worker", 0, 1, False), ("worker", 1, 2, False), ("evaluator", 0, None, False)],
)
def test_a_tfjob_cluster_with_an_evaluator_trains_on_chief_and_workers_only(
    monkeypatch, task_type, index, worker_index, chief
):
    monkeypatch.setenv("TF_CONFIG", tf_config(TFJOB, task_type, index))
    info = task_info()
    assert (info.num_workers, info.worker_index, info.is_chief) == (3, worker_index, chief)


def test_the_evaluator_task_is_refused_with_what_to_do_instead(monkeypatch):
    from lepton_keras.data import load_cifar10
    from lepton_keras.distribute import get_strategy

    monkeypatch.setenv("TF_CONFIG", tf_config(TFJOB, "evaluator", 0))
    message = 'the "evaluator" task of TF_CONFIG.*trains on the "chief" and "worker" tasks only.*Evaluator replica'
    with pytest.raises(RuntimeError, match=message):
        get_strategy()  # before TensorFlow sees the cluster: no strategy is created
    with pytest.raises(RuntimeError, match=message):
        load_cifar10("sample", train_limit=64, validation_limit=0)  # shard="auto" reads TF_CONFIG
    assert worker_path("backup") == os.path.join("backup", "evaluator_0")  # its own, should it write
    assert not is_chief()


def test_every_worker_gets_paths_no_other_worker_uses(monkeypatch):
    backups, checkpoints, logs = set(), set(), set()
    for index in range(3):
        monkeypatch.setenv("TF_CONFIG", tf_config(WORKERS, "worker", index))
        backups.add(worker_path("run/backup"))
        checkpoints.add(chief_path("run/ckpt/model.keras"))
        logs.add(chief_path("run/logs/"))
    assert backups == {os.path.join("run/backup", f"worker_{i}") for i in range(3)}
    assert checkpoints == {
        "run/ckpt/model.keras",
        os.path.join("run/ckpt", ".workers", "worker_1", "model.keras"),
        os.path.join("run/ckpt", ".workers", "worker_2", "model.keras"),
    }
    assert "run/logs/" in logs and len(logs) == 3


def test_helpers_read_the_strategy_cluster_resolver_before_tf_config(monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv("TF_CONFIG", tf_config(WORKERS, "worker", 0))
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(WORKERS), task_type="worker", task_id=1
    )

    class StrategyWithResolver(tf.distribute.OneDeviceStrategy):  # a strategy whose resolver names task 1
        @property
        def cluster_resolver(self):
            return resolver

    strategy = StrategyWithResolver("/cpu:0")
    assert not is_chief(strategy)
    assert worker_path("b", strategy) == os.path.join("b", "worker_1")


# Each malformed TF_CONFIG and the words its error must contain. The cases after the first
# eight reached TensorFlow's own errors (or hung it) before TF_CONFIG was validated here.
MALFORMED_TF_CONFIGS = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'non-empty "cluster"'),
    ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}', "non-empty list of"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', '"task" with "type" and "index"'),
    (tf_config(WORKERS, "chief", 0), "task type 'chief' is not in the cluster"),
    (tf_config(WORKERS, "worker", 3), r"task index 3 is outside the cluster.*\[0, 2\]"),
    (tf_config(WORKERS, "worker", -1), "task index -1 is outside the cluster"),
    # Parameter-server clusters: ps without workers, a chief missing, the same address twice.
    (tf_config({"worker": ["127.0.0.1:1111"], "ps": ["127.0.0.1:2222"]}, "worker", 0),
     'names "ps" tasks but has no "chief" task'),
    (tf_config({"chief": ["127.0.0.1:1111"], "ps": ["127.0.0.1:2222"]}, "chief", 0),
     'names "ps" tasks but has no "worker" task'),
    (tf_config({"ps": ["127.0.0.1:2222"]}, "ps", 0), "at least one chief or worker"),
    (tf_config({"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:2"]}, "chief", 0),
     "127.0.0.1:2.*more than once"),
    (tf_config({"worker": ["127.0.0.1"]}, "worker", 0), r'cluster\["worker"\]\[0\] must be a "host:port"'),
    (tf_config({"worker": ["127.0.0.1:http"]}, "worker", 0), "port in 1-65535"),
    (tf_config({"worker": ["127.0.0.1:70000"]}, "worker", 0), "port in 1-65535"),
    (tf_config({"worker": [":1111"]}, "worker", 0), 'must be a "host:port"'),
    (tf_config({"worker": ["not an address!:1111"]}, "worker", 0), 'must be a "host:port"'),
    (tf_config({"worker": []}, "worker", 0), "non-empty list of"),
    (tf_config({"worker": ["127.0.0.1:1111"], "trainer": ["127.0.0.1:2222"]}, "worker", 0),
     "unknown task type 'trainer'.*chief, worker, evaluator, ps"),
    (tf_config({"chief": ["127.0.0.1:1000", "127.0.0.1:1001"], "worker": ["127.0.0.1:1111"]}, "chief", 0),
     "at most one chief"),
    (tf_config({"worker": ["127.0.0.1:1111", "127.0.0.1:1111"]}, "worker", 0), "127.0.0.1:1111.*more than once"),
    (tf_config({"chief": ["127.0.0.1:1111"], "worker": ["127.0.0.1:1111"]}, "worker", 0), "more than once"),
    (tf_config(WORKERS, "worker", "0"), "task index '0'"),
    (tf_config({"evaluator": ["127.0.0.1:1111"]}, "evaluator", 0), "at least one chief or worker"),
]


@pytest.mark.parametrize("text, message", MALFORMED_TF_CONFIGS)
def test_malformed_tf_config_is_a_clear_error(monkeypatch, text, message):
    with pytest.raises(ValueError, match=message):
        parse_tf_config(text)
    monkeypatch.setenv("TF_CONFIG", text)
    for call in (task_info, is_chief):
        with pytest.raises(ValueError, match="TF_CONFIG"):
            call()


@pytest.mark.parametrize(
    "cluster, task_type, index",
    [
        ({"worker": ["localhost:1", "[::1]:65535", "node-7.example.org:2222"]}, "worker", 1),
        ({"chief": ["127.0.0.1:1000"], "worker": ["127.0.0.1:1111"], "evaluator": ["127.0.0.1:3"]}, "evaluator", 0),
    ],
)
def test_well_formed_tf_configs_pass(cluster, task_type, index):
    config = parse_tf_config(tf_config(cluster, task_type, index))
    assert config["task"] == {"type": task_type, "index": index}


def test_empty_tf_config_means_no_cluster():
    assert parse_tf_config("") is None
    assert parse_tf_config("  ") is None


@pytest.mark.multiworker
def test_keras_file_callbacks_never_share_a_file_under_two_workers(tmp_path):
    import keras
    import numpy as np

    from tests.support.harness import launch_workers

    launch_workers("tests.support.workers.callback_paths", ["--out", str(tmp_path)])
    assert sorted(os.listdir(tmp_path / "backup")) == ["worker_0", "worker_1"]
    assert all(os.listdir(tmp_path / "backup" / worker) for worker in ["worker_0", "worker_1"])
    assert sorted(os.listdir(tmp_path / "ckpt")) == [".workers", "model.keras"]
    assert os.listdir(tmp_path / "ckpt" / ".workers") == ["worker_1"]
    assert os.path.isdir(tmp_path / "logs" / "train") and os.listdir(tmp_path / ".workers") == ["worker_1"]
    final = [np.array(w) for w in json.loads((tmp_path / "weights_0.json").read_text())]
    saved = keras.models.load_model(tmp_path / "ckpt" / "model.keras").get_weights()
    for expected, actual in zip(final, saved):
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-7)
