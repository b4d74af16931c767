"""What a Keras user does first works as they write it: from a fresh process, with only
`import lepton_keras`, by the names Keras users type."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import lepton_keras
from lepton_keras.optimizers import registry
from tests.support.harness import REPO_ROOT


def run_python(code: str, *, timeout=240) -> str:
    """Runs `code` in a fresh interpreter from the repository root; returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
        cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def lepton_registered_names() -> list[str]:
    """The lepton_keras classes registered in this process, but for the optional integrations (ray)."""
    return sorted(
        name for name, value in keras.saving.get_custom_objects().items()
        if name.startswith("lepton_keras>") and not value.__module__.startswith("lepton_keras.integrations.")
    )  # fmt: skip


def test_import_lepton_keras_alone_registers_every_class():
    # This process has imported every module of the package (conftest, the other tests).
    expected = lepton_registered_names()
    assert len(expected) >= 40, expected
    output = run_python("""
        import keras
        import lepton_keras
        print("\\n".join(sorted(n for n in keras.saving.get_custom_objects() if n.startswith("lepton_keras>"))))
    """)
    assert output.split() == expected


def test_a_saved_model_loads_in_a_fresh_process_after_import_lepton_keras(tmp_path):
    path = tmp_path / "model.keras"
    run_python(f"""
        import keras, numpy as np, lepton_keras
        from lepton_keras import layers, optimizers, schedules, initializers
        inputs = keras.Input((8, 8, 3))
        x = layers.WeightNormalization(keras.layers.Conv2D(4, 3, padding="same",
            kernel_initializer=initializers.DeltaOrthogonal(seed=1)))(inputs)
        x = layers.StochasticDepth(0.8, seed=2)([x, keras.layers.Conv2D(4, 3, padding="same")(x)])
        x = layers.DropBlock2D(rate=0.1, block_size=3, seed=3)(x)
        x = layers.MVRegularization(keras.layers.Dense(2), lambda_=1e-3)(keras.layers.Flatten()(x))
        model = keras.Model(inputs, x)
        schedule = schedules.Warmup(keras.optimizers.schedules.CosineDecay(1e-2, 100), 5)
        model.compile(optimizer=optimizers.Lookahead(optimizers.RAdam(schedule), sync_period=2), loss="mse")
        rng = np.random.default_rng(0)
        model.fit(rng.normal(size=(16, 8, 8, 3)), rng.normal(size=(16, 2)), batch_size=8, epochs=1, verbose=0)
        model.save({str(path)!r})
        np.save({str(tmp_path / "x.npy")!r}, rng.normal(size=(4, 8, 8, 3)))
        np.save({str(tmp_path / "y.npy")!r}, model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0))
    """)
    output = run_python(f"""
        import keras, numpy as np
        import lepton_keras
        model = keras.saving.load_model({str(path)!r})
        x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
        print(type(model.optimizer).__name__, type(model.optimizer.inner_optimizer).__name__,
              float(np.max(np.abs(model.predict(x, verbose=0) - y))))
    """)
    outer, inner, difference = output.split()[-3:]
    assert (outer, inner) == ("Lookahead", "RAdam") and float(difference) == 0.0


def test_every_lepton_keras_name_resolves_in_keras_s_own_lookups():
    # Keras 3.15 reads its custom-object registry; keras-nightly 3.16 only its own table (keras_compat item 10).
    assert registry.register_keras_names() in ("registry", "table")
    for cls in (lepton_keras.optimizers.RAdam, lepton_keras.optimizers.Lookahead):
        name = keras.saving.get_registered_name(cls)  # "lepton_keras>RAdam", as a saved config names it
        if cls is lepton_keras.optimizers.Lookahead:
            with pytest.raises((TypeError, ValueError), match="inner_optimizer"):  # it needs an optimizer to wrap
                keras.optimizers.get(name)
        else:
            assert type(keras.optimizers.get(name)) is cls
    assert type(keras.initializers.get("delta_orthogonal")).__name__ == "DeltaOrthogonal"
    assert type(keras.initializers.get("lepton_keras>DeltaOrthogonal")).__name__ == "DeltaOrthogonal"


def optimizer_chain(optimizer) -> list[str]:
    chain = [type(optimizer).__name__]
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
        chain.append(type(optimizer).__name__)
    return chain


@pytest.mark.parametrize("name", registry.keras_names())
def test_every_registry_name_works_in_model_compile(name):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    if registry.REGISTRY.get(name) is not None and registry.REGISTRY[name].kind == "wrapper":
        with pytest.raises(ValueError, match="names a wrapper without an optimizer to wrap"):
            model.compile(optimizer=name, loss="mse")
        return
    model.compile(optimizer=name, loss="mse")
    if name in KERAS_OWN_NAMES:  # Keras's names stay Keras's: "muon" is keras.optimizers.Muon there
        assert type(model.optimizer) is getattr(keras.optimizers, type(model.optimizer).__name__)
    else:
        assert optimizer_chain(model.optimizer) == optimizer_chain(lepton_keras.optimizers.get(name))
    assert optimizer_chain(keras.optimizers.get(name)) == optimizer_chain(model.optimizer)


