import json
import subprocess
import sys

import pytest
import tensorflow as tf

from lepton_keras.distribute import configure_cpu_devices, get_strategy
from tests.conftest import CPU_DEVICES
from tests.harness import REPO_ROOT


def test_default_strategy_on_one_device(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = get_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert get_strategy("default") is strategy


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("kind", ["auto", "mirrored"])
def test_cpu_replicas_give_a_mirrored_strategy(kind, replicas):
    strategy = get_strategy(kind, cpu_replicas=replicas)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == replicas
    assert strategy.extended.worker_devices == tuple(
        f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(replicas)
    )


def test_logical_devices_asked_for_after_initialisation_are_a_clear_error():
    assert len(configure_cpu_devices(2)) == CPU_DEVICES  # fewer than configured: nothing changes
    with pytest.raises(RuntimeError, match=rf"cannot split the CPU into 8 .*already initialised.*{CPU_DEVICES}"):
        configure_cpu_devices(8)
    with pytest.raises(RuntimeError, match="at the start of the program"):
        get_strategy(cpu_replicas=8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "tpu"}, "kind must be one of"),
        ({"communication": "mpi"}, "communication must be one of"),
        ({"bytes_per_pack": -1}, "bytes_per_pack must be a non-negative integer, received: -1"),
        ({"cpu_replicas": 0}, "cpu_replicas must be a positive integer"),
        ({"kind": "default", "cpu_replicas": 2}, "cpu_replicas applies to a MirroredStrategy"),
        ({"kind": "multi_worker"}, 'kind="multi_worker" needs a cluster'),
    ],
)
def test_bad_requests_are_clear_errors(monkeypatch, kwargs, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=message):
        get_strategy(**kwargs)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{'cluster': 1}", "TF_CONFIG is not valid JSON"),
        (
            json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 2}}),
            "task index 2 is outside the cluster",
        ),
    ],
)
def test_malformed_tf_config_is_a_clear_error(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        get_strategy()


def test_cpu_replicas_with_a_cluster_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}})
    )
    with pytest.raises(ValueError, match=r"not to kind='multi_worker' \(a cluster is configured\)"):
        get_strategy(cpu_replicas=2)




def test_auto_uses_a_cluster_resolver_passed_in():
    # A fresh process: a multi-worker strategy must be the first thing TensorFlow creates.
    program = """
import tensorflow as tf
from lepton_keras.distribute import get_strategy
from lepton_keras.distribute.launcher import free_ports
resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
    tf.train.ClusterSpec({"worker": [f"127.0.0.1:{free_ports(1)[0]}"]}), task_type="worker", task_id=0)
strategy = get_strategy(cluster_resolver=resolver, communication="ring", bytes_per_pack=4096)
options = strategy.extended._communication_options
print(options.bytes_per_pack, options.implementation.name)
print(type(strategy).__name__, strategy.num_replicas_in_sync, strategy.cluster_resolver is resolver)
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin", "PYTHONPATH": REPO_ROOT},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-5:] == ["4096", "RING", "CollectiveAllReduceStrategy", "1", "True"]
