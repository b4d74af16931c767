"""get_strategy, configure_cpu_devices and finish_job: the strategy for each request, its errors, and a
two-worker job whose chief exits last."""

import io
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from lepton_keras.distribute import configure_cpu_devices, get_strategy
from lepton_keras.distribute.launcher import launch
from lepton_keras.distribute.strategy import finish_job
from tests.conftest import CPU_DEVICES
from tests.distribute.test_cluster import MALFORMED_TF_CONFIGS
from tests.support.harness import REPO_ROOT


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
        ({"kind": "tpu"}, "kind must be one of 'auto', 'default', 'mirrored', 'multi_worker', 'parameter_server', received: 'tpu'"),
        ({"communication": "mpi"}, "communication must be one of 'auto', 'ring', 'nccl', received: 'mpi'"),
        ({"bytes_per_pack": -1}, "bytes_per_pack must be an integer >= 0, received: -1"),
        ({"bytes_per_pack": 1.5}, "bytes_per_pack must be an integer >= 0, received: 1.5"),
        ({"cpu_replicas": 0}, "cpu_replicas must be an integer >= 1 or None, received: 0"),
        ({"cpu_replicas": True}, "cpu_replicas must be an integer >= 1 or None, received: True"),
        ({"kind": "default", "cpu_replicas": 2}, "cpu_replicas applies to a MirroredStrategy"),
        ({"kind": "multi_worker"}, 'kind="multi_worker" needs a cluster'),
        ({"kind": "parameter_server"}, 'kind="parameter_server" needs a cluster with "ps" tasks'),
    ],
)
def test_bad_requests_are_clear_errors(monkeypatch, kwargs, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=message):
        get_strategy(**kwargs)


@pytest.mark.parametrize("tf_config, message", MALFORMED_TF_CONFIGS)
def test_malformed_tf_config_is_a_clear_error(monkeypatch, tf_config, message):
    # Checked before TensorFlow sees TF_CONFIG: parameter servers used to give a
    # MultiWorkerMirroredStrategy that hung, bad addresses TensorFlow's own errors or a hang.
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        get_strategy()
    with pytest.raises(ValueError, match=message):
        get_strategy("multi_worker")


def test_configure_cpu_devices_names_a_bad_count():
    with pytest.raises(ValueError, match="count must be an integer >= 1, received: 0"):
        configure_cpu_devices(0)


def test_finish_job_is_a_no_op_without_a_cluster():
    finish_job()
    finish_job(get_strategy("mirrored", cpu_replicas=2))
    with pytest.raises(ValueError, match="timeout_seconds must be a finite number > 0, received: 0"):
        finish_job(timeout_seconds=0)
    with pytest.raises(ValueError, match="strategy must be a tf.distribute.Strategy or None, received: 'mirrored'"):
        finish_job("mirrored")


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


# Worker 1 finishes 8 seconds after the chief (worker 0, which runs TensorFlow's coordination
# service). Without finish_job the chief exits first and worker 1's next heartbeat fails:
# "Failed to send RPC to coordination service"; the other way round, a chief that outlives a
# worker by about 10 seconds logs "tasks are unhealthy (stopped sending heartbeats)".
FINISH_JOB_WORKER = """
import json, os, sys, time
from lepton_keras.distribute import get_strategy
from lepton_keras.distribute.launcher import launch
from lepton_keras.distribute.strategy import finish_job
strategy = get_strategy()
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
time.sleep(8 if index == 1 else 0)
finish_job(strategy)
print("finished", index, time.time(), flush=True)
"""


