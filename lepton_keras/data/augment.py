"""Random crop with padding and horizontal flip, the standard CIFAR-10 augmentation.

He, Zhang, Ren and Sun (2016), "Deep Residual Learning for Image Recognition",
arXiv:1512.03385, section 4.2: pad 4 pixels on each side, take a random 32x32 crop, flip
horizontally with probability 1/2.
"""

from __future__ import annotations

import tensorflow as tf


def crop_and_flip(image: tf.Tensor, seed: tf.Tensor, *, padding: int = 4) -> tf.Tensor:
    """One image (height, width, channels), zero-padded by `padding`, cropped back at random and maybe flipped.

    `seed` is a shape-(2, 2) int tensor: row 0 seeds the crop, row 1 the flip (stateless
    random ops, so the same seed gives the same image).
    """
    height, width, channels = image.shape
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, [height, width, channels], seed=seed[0])
    return tf.image.stateless_random_flip_left_right(cropped, seed=seed[1])


def augment_dataset(dataset: tf.data.Dataset, *, seed=0, padding: int = 4) -> tf.data.Dataset:
    """Applies `crop_and_flip` to every (image, label) element; the draws are a pure function of `seed`.

    Element i's crop and flip come from stateless random ops seeded with (`seed`, i), so
    every iteration of the result gives the same images. For new draws every epoch, pass
    a seed that holds the epoch: inside `lepton_keras.data.epochs.epoch_dataset`,
    `seed=tf.stack([seed, epoch])`, as `Cifar10.train_dataset(augment=True)` does.

    Args:
        dataset: (image, label) elements, images (height, width, channels).
        seed: an integer, or an int64 tensor of shape (2,) (default 0).
        padding: pixels of zeros added on each side before the crop (default 4).
    """
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])

    def augment(index, element):
        image, label = element
        draws = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, index), 2)
        return crop_and_flip(image, draws, padding=padding), label

    return dataset.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)
