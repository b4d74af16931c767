"""The `lepton-keras` command (lepton_keras/cli.py): help without TensorFlow, lr-find's one-line errors, its model and a run.

`lepton-keras launch` itself is tested with the launcher (tests/distribute/test_launcher.py).
"""

import os
import subprocess
import sys

import pytest

from lepton_keras import cli
from tests.support.cases import tutorial_module

# The console script itself: `python -m lepton_keras.cli` would import TensorFlow (lepton_keras does).
COMMAND = os.path.join(os.path.dirname(sys.executable), "lepton-keras")


@pytest.mark.parametrize("args", [["--help"], ["launch", "--help"], ["lr-find", "--help"]])
def test_help_answers_without_importing_tensorflow(args):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", COMMAND, *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "usage: lepton-keras" in result.stdout, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "lepton_keras.cli" in imported and not imported & {"tensorflow", "keras"}

@pytest.mark.parametrize(
    "args, message",
    [
        (["--data-dir", "/no/such/folder"], "--data-dir must be an existing folder, received: '/no/such/folder'"),
        (["--source", "folder"], "--source folder needs --data-dir"),
        (["--steps", "1"], "--steps must be an integer >= 2, received: 1"),
        (["--min-lr", "0"], "--min-lr must be a finite number > 0, received: 0.0"),
        (["--optimizer", "no_such_optimizer"], "unknown optimizer name 'no_such_optimizer'"),
        (["--batch-size", "0"], "--batch-size must be"),
        (["--cpu-replicas", "0"], "--cpu-replicas must be an integer >= 1 or None, received: 0"),
    ],
)
def test_bad_lr_find_requests_are_one_line_errors(capsys, args, message):
    # An unknown optimizer name used to end in a traceback (so did "radam": keras.optimizers.get).
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["lr-find", "--source", "sample", "--steps", "3", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"lepton-keras lr-find: error: {message}"), err

@pytest.mark.parametrize("optimizer", ["radam", "lookahead_adabelief"])
def test_lr_find_takes_every_registry_name(tmp_path, capsys, optimizer):
    status = cli.main(["lr-find", "--source", "sample", "--train-limit", "64", "--batch-size", "16", "--steps", "3",
                       "--optimizer", optimizer, "--output-dir", str(tmp_path)])  # fmt: skip
    assert status == 0
    assert "ran 3 of 3 steps" in capsys.readouterr().out

def test_the_cli_model_is_the_tutorial_cnn():
    ours, tutorial = cli._cifar10_cnn(), tutorial_module().build_model()

    def architecture(model):
        return [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"})
                for layer in model.layers]  # fmt: skip

    assert architecture(ours) == architecture(tutorial)

def test_the_cli_runs_the_range_test_on_the_sample(tmp_path, capsys):
    status = cli.main(["lr-find", "--source", "sample", "--train-limit", "256", "--batch-size", "32",
                       "--steps", "12", "--output-dir", str(tmp_path)])  # fmt: skip
    assert status == 0
    output = capsys.readouterr().out
    assert "valley" in output and "steepest" in output
    assert sorted(os.listdir(tmp_path)) == ["lr_find.csv", "lr_find.png"]
