"""Datasets as tf.data pipelines: CIFAR-10 from tensorflow-datasets, an image folder, or the bundled sample."""

from lepton_keras.data.cifar10 import CLASS_NAMES, SOURCES, Cifar10, load_cifar10, tfds_prepared
from lepton_keras.data.epochs import epoch_dataset

__all__ = ["CLASS_NAMES", "SOURCES", "Cifar10", "epoch_dataset", "load_cifar10", "tfds_prepared"]
