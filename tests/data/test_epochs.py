"""Epochs of a training pipeline: a repeated dataset reshuffles every epoch, and each epoch is a pure function of
the seed and the epoch number, so a restarted job moved on with advance_epochs reads what the old one would have."""

import keras
import numpy as np

from lepton_keras.data import load_cifar10
from lepton_keras.data.epochs import advance_epochs


def test_a_repeated_dataset_reshuffles_every_epoch_and_trains_with_steps_per_epoch():
    data = load_cifar10("sample", shard=None, train_limit=256)
    steps = data.steps_per_epoch(64)
    batches = iter(data.train_dataset(64, seed=3, repeat=True, augment=True))
    epochs = [[next(batches) for _ in range(steps)] for _ in range(3)]
    labels = [np.concatenate([y.numpy() for _, y in epoch]) for epoch in epochs]
    for epoch_labels in labels:  # every image once per epoch
        np.testing.assert_array_equal(np.sort(epoch_labels), np.sort(data.train_labels))
    assert not np.array_equal(labels[0], labels[1]) and not np.array_equal(labels[1], labels[2])
    first_images = [epoch[0][0].numpy() for epoch in epochs]
    assert not np.array_equal(first_images[0], first_images[1])  # new order and new crops
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seen = []
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(batch))
    model.fit(data.train_dataset(64, repeat=True), epochs=3, steps_per_epoch=steps, verbose=0, callbacks=[callback])
    assert seen == list(range(steps)) * 3


def test_every_epoch_is_a_pure_function_of_the_seed_and_the_epoch():
    # What a restarted job relies on: a new pipeline, moved on to epoch e, reads epoch e of the old one.
    data = load_cifar10("sample", shard=None, train_limit=64, validation_limit=0)

    def read(batches):
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in batches])
        return np.concatenate(images), np.concatenate(labels)

    finite = data.train_dataset(16, seed=3, augment=True)
    epochs = [read(finite) for _ in range(3)]
    repeated = iter(data.train_dataset(16, seed=3, augment=True, repeat=True))
    for images, labels in epochs:
        np.testing.assert_array_equal(np.sort(labels), np.sort(data.train_labels))  # every image once
        again_images, again_labels = read(next(repeated) for _ in range(4))
        assert np.array_equal(again_images, images) and np.array_equal(again_labels, labels)
    assert not np.array_equal(epochs[0][1], epochs[1][1]) and not np.array_equal(epochs[0][0], epochs[1][0])
    restarted = data.train_dataset(16, seed=3, augment=True)
    advance_epochs(2)  # what WorkerBackupAndRestore does when it resumes at epoch 2
    images, labels = read(restarted)
    assert np.array_equal(images, epochs[2][0]) and np.array_equal(labels, epochs[2][1])
    other_seed = read(data.train_dataset(16, seed=4, augment=True))
    assert not np.array_equal(other_seed[1], epochs[0][1])


def test_an_uncounted_dataset_starts_at_epoch_0_on_every_iteration_as_a_worker_s_copy_does():
    import tensorflow as tf

    from lepton_keras.data.epochs import epoch_dataset

    def make_epoch(epoch):
        return tf.data.Dataset.from_tensors(epoch)

    once = epoch_dataset(make_epoch, counted=False)
    assert [int(e) for e in once] == [0] and [int(e) for e in once] == [0]  # no counter moves on
    advance_epochs(5)  # a resume moves the counted datasets of this process, not this one
    assert [int(e) for e in epoch_dataset(make_epoch, repeat=True, counted=False).take(3)] == [0, 1, 2]
