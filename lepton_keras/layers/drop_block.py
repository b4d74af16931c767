"""DropBlock: dropout of contiguous square regions of convolutional feature maps.

Ghiasi, Lin and Le (2018), "DropBlock: A regularization method for convolutional
networks", arXiv:1810.12890.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.layers.seed_state import SavesSeedState
from lepton_keras.validation import check_choice, check_int, check_unit_interval

_DATA_FORMATS = ("channels_last", "channels_first")


def drop_block_gamma(rate: float, block_size: int, height, width):
    """The paper's Eq. (1): the Bernoulli rate of block centres that drops a fraction `rate`.

        gamma = rate / block_size^2 * (height * width) / ((height - block_size + 1) * (width - block_size + 1))
    """
    return rate / block_size**2 * (height * width) / ((height - block_size + 1) * (width - block_size + 1))


def block_keep_mask(seeds, block_size: int, data_format: str = "channels_last"):
    """Keep-mask (1 keep, 0 drop) of shape (N, H, W, C) from block seeds of shape (N, H - s + 1, W - s + 1, C).

    A seed at (i, j) drops the s x s block of rows i..i+s-1 and columns j..j+s-1, so every
    block lies inside the map. (Shapes are NCHW with data_format="channels_first".)
    """
    pad = block_size - 1
    spatial = [[pad, pad], [pad, pad]]
    paddings = [[0, 0], *spatial, [0, 0]] if data_format == "channels_last" else [[0, 0], [0, 0], *spatial]
    dropped = ops.max_pool(
        ops.pad(seeds, paddings), pool_size=block_size, strides=1, padding="valid", data_format=data_format
    )
    return 1.0 - dropped


def drop_block(inputs, keep_mask):
    """inputs * mask * count(mask) / count_ones(mask): the paper's Algorithm 1, steps 5 and 6."""
    keep_mask = ops.cast(keep_mask, "float32")
    count = ops.cast(ops.size(keep_mask), "float32")
    scale = count / ops.maximum(ops.sum(keep_mask), 1.0)
    return inputs * ops.cast(keep_mask * scale, inputs.dtype)


@keras.saving.register_keras_serializable(package="lepton_keras")
class DropBlock2D(SavesSeedState, keras.layers.Layer):
    """Drops contiguous block_size x block_size regions of 2D feature maps while training.

    When to use it: after the convolutions of a CNN (the paper applies it to ResNet groups 3
    and 4 and to the skip connections), where plain dropout does little because neighbouring
    activations are correlated and carry the dropped information anyway. It is the identity
    at inference and when `rate` is 0; with `block_size=1` it is dropout with a per-batch
    renormalisation.

    For an H x W map, block size s (clipped to min(H, W)) and drop rate r, each channel of
    each example draws its own mask (the paper's Algorithm 1):

        gamma = r / s^2 * (H * W) / ((H - s + 1) * (W - s + 1))
        z_ij ~ Bernoulli(gamma) at the (H - s + 1) x (W - s + 1) centres whose block fits inside
        M = 1 - max_pool_{s x s}(z)                    (the union of the s x s blocks is dropped)
        y = x * M * count(M) / count_ones(M)           (counts over the whole batch)

    The expected dropped fraction is close to r, a little below it (Eq. 1 counts the pixels
    where blocks overlap twice). The rate is fixed; the paper's linear ramp of the rate over
    training is not built in.

    Under a distribution strategy each replica draws the masks of its own share of the
    batch from the same seed state (as `keras.layers.Dropout` does) and renormalises by
    its own count: training stays valid but does not give the one-device numbers, and the
    i-th example of each replica's share gets the same mask.

    Args:
        rate: the fraction r in [0, 1) of activations to drop (default 0.1).
        block_size: the side s >= 1 of the square blocks (default 7, the paper's best
            on ImageNet); clipped to the smaller side of the feature map.
        seed: an integer seed for the masks (default None: drawn from Python's `random`,
            which `keras.utils.set_random_seed` fixes). The seed state is saved with the
            model, so a reloaded model goes on with the draws where it stopped.
        data_format: "channels_last" (NHWC) or "channels_first" (NCHW); default None,
            `keras.config.image_data_format()`. Both are handled natively.

    Example:
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            DropBlock2D(rate=0.1, block_size=5, seed=1),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ])

    References:
        Ghiasi, Lin and Le (2018), "DropBlock: A regularization method for convolutional
        networks", arXiv:1810.12890.
    """

    def __init__(self, rate: float = 0.1, block_size: int = 7, seed: int | None = None, *,
                 data_format: str | None = None, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.rate = check_unit_interval("rate", rate)
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.seed = check_int("seed", seed, allow_none=True)
        data_format = keras.config.image_data_format() if data_format is None else data_format
        self.data_format = check_choice("data_format", data_format, _DATA_FORMATS)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"DropBlock2D needs 4D feature maps ({'NHWC' if self.data_format == 'channels_last' else 'NCHW'}), "
                f"received shape: {tuple(input_shape)}"
            )

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        shape = ops.shape(inputs)
        height, width = (shape[1], shape[2]) if self.data_format == "channels_last" else (shape[2], shape[3])
        block_size = self.block_size
        if isinstance(height, int) and isinstance(width, int):
            block_size = min(block_size, height, width)
        # One seed per block that fits inside the map, per example and channel.
        rows, cols = height - block_size + 1, width - block_size + 1
        if self.data_format == "channels_last":
            seeds_shape = (shape[0], rows, cols, shape[3])
        else:
            seeds_shape = (shape[0], shape[1], rows, cols)
        gamma = drop_block_gamma(self.rate, block_size, ops.cast(height, "float32"), ops.cast(width, "float32"))
        seeds = ops.cast(keras.random.uniform(seeds_shape, seed=self.seed_generator) < gamma, "float32")
        return drop_block(inputs, block_keep_mask(seeds, block_size, self.data_format))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "block_size": self.block_size,
            "seed": self.seed,
            "data_format": self.data_format,
        }
