"""Delta-orthogonal initialization of convolution kernels.

Xiao, Bahri, Sohl-Dickstein, Schoenholz and Pennington, 2018, "Dynamical Isometry and a Mean
Field Theory of CNNs: How to Train 10,000-Layer Vanilla Convolutional Neural Networks",
ICML 2018, arXiv:1806.05393 (Algorithm 2).

A convolution whose kernel is zero everywhere but the centre tap, which holds an orthogonal
matrix, maps every pixel's channel vector through that matrix: with padding "same" and at
least as many output as input channels it preserves the norm of every input exactly, so a
deep linear stack keeps its activation variance (and, with a ReLU, a gain of sqrt(2) keeps
it on average), and its input-output Jacobian has all singular values 1.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from lepton_keras.validation import check_int, check_positive


def _check_kernel_shape(shape) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) < 3 or any(not isinstance(dim, numbers.Integral) or dim < 1 for dim in shape):
        raise ValueError(
            "DeltaOrthogonal initializes convolution kernels of shape (*spatial, in_channels, "
            "out_channels), e.g. (k, in, out), (k1, k2, in, out) or (k1, k2, k3, in, out): rank 3 or "
            f"more with positive sizes, received: shape={shape}"
        )
    return tuple(int(dim) for dim in shape)


@keras.saving.register_keras_serializable(package="lepton_keras")
class DeltaOrthogonal(keras.initializers.Initializer):
    """Convolution kernel that is zero except an orthogonal matrix (times `gain`) at the centre tap.

    When to use it: for deep plain convolutional networks (no residual connections, no batch
    normalization), where Keras's default GlorotUniform lets the activations shrink or grow
    with depth. Use `gain=1` before a linear or tanh activation (a linear stack then keeps its
    activation variance exactly) and `gain=sqrt(2)` before a ReLU (which keeps E[y^2] per layer
    on average only: at finite width the scale still drifts slowly with depth, since ReLU
    networks cannot be exactly isometric). For Conv1D, Conv2D and Conv3D kernels; Dense layers
    want `keras.initializers.Orthogonal`.

    The kernel, for spatial size (k_1, ..., k_d), C_in input and C_out output channels:

        W[i_1, ..., i_d, :, :] = gain * H   if i_j = k_j // 2 for every spatial axis j,
        W[i_1, ..., i_d, :, :] = 0          elsewhere (exactly zero),

    where H (C_in x C_out) is a random semi-orthogonal matrix drawn as Keras's
    `keras.initializers.Orthogonal` draws one (QR of a Gaussian matrix, signs fixed):

        H H^T = I_{C_in}    when C_in <= C_out (orthonormal rows: the layer preserves the norm
                            of every pixel's channel vector, ||x H|| = ||x||);
        H^T H = I_{C_out}   when C_in > C_out (orthonormal columns: the layer is an orthogonal
                            projection onto C_out directions).

    For an even kernel size the "centre" is index k // 2 (the tap just after the middle).

    The kernel is a pure function of (shape, seed, gain): the same seed gives the same kernel
    on every call, device, replica and worker. With `seed=None` a seed is drawn once, when the
    initializer is made, from Python's `random` (so `keras.utils.set_random_seed` fixes it), as
    Keras's own initializers do; `get_config` then keeps `seed=None`.

    Args:
        gain: positive factor applied to the orthogonal matrix (default 1.0).
        seed: integer seed, or None for a seed drawn when the initializer is made (default None).

    Example:
        >>> import keras
        >>> from lepton_keras.initializers import DeltaOrthogonal
        >>> layer = keras.layers.Conv2D(
        ...     32, 3, padding="same", activation="relu",
        ...     kernel_initializer=DeltaOrthogonal(gain=2 ** 0.5, seed=0))
        >>> kernel = DeltaOrthogonal(seed=0)(shape=(3, 3, 16, 32))  # kernel[1, 1] @ kernel[1, 1].T = I

    Raises:
        ValueError: `gain` is not a positive finite number, `seed` is not an integer or None,
            or (when called) the shape is not a convolution kernel's (rank below 3).

    References:
        Xiao et al. 2018, "Dynamical Isometry and a Mean Field Theory of CNNs: How to Train
        10,000-Layer Vanilla Convolutional Neural Networks", arXiv:1806.05393.
        Saxe et al. 2014, "Exact solutions to the nonlinear dynamics of learning in deep
        linear neural networks", arXiv:1312.6120 (the orthogonal matrix).
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None):
        self.gain = check_positive("gain", gain)
        self.seed = check_int("seed", seed, allow_none=True)
        # Keras's Orthogonal draws the centre matrix; it also fixes a seed=None at construction.
        self._orthogonal = keras.initializers.Orthogonal(gain=self.gain, seed=self.seed)

    def __call__(self, shape, dtype=None):
        shape = _check_kernel_shape(shape)
        *spatial, in_channels, out_channels = shape
        centre = self._orthogonal(shape=(in_channels, out_channels), dtype=dtype)
        centre = ops.reshape(centre, (1,) * len(spatial) + (in_channels, out_channels))
        # Padding puts exact (+0.0) zeros around the centre tap.
        padding = [(size // 2, size - 1 - size // 2) for size in spatial] + [(0, 0), (0, 0)]
        return ops.pad(centre, padding)

    def get_config(self) -> dict:
        return {"gain": self.gain, "seed": self.seed}
