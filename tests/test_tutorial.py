"""The CIFAR-10 tutorial runs unchanged on one device, 2 CPU replicas and 2 workers."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import pytest

import lepton_keras
from tests.support.cases import tutorial_module
from tests.support.harness import REPO_ROOT

TUTORIAL = os.path.join(REPO_ROOT, "tutorials", "cifar10_cnn.py")


def check_summary(output_dir, replicas, workers):
    with open(os.path.join(output_dir, "summary.json")) as file:
        summary = json.load(file)
    assert summary["source"] == "sample"
    assert (summary["replicas"], summary["workers"]) == (replicas, workers)
    assert 0.0 <= summary["final_validation_accuracy"] <= 1.0
    # Two honest rates: the steady state is faster than the whole fit's wall clock, which
    # includes the first steps (tracing) and the validation.
    assert 0 < summary["fit_images_per_second"] < summary["steady_state_images_per_second"]
    assert summary["fit_seconds"] > 0
    assert len(summary["history"]["loss"]) == 1
    with open(os.path.join(output_dir, "curves.png"), "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    return summary


def test_the_model_is_the_documented_cnn():
    model = tutorial_module().build_model()
    layers = [(type(layer).__name__, getattr(layer, "filters", None) or getattr(layer, "units", None)) for layer in model.layers]
    assert layers == [
        ("Conv2D", 32), ("MaxPooling2D", None), ("Conv2D", 64), ("MaxPooling2D", None),
        ("Flatten", None), ("Dense", 512), ("Dense", 10),
    ]  # fmt: skip
    assert model.layers[0].kernel_size == (3, 3) and model.layers[1].pool_size == (2, 2)
    assert model.layers[-1].activation.__name__ == "softmax" and model.layers[-2].activation.__name__ == "relu"


@pytest.mark.parametrize("replicas", [1, 2])
def test_smoke_run_in_this_process(tmp_path, capsys, replicas):
    argv = ["--smoke", "--output-dir", str(tmp_path)] + (["--cpu-replicas", "2"] if replicas > 1 else [])
    summary = tutorial_module().main(argv)
    assert summary == check_summary(tmp_path, replicas, 1)
    output = capsys.readouterr().out
    assert "CIFAR-10 from sample" in output and "final validation accuracy" in output
    assert "images/s in steady state" in output and "images/s over the whole fit" in output


def test_gradient_communication_flags_reach_the_strategy(tmp_path, capsys):
    argv = ["--smoke", "--output-dir", str(tmp_path), "--cpu-replicas", "2", "--bucket-bytes", "100000",
            "--gradient-compression", "bfloat16"]
    plain = tutorial_module().main(["--smoke", "--output-dir", str(tmp_path / "plain"), "--cpu-replicas", "2"])
    compressed = tutorial_module().main(argv)
    assert compressed == check_summary(tmp_path, 2, 1)
    # The same first epoch, its gradients summed in bfloat16: close to, not equal to, the float32 path.
    assert compressed["history"]["loss"][0] != plain["history"]["loss"][0]
    assert abs(compressed["history"]["loss"][0] - plain["history"]["loss"][0]) < 0.05
    with pytest.raises(SystemExit):
        tutorial_module().parse_args(["--gradient-compression", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_periodic_sync_flags_reach_the_strategy(tmp_path, capsys):
    argv = ["--smoke", "--output-dir", str(tmp_path), "--cpu-replicas", "2", "--sync-every", "3",
            "--sync-warmup-steps", "1", "--outer-optimizer", "diloco"]
    summary = tutorial_module().main(argv)
    assert summary == check_summary(tmp_path, 2, 1)
    assert (summary["sync_every"], summary["sync_warmup_steps"], summary["outer_optimizer"]) == (3, 1, "diloco")
    with pytest.raises(ValueError, match="^every must be an integer >= 1"):
        tutorial_module().main(["--smoke", "--output-dir", str(tmp_path), "--sync-every", "0"])


@pytest.mark.multiworker
def test_the_same_script_runs_as_two_workers(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lepton_keras.cli", "launch", "--workers", "2", "--",
         sys.executable, TUTORIAL, "--smoke", "--output-dir", str(tmp_path), "--sync-every", "2"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for index in range(2):
        assert f"[worker {index}] final validation accuracy" in result.stdout
    assert check_summary(tmp_path, replicas=2, workers=2)["sync_every"] == 2  # periodic sync, with validation
    written = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    assert sorted(written) == sorted([str(tmp_path / "summary.json"), str(tmp_path / "curves.png")])  # chief only


@pytest.mark.multiworker
def test_the_same_script_runs_on_a_parameter_server_cluster(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lepton_keras.cli", "launch", "--workers", "2", "--ps", "1", "--",
         sys.executable, TUTORIAL, "--smoke", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[chief 0] final validation accuracy" in result.stdout
    assert "[worker 1] lepton_keras: worker 1 serving the chief" in result.stdout
    assert check_summary(tmp_path, replicas=1, workers=2)["strategy"] == "ParameterServerStrategy"


def test_the_optimizer_flag_takes_registry_names(tmp_path):
    summary = tutorial_module().main(
        ["--smoke", "--optimizer", "lookahead_radam", "--learning-rate", "0.002", "--output-dir", str(tmp_path)]
    )
    assert summary["optimizer"] == "lookahead_radam"
    assert 0.0 <= summary["final_validation_accuracy"] <= 1.0


def test_smoke_run_with_the_fast_recipe(tmp_path):
    summary = tutorial_module().main(
        ["--smoke", "--recipe", "fast", "--label-smoothing", "0", "--output-dir", str(tmp_path)]
    )
    assert summary == check_summary(tmp_path, 1, 1)
    choices = summary["recipe_choices"]
    assert summary["recipe"] == "fast" and (summary["optimizer"], summary["global_batch_size"]) == ("adabelief", 64)
    assert (choices["schedule"], choices["augment"], choices["weight_decay"]) == ("one_cycle", True, 0.05)
    assert choices["label_smoothing"] == 0.0  # the explicit flag overrides the recipe's 0.1
    assert len(summary["epoch_seconds"]) == 1


@pytest.mark.parametrize("batch, epochs, train_limit, optimizer, augment", [
    (512, 30, None, "adabelief", True),
    (2048, 30, None, "lamb", True),  # 630 steps
    (8192, 30, None, "lamb", False),  # 150 steps: fewer than MIN_STEPS_TO_AUGMENT
    (8192, 90, None, "lamb", True),  # 450 steps
    (2048, 30, 20_000, "lamb", False),  # 270 steps of the 20,000 images
])
def test_the_large_batch_recipe_flags_resolve_to_scale_recipe_s_choices(batch, epochs, train_limit, optimizer,
                                                                         augment):  # fmt: skip
    tutorial = tutorial_module()
    argv = ["--recipe", "large-batch", "--batch-size", str(batch), "--epochs", str(epochs)]
    limit = ["--train-limit", str(train_limit)] if train_limit else []
    recipe = tutorial.resolve_recipe(tutorial.parse_args(argv + limit))
    fast = tutorial.RECIPES["fast"]
    scaled = lepton_keras.distribute.scale_recipe(
        learning_rate=fast.learning_rate, base_batch_size=fast.batch_size, batch_size=batch, optimizer=fast.optimizer,
        warmup_epochs=fast.warmup_fraction * epochs, epochs=epochs, critical_batch_size=tutorial.CRITICAL_BATCH_SIZE,
    )  # fmt: skip
    assert (recipe.optimizer, recipe.batch_size, recipe.augment) == (optimizer, batch, augment)
    assert recipe.learning_rate == scaled.learning_rate
    assert recipe.learning_rate == pytest.approx(4e-3 * (min(batch, 2048) / 128) ** 0.5, rel=1e-12)  # capped
    assert recipe.warmup_fraction == pytest.approx(scaled.warmup_epochs / epochs, rel=1e-12)
    assert (recipe.schedule, recipe.weight_decay, recipe.label_smoothing) == ("one_cycle", 0.05, 0.1)
    explicit = tutorial.resolve_recipe(tutorial.parse_args(argv + ["--augment", "--learning-rate", "0.02"]))
    assert (explicit.augment, explicit.learning_rate) == (True, 0.02)  # explicit flags override the recipe


def run_importing(*argv):
    """Runs argv under `python -X importtime`: (result, the names of the modules it imported)."""
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, timeout=60,
                            cwd=REPO_ROOT)  # fmt: skip
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "argparse" in imported
    return result, [name for name in imported if name.split(".")[0] in ("tensorflow", "keras", "numpy")]


@pytest.mark.parametrize("tutorial", ["cifar10_cnn", "regularization", "adam_from_scratch"])
def test_help_answers_without_importing_tensorflow(tutorial):
    result, heavy = run_importing(os.path.join(REPO_ROOT, "tutorials", f"{tutorial}.py"), "--help")
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
    assert heavy == []


def test_a_bad_flag_is_one_usage_error_without_importing_tensorflow():
    result, heavy = run_importing(TUTORIAL, "--epochs", "ten")
    assert result.returncode == 2 and "Traceback" not in result.stderr and heavy == []
    assert "error: argument --epochs: invalid int value: 'ten'" in result.stderr


@pytest.mark.parametrize("tutorial", ["cifar10_cnn", "regularization"])
def test_the_data_sources_of_the_tutorials_are_the_package_s(tutorial):
    assert tutorial_module(tutorial).DATA_SOURCES == lepton_keras.data.SOURCES


def test_a_schedule_free_optimizer_trains_at_a_constant_rate_after_its_warm_up_and_validates_at_x():
    tutorial = tutorial_module()
    recipe = tutorial.resolve_recipe(tutorial.parse_args(["--recipe", "fast", "--optimizer", "schedule_free_adamw"]))
    assert (recipe.schedule, recipe.learning_rate, recipe.warmup_fraction) == ("constant", 4e-3, 0.25)
    optimizer, _, callbacks = tutorial.build_training(recipe, 400)
    assert isinstance(optimizer, lepton_keras.optimizers.ScheduleFreeAdamW)
    config = optimizer.get_config()
    assert (config["learning_rate"], config["warmup_steps"], config["weight_decay"]) == pytest.approx((4e-3, 100, 0.05))
    assert [type(c) for c in callbacks] == [lepton_keras.callbacks.ScheduleFreeEvaluation]
    # An explicit --schedule is kept, without the optimizer's warm-up and without a cycle of beta_1 (not a momentum).
    argv = ["--recipe", "fast", "--optimizer", "lookahead_schedule_free_adamw", "--schedule", "one_cycle"]
    explicit = tutorial.resolve_recipe(tutorial.parse_args(argv))
    optimizer, _, callbacks = tutorial.build_training(explicit, 400)
    config = optimizer.inner_optimizer.get_config()
    assert (config["learning_rate"]["class_name"], config["warmup_steps"]) == ("OneCycle", 0)
    assert [type(c) for c in callbacks] == [lepton_keras.callbacks.ScheduleFreeEvaluation]
    with pytest.raises(ValueError, match="^schedule_free_adamw already evaluates an average of its iterates"):
        tutorial.build_training(dataclasses.replace(recipe, ema_decay=0.99), 400)


def test_muon_trains_the_kernels_at_0_02_and_the_rest_by_adamw_at_the_recipe_s_rate():
    tutorial = tutorial_module()
    recipe = tutorial.resolve_recipe(tutorial.parse_args(["--recipe", "fast", "--optimizer", "muon"]))
    model = tutorial.build_model()
    optimizer, _, callbacks = tutorial.build_training(recipe, 400, output_layer=model.layers[-1].name)
    assert isinstance(optimizer, lepton_keras.optimizers.Muon)
    assert optimizer.get_config()["learning_rate"]["config"]["maximal_learning_rate"] == 0.02
    assert optimizer.adamw_learning_rate.maximal_learning_rate == 4e-3
    # The same shrinkage per step as the recipe's 0.05 at 4e-3: 0.01, the author's example value.
    assert optimizer.muon_weight_decay == pytest.approx(0.01, rel=1e-12) and optimizer.adamw_weight_decay == 0.05
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    assert [optimizer.orthogonalizes(kernel) for kernel in kernels] == [True, True, True, False]  # the output: AdamW
    assert [type(c) for c in callbacks] == [lepton_keras.callbacks.CycleMomentum]


class RecordMomentum(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(self.model.optimizer.momentum)


def test_smoke_run_with_muon_cycles_its_momentum(tmp_path, capsys):
    recorder = RecordMomentum()
    summary = tutorial_module().main(["--smoke", "--recipe", "fast", "--optimizer", "muon", "--output-dir",
                                      str(tmp_path)], callbacks=[recorder])  # fmt: skip
    assert summary == check_summary(tmp_path, 1, 1) and summary["optimizer"] == "muon"
    schedule = lepton_keras.schedules.OneCycle(0.02, 4, pct_start=0.5)  # --smoke: 4 steps, 2 of them rising
    expected = [float(keras.ops.convert_to_numpy(schedule.momentum(step))) for step in range(4)]
    assert recorder.values == pytest.approx(expected, abs=1e-7) and len(set(recorder.values)) > 1
    assert "CycleMomentum cycles Muon's momentum" in capsys.readouterr().out


def test_smoke_run_with_schedule_free_adamw(tmp_path, capsys):
    summary = tutorial_module().main(["--smoke", "--recipe", "fast", "--optimizer", "schedule_free_adamw",
                                      "--output-dir", str(tmp_path)])  # fmt: skip
    assert summary == check_summary(tmp_path, 1, 1) and summary["recipe_choices"]["schedule"] == "constant"
    assert "a constant rate after the optimizer's linear warm-up (1 steps)" in capsys.readouterr().out
