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


def augment_dataset(dataset: tf.data.Dataset, *, seed: int = 0, padding: int = 4) -> tf.data.Dataset:
    """Applies `crop_and_flip` to every (image, label) element, with new draws every epoch.

    Each element gets its own seed from `tf.data.Dataset.random(seed)`, re-drawn on every
    iteration, so the augmentation is reproducible for a given `seed` and differs between
    epochs.
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)

    def augment(element, draws):
        image, label = element
        return crop_and_flip(image, tf.reshape(draws, (2, 2)), padding=padding), label

    return tf.data.Dataset.zip((dataset, seeds)).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
