"""The tutorial for the benchmarks: tutorials/cifar10_cnn.py imported by path."""

import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tutorial():
    """tutorials/cifar10_cnn.py as a module (its recipes, build_model and build_training)."""
    name = "cifar10_cnn_tutorial"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "tutorials", "cifar10_cnn.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def build_model():
    """tutorials/cifar10_cnn.py's build_model(): the documented CNN, uncompiled."""
    return tutorial().build_model()