@pytest.mark.multiworker
def test_finish_job_lets_the_chief_exit_last_without_coordination_errors():
    log = io.StringIO()
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    status = launch([sys.executable, "-c", FINISH_JOB_WORKER], 2, env=env, out=log, timeout_seconds=120)
    output = log.getvalue()
    assert status == 0, output
    finished = {int(line.split()[-2]): float(line.split()[-1]) for line in output.splitlines() if " finished " in line}
    assert sorted(finished) == [0, 1], output
    assert finished[0] >= finished[1], output  # the chief waited for worker 1
    assert "Failed to send RPC" not in output and "unhealthy" not in output, output
    assert not [line for line in output.splitlines() if "E0000" in line and "cuInit" not in line], output


_THREADS_PROGRAM = """
import tensorflow as tf
from lepton_keras.distribute import configure_cpu_threads
configure_cpu_threads(3)
threading = tf.config.threading
assert (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()) == (3, 3)
tf.constant(1.0) + 1.0  # TensorFlow starts with those pools
configure_cpu_threads(3)  # the same sizes again: nothing to change
try:
    configure_cpu_threads(2)
except RuntimeError as error:
    print(error)
"""


def test_configure_cpu_threads_sizes_both_pools_before_tensorflow_starts():
    result = subprocess.run([sys.executable, "-c", _THREADS_PROGRAM], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cannot size TensorFlow's thread pools to 2 CPU(s): TensorFlow already started with 3 intra-op" in result.stdout


def test_configure_cpu_threads_refuses_a_bad_count():
    from lepton_keras.distribute import configure_cpu_threads

    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="cpus"):
            configure_cpu_threads(bad)


def test_slurm_cluster_resolver_numbers_the_ports_of_cpu_nodes(monkeypatch):
    from lepton_keras.distribute import slurm_cluster_resolver

    # 4 tasks on 2 nodes without GPUs (no nvidia-smi here): TensorFlow's own resolver gives no addresses.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    slurm = {"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "node[01-02]",
             "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}  # fmt: skip
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    resolver = slurm_cluster_resolver(port_base=9000)
    assert resolver.cluster_spec().as_dict() == {"worker": ["node01:9000", "node01:9001", "node02:9000", "node02:9001"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 2) and "CUDA_VISIBLE_DEVICES" not in os.environ
    # With a parameter server: task 0 the chief, task 1 the parameter server, tasks 2 and 3 the workers.
    resolver = slurm_cluster_resolver(port_base=9000, ps=1)
    assert resolver.cluster_spec().as_dict() == {
        "chief": ["node01:9000"], "ps": ["node01:9001"], "worker": ["node02:9000", "node02:9001"]}  # fmt: skip
    assert (resolver.task_type, resolver.task_id) == ("worker", 0)
    with pytest.raises(ValueError, match="ps must be at most the step's 4 task"):
        slurm_cluster_resolver(ps=3)


PARAMETER_SERVER_TF_CONFIG = json.dumps({
    "cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]},
    "task": {"type": "chief", "index": 0},
})  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "multi_worker"}, "kind='multi_worker' cannot run on a cluster with \"ps\" tasks"),
        ({"gradient_communication": "bf16"}, "gradient_communication must be a GradientCommunication or None"),
        ({"periodic_sync": "every-4"}, "periodic_sync must be a PeriodicSync or None"),
    ],
)
def test_bad_requests_on_a_parameter_server_cluster_are_clear_errors_before_connecting(monkeypatch, kwargs, message):
    monkeypatch.setenv("TF_CONFIG", PARAMETER_SERVER_TF_CONFIG)
    with pytest.raises(ValueError, match=message):
        get_strategy(**kwargs)


def test_all_reduce_settings_are_refused_under_parameter_server_training(monkeypatch):
    from lepton_keras.distribute import GradientCommunication, PeriodicSync

    monkeypatch.setenv("TF_CONFIG", PARAMETER_SERVER_TF_CONFIG)
    for kwargs in ({"gradient_communication": GradientCommunication(compression="float16")},
                   {"periodic_sync": PeriodicSync(every=4)}):  # fmt: skip
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"{name} applies to synchronous replicas.*leave {name}=None"):
            get_strategy(**kwargs)
