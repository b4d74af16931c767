"""The tutorial's CNN for the benchmarks, imported from tutorials/cifar10_cnn.py by path."""

import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_model():
    """tutorials/cifar10_cnn.py's build_model(): the documented CNN, uncompiled."""
    name = "cifar10_cnn_tutorial"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "tutorials", "cifar10_cnn.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].build_model()
