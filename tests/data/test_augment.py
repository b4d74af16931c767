"""Random crop with padding and horizontal flip, checked against every candidate NumPy crop."""

import numpy as np
import tensorflow as tf

from lepton_keras.data import load_cifar10
from lepton_keras.data.augment import augment_dataset, crop_and_flip


def numpy_candidates(image: np.ndarray, padding: int = 4):
    """All (offset_y, offset_x, flipped) -> image the paper's augmentation can produce."""
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    height, width, _ = image.shape
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[dy : dy + height, dx : dx + width]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop[:, ::-1]


def identify(augmented: np.ndarray, image: np.ndarray):
    matches = [key for key, candidate in numpy_candidates(image) if np.array_equal(candidate, augmented)]
    assert matches, "the augmented image is no padded crop of the original, flipped or not"
    return matches[0]


def test_every_output_is_a_padded_crop_with_varied_offsets_and_half_flipped():
    image = np.random.default_rng(0).integers(1, 256, size=(32, 32, 3)).astype(np.uint8)
    draws = [identify(crop_and_flip(tf.constant(image), tf.constant([[i, 1], [i, 2]])).numpy(), image)
             for i in range(200)]
    offsets = {(dy, dx) for dy, dx, _ in draws}
    flipped = sum(flip for _, _, flip in draws)
    assert len(offsets) > 40  # of the 81 possible
    assert 70 < flipped < 130  # Binomial(200, 1/2) is in this range with probability > 0.99


def test_the_same_seed_gives_the_same_image():
    image = tf.constant(np.random.default_rng(1).integers(0, 256, size=(32, 32, 3)).astype(np.uint8))
    seed = tf.constant([[3, 4], [5, 6]])
    assert np.array_equal(crop_and_flip(image, seed).numpy(), crop_and_flip(image, seed).numpy())


def test_dataset_augmentation_is_a_pure_function_of_the_seed():
    images = np.random.default_rng(2).integers(0, 256, size=(8, 32, 32, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(8)))

    def draws(seed):
        return [image.numpy() for image, _ in augment_dataset(dataset, seed=seed)]

    first = draws(5)
    augmented = augment_dataset(dataset, seed=5)
    for again in ([image.numpy() for image, _ in augmented], [image.numpy() for image, _ in augmented], draws(5)):
        assert all(np.array_equal(a, b) for a, b in zip(first, again))  # every iteration, every dataset
    assert not all(np.array_equal(a, b) for a, b in zip(first, draws(6)))
    # A seed holding the epoch, as an epoch of Cifar10.train_dataset passes: new draws each epoch.
    epoch_0, epoch_1 = (draws(tf.constant([5, epoch], tf.int64)) for epoch in (0, 1))
    assert not all(np.array_equal(a, b) for a, b in zip(epoch_0, epoch_1))
    assert all(np.array_equal(a, b) for a, b in zip(epoch_1, draws(tf.constant([5, 1], tf.int64))))
    for image, original in zip(first + epoch_1, np.concatenate([images, images])):
        identify(image, original)


def test_train_dataset_augments_only_when_asked():
    data = load_cifar10("sample", shard=None, validation_size=0, train_limit=64)
    plain = next(iter(data.train_dataset(64, shuffle=False)))[0].numpy()
    augmented = next(iter(data.train_dataset(64, shuffle=False, augment=True)))[0].numpy()
    np.testing.assert_array_equal(plain, data.train_images[:64].astype(np.float32) / 255.0)
    assert not np.array_equal(plain, augmented)
    for image, original in zip(augmented[:8], data.train_images[:8]):
        identify(np.round(image * 255.0).astype(np.uint8), original)