KERAS_OWN_NAMES = {"muon", *(name for name, entry in registry.REGISTRY.items() if entry.kind == "keras")}


def test_a_name_keras_has_stays_keras_s_and_a_saved_keras_optimizer_loads_as_keras_s(tmp_path):
    assert "muon" in registry.REGISTRY and type(lepton_keras.optimizers.get("muon")) is lepton_keras.optimizers.Muon
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="muon", loss="mse")
    assert type(model.optimizer) is keras.optimizers.Muon
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    model.save(tmp_path / "keras_muon.keras")
    assert type(keras.saving.load_model(tmp_path / "keras_muon.keras").optimizer) is keras.optimizers.Muon
    assert type(keras.optimizers.get("lookahead_muon").inner_optimizer) is lepton_keras.optimizers.Muon


@pytest.mark.parametrize("name", ["radam", "adabelief", "lookahead_radam", "clipping_adam"])
def test_an_optimizer_compiled_by_name_trains_like_the_registry_one(name):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
    weights = []
    for optimizer in (name, lepton_keras.optimizers.get(name)):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for by_name, by_registry in zip(*weights):
        np.testing.assert_array_equal(by_name, by_registry)


def test_deeper_compositions_are_the_registry_s_only():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="Could not interpret optimizer identifier"):
        model.compile(optimizer="lookahead_clipping_radam", loss="mse")
    model.compile(optimizer=lepton_keras.optimizers.get("lookahead_clipping_radam"), loss="mse")
    assert optimizer_chain(model.optimizer) == ["Lookahead", "GradientClipping", "RAdam"]


def test_initializers_by_their_keras_style_name():
    layer = keras.layers.Conv2D(4, 3, kernel_initializer="delta_orthogonal")
    layer.build((None, 8, 8, 4))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    centre = kernel[1, 1]
    np.testing.assert_allclose(centre.T @ centre, np.eye(4), atol=1e-5)
    assert np.count_nonzero(kernel) == np.count_nonzero(centre)


def test_a_failing_lazy_import_names_its_cause(tmp_path, monkeypatch):
    # A module of lepton_keras.distribute that fails at import with an AttributeError, as
    # keras_compat did when Keras renamed a class.
    (tmp_path / "broken_for_test.py").write_text("import keras\nkeras.NoSuchAttributeInThisRelease\n")
    monkeypatch.setattr(lepton_keras.distribute, "__path__", [*lepton_keras.distribute.__path__, str(tmp_path)])
    monkeypatch.setitem(lepton_keras.distribute._LAZY, "broken_helper", "broken_for_test")
    with pytest.raises(ImportError, match="broken_for_test failed to import: AttributeError.*NoSuchAttributeInThisRelease"):
        from lepton_keras.distribute import broken_helper  # noqa: F401
    sys.modules.pop("lepton_keras.distribute.broken_for_test", None)


STARTUP_LINES = [  # what `import tensorflow` printed on the project's CPU machine (TensorFlow 2.21)
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796114145.948586   27939 port.cc:153] oneDNN custom operations are on.\n",
    b"I0000 00:00:1796114145.950750   27939 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n",
    b"I0000 00:00:1796114164.297745   29091 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n",
    b"To enable the following instructions: AVX2 AVX512F, in other operations, rebuild TensorFlow.\n",
    b"W0000 00:00:1796114164.3 29091 some.cc:1] a real warning\n",
    b"E0000 00:00:1796114149.290932   27939 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
    b"E0000 00:00:1796114149.3 27939 other.cc:9] a real error\n",
]


def test_only_tensorflow_s_start_up_noise_is_dropped():
    from lepton_keras._tensorflow_logs import startup_noise

    assert startup_noise(STARTUP_LINES, has_gpu=False) == [True] * 5 + [False, True, False]
    # With a GPU, a failed CUDA initialisation is news.
    assert startup_noise(STARTUP_LINES, has_gpu=True) == [True] * 5 + [False, False, False]


def test_import_lepton_keras_prints_none_of_tensorflow_s_start_up_noise():
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", "import lepton_keras, tensorflow as tf; tf.constant(1.0)"],
                            capture_output=True, text=True, timeout=240, cwd=REPO_ROOT, env=environment)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "I0000" not in result.stderr and "cuInit" not in result.stderr and "absl::InitializeLog" not in result.stderr
    shown = subprocess.run([sys.executable, "-c", "import lepton_keras"], capture_output=True, text=True, timeout=240,
                           cwd=REPO_ROOT, env={**environment, "TF_CPP_MIN_LOG_LEVEL": "0"})  # fmt: skip
    assert "I0000" in shown.stderr  # TF_CPP_MIN_LOG_LEVEL=0: everything, as TensorFlow prints it
