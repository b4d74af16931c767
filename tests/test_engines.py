"""The Slurm and Kubernetes examples: the tutorial reads its cluster from Slurm's variables on 2 real
worker processes, and both examples start the tutorial with flags it accepts (Ray: tests/integrations)."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from lepton_keras.distribute import task_info
from lepton_keras.distribute.launcher import free_ports
from tests.support.cases import tutorial_module
from tests.support.harness import REPO_ROOT

TUTORIAL = os.path.join(REPO_ROOT, "tutorials", "cifar10_cnn.py")
SBATCH = os.path.join(REPO_ROOT, "tutorials", "slurm", "cifar10.sbatch")
TFJOB = os.path.join(REPO_ROOT, "tutorials", "kubernetes", "tfjob.yaml")
SBATCH_PS = os.path.join(REPO_ROOT, "tutorials", "slurm", "cifar10_parameter_server.sbatch")
TFJOB_PS = os.path.join(REPO_ROOT, "tutorials", "kubernetes", "tfjob_parameter_server.yaml")


def _consecutive_free_ports(count=2):
    """A free port whose `count - 1` successors are free too (Slurm's tasks on a node take consecutive ports)."""
    for _ in range(50):
        base = free_ports(1)[0]
        try:
            for offset in range(1, count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError(f"found no {count} consecutive free ports")


def _start_slurm_tasks(tmp_path, count, *flags):
    """The tutorial as `count` tasks of one Slurm job step on 127.0.0.1, with the variables srun sets."""
    base = _consecutive_free_ports(count)
    slurm = {"SLURM_STEP_NUM_TASKS": str(count), "SLURM_STEP_NODELIST": "127.0.0.1",
             "SLURM_STEP_TASKS_PER_NODE": str(count)}  # fmt: skip
    command = [sys.executable, TUTORIAL, "--smoke", "--data-source", "sample", "--cluster-resolver", "slurm",
               "--slurm-port-base", str(base), "--cpu-threads", "1", "--output-dir", str(tmp_path), *flags]
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    env.update(slurm, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return [
        subprocess.Popen(command, env={**env, "SLURM_PROCID": str(rank)}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for rank in range(count)
    ]


@pytest.mark.multiworker
def test_the_tutorial_trains_on_two_workers_from_slurm_s_variables(tmp_path):
    tasks = _start_slurm_tasks(tmp_path, 2, "--backup-dir", str(tmp_path / "backup"))
    outputs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], "\n".join(outputs)[-6000:]
    summary = json.loads((tmp_path / "summary.json").read_text())  # the chief's (task 0) only
    assert (summary["strategy"], summary["workers"], summary["replicas"]) == ("MultiWorkerMirroredStrategy", 2, 2)
    assert "wrote" in outputs[0] and "wrote" not in outputs[1]
    assert not (tmp_path / "backup").exists()  # both workers backed up, and removed their backups at the end


@pytest.mark.multiworker
def test_the_tutorial_trains_on_a_parameter_server_cluster_from_slurm_s_variables(tmp_path):
    tasks = _start_slurm_tasks(tmp_path, 4, "--slurm-ps", "1")  # task 0 the chief, 1 the ps, 2 and 3 the workers
    try:
        chief_output = tasks[0].communicate(timeout=300)[0]  # the servers serve until stopped, as srun's --wait does
    finally:
        for task in tasks[1:]:
            task.kill()
    assert tasks[0].returncode == 0, chief_output[-6000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["strategy"], summary["workers"], summary["replicas"]) == ("ParameterServerStrategy", 2, 1)
    outputs = [task.communicate()[0] for task in tasks[1:]]
    assert ["ps 0 serving" in outputs[0], "worker 0 serving" in outputs[1], "worker 1 serving" in outputs[2]] == [
        True, True, True], outputs  # fmt: skip


def _tutorial_flags(command_text):
    """The tutorial's flags in a shell command, with the script's variables given example values."""
    text = command_text.replace("\\\n", " ").replace('"$SLURM_CPUS_PER_TASK"', "8")
    text = re.sub(r'"\$[A-Z_]+([^"]*)"', r"/shared/run\1", text)
    words = shlex.split(text)
    return words[words.index("tutorials/cifar10_cnn.py") + 1 :]


def test_the_slurm_script_is_valid_bash_and_starts_the_tutorial_with_its_flags():
    subprocess.run(["bash", "-n", SBATCH], check=True)
    text = open(SBATCH).read()
    assert re.search(r"^#SBATCH --nodes=2$", text, re.M) and re.search(r"^#SBATCH --ntasks-per-node=1$", text, re.M)
    srun = re.search(r"^srun .*?(?<!\\)$", text, re.M | re.S).group(0)
    flags = _tutorial_flags(srun)
    args = tutorial_module().parse_args(flags)
    assert (args.cluster_resolver, args.cpu_threads, args.recipe, args.epochs) == ("slurm", 8, "fast", 30)
    assert args.backup_dir and args.output_dir  # on the shared run folder


def test_the_tfjob_has_a_chief_and_workers_that_run_the_tutorial_on_a_shared_volume(monkeypatch):
    yaml = pytest.importorskip("yaml")  # installed with the Ray extra
    job = yaml.safe_load(open(TFJOB))
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    replicas = job["spec"]["tfReplicaSpecs"]
    assert {kind: spec["replicas"] for kind, spec in replicas.items()} == {"Chief": 1, "Worker": 2}
    for spec in replicas.values():
        container = spec["template"]["spec"]["containers"][0]
        assert container["name"] == "tensorflow"
        args = tutorial_module().parse_args(container["command"][2:])
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert args.backup_dir.startswith("/runs/") and args.output_dir == "/runs" and "/runs" in mounts
        assert args.cpu_threads == int(container["resources"]["limits"]["cpu"])
    # The TF_CONFIG the operator writes for it: 3 training processes, the chief writes.
    cluster = {"chief": ["cifar10-chief-0.default.svc:2222"],
               "worker": [f"cifar10-worker-{i}.default.svc:2222" for i in range(2)]}  # fmt: skip
    infos = []
    for kind, index in (("chief", 0), ("worker", 0), ("worker", 1)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))
        infos.append(task_info())
    assert [(info.num_workers, info.worker_index, info.is_chief) for info in infos] == [
        (3, 0, True), (3, 1, False), (3, 2, False)]  # fmt: skip


def test_the_parameter_server_examples_start_the_tutorial_with_its_flags(monkeypatch):
    subprocess.run(["bash", "-n", SBATCH_PS], check=True)
    text = open(SBATCH_PS).read()
    srun = re.search(r"^srun .*?(?<!\\)$", text, re.M | re.S).group(0)
    assert "--wait=" in srun  # the servers never exit: srun stops them after the chief
    args = tutorial_module().parse_args(_tutorial_flags(srun))
    assert (args.cluster_resolver, args.slurm_ps, args.recipe) == ("slurm", 1, "sprint")
    tasks = int(re.search(r"^#SBATCH --nodes=(\d+)$", text, re.M).group(1)) * int(
        re.search(r"^#SBATCH --ntasks-per-node=(\d+)$", text, re.M).group(1))
    assert tasks == 4  # a chief, a parameter server and 2 workers
    yaml = pytest.importorskip("yaml")
    job = yaml.safe_load(open(TFJOB_PS))
    replicas = job["spec"]["tfReplicaSpecs"]
    assert {kind: spec["replicas"] for kind, spec in replicas.items()} == {"Chief": 1, "Worker": 2, "PS": 1}
    for spec in replicas.values():
        container = spec["template"]["spec"]["containers"][0]
        args = tutorial_module().parse_args(container["command"][2:])
        assert args.backup_dir.startswith("/runs/") and args.cpu_threads == int(container["resources"]["limits"]["cpu"])
    # The operator's TF_CONFIGs: the chief coordinates, the 2 workers train, the parameter server holds.
    cluster = {"chief": ["cifar10-ps-chief-0.default.svc:2222"], "ps": ["cifar10-ps-ps-0.default.svc:2222"],
               "worker": [f"cifar10-ps-worker-{i}.default.svc:2222" for i in range(2)]}  # fmt: skip
    infos = []
    for kind, index in (("chief", 0), ("worker", 0), ("worker", 1), ("ps", 0)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))
        infos.append(task_info())
    assert [(info.num_workers, info.worker_index, info.is_chief, info.parameter_servers) for info in infos] == [
        (2, None, True, 1), (2, 0, False, 1), (2, 1, False, 1), (2, None, False, 1)]  # fmt: skip
