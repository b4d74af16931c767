"""How gradients travel between replicas: buckets in backward order, optionally compressed to 16 bits.

When to use it: multi-worker training whose step waits on the all-reduce (see
benchmarks/scaling.py and profile_summary.py). By default Keras sums every gradient in one
packed collective that starts only after the whole backward pass. With buckets, the
gradients are summed in groups of about `bucket_bytes`, the last layers' first (they are
computed first), so each group's collective can run while the earlier layers' gradients are
still being computed, as PyTorch DDP's gradient buckets do. Compression halves the bytes
of every collective.

For buckets B_1, ..., B_K (the variables in reverse order, cut where a bucket would pass
`bucket_bytes`; a gradient larger than that gets a bucket of its own), replica r's
gradients g_r and R replicas, with f the `predivide_factor`:

    without compression:  s_B = sum_r g_{r,B}                                      (float32 sum)
    with compression:     s_B = f * cast_32( sum_r cast_16(g_{r,B} / f) )           (16-bit sum)

Keras divides each replica's loss by R, so sum_r g_r is already the global-batch mean
gradient and its partial sums stay as large as one replica's gradient: f = 1 (the default,
Horovod's too) cannot overflow where the gradient itself fits in float16. A factor f > 1
buys float16 headroom for losses that are not divided (a custom training step) at the cost
of precision for small gradients. bfloat16 has float32's range and 8 bits of mantissa.

Costs and savings (bytes are per step and per replica, before the ring's 2 (R - 1) / R):
    bucket_bytes=0, compression=None: one collective of 4 bytes per parameter (Keras's path).
    bucket_bytes > 0: the same bytes in K collectives; each costs a launch (about 0.1-1 ms
        over gRPC), and overlap hides the ones that finish under the backward pass.
    compression: 2 bytes per parameter and two casts per bucket; the sum is rounded to 11
        (float16) or 8 (bfloat16) significant bits, and float16 flushes |g| < 6e-8 to zero.

Example:
    communication = GradientCommunication(bucket_bytes=1 << 20, compression="float16")
    strategy = lepton_keras.distribute.get_strategy("multi_worker", gradient_communication=communication)
    # every optimizer in strategy.scope(), Keras's and lepton_keras's, now sums this way

Where it differs from the references: PyTorch DDP buckets by autograd hooks at run time; here
the buckets are fixed when the step is traced, in the reverse of the variables' order (the
order of `model.trainable_variables`, which is the order the layers were built), and the
graph runs each collective as soon as its bucket's gradients exist. Horovod's
`gradient_predivide_factor` divides the rest of the average after the sum; Keras's losses
are already divided by R, so here f is undone after the sum and the result stays a sum.
"""

from __future__ import annotations

import dataclasses
import weakref

from lepton_keras.distribute.periodic_sync import local_steps_active
from lepton_keras.validation import check_int, check_number, check_strategy, invalid

COMPRESSIONS = ("float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class GradientCommunication:
    """How the cross-replica gradient sum travels (see the module docstring).

    Args:
        bucket_bytes: sum the gradients in buckets of at most about this many bytes, the
            last variables' first (default 0: one packed collective, Keras's path).
        compression: None (default), "float16" or "bfloat16": the dtype each bucket is
            summed in (float32 and float64 gradients only; others travel as they are).
        predivide_factor: divide before a compressed sum and multiply after (default 1.0,
            at least 1; no effect without compression).
    """

    bucket_bytes: int = 0
    compression: str | None = None
    predivide_factor: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "bucket_bytes", check_int("bucket_bytes", self.bucket_bytes, minimum=0))
        if self.compression is not None and (not isinstance(self.compression, str)
                                             or self.compression not in COMPRESSIONS):  # fmt: skip
            raise invalid("compression", self.compression, "None, 'float16' or 'bfloat16'")
        factor = check_number("predivide_factor", self.predivide_factor, lambda x: x >= 1.0, "a number >= 1")
        object.__setattr__(self, "predivide_factor", factor)

    @property
    def is_keras_default(self) -> bool:
        """True when this is Keras's own path: one packed collective, no compression."""
        return self.bucket_bytes == 0 and self.compression is None


def bucket_plan(sizes_in_bytes: list[int], bucket_bytes: int) -> list[list[int]]:
    """The buckets, as lists of indices into `sizes_in_bytes`, last index first.

    A bucket grows in reverse index order until the next gradient would take it past
    `bucket_bytes`; a gradient larger than that gets a bucket of its own. `bucket_bytes=0`
    gives one bucket of everything (in reverse order). Same sizes, same plan: every worker
    issues the same collectives in the same order.
    """
    buckets: list[list[int]] = []
    filled = 0
    for index in reversed(range(len(sizes_in_bytes))):
        size = sizes_in_bytes[index]
        if buckets and (bucket_bytes == 0 or filled + size <= bucket_bytes):
            buckets[-1].append(index)
            filled += size
        else:
            buckets.append([index])
            filled = size
    return buckets


def payload_bytes(sizes: list[int], dtypes: list[str], communication: GradientCommunication) -> int:
    """Bytes one replica contributes to the sums of one step: `sizes` elements of `dtypes` per gradient."""
    import numpy as np

    return sum(size * _wire_itemsize(str(dtype), np.dtype(dtype).itemsize, communication)
               for size, dtype in zip(sizes, dtypes))  # fmt: skip


def _wire_itemsize(dtype: str, itemsize: int, communication: GradientCommunication) -> int:
    """Bytes per element on the wire: 2 for a float32 or float64 gradient under compression."""
    return 2 if _travels_compressed(dtype, communication) else itemsize


def _travels_compressed(dtype: str, communication: GradientCommunication) -> bool:
    return communication.compression is not None and dtype in ("float32", "float64")


_settings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_gradient_communication(strategy, communication: GradientCommunication | None) -> None:
    """Makes every optimizer under `strategy` sum its gradients as `communication` says.

    Keras's optimizers and lepton_keras's wrappers (and SAM) read it at trace time. None
    restores Keras's path. `get_strategy(gradient_communication=...)` calls this.
    """
    from lepton_keras.distribute import keras_compat

    strategy = check_strategy("strategy", strategy, allow_none=False)
    if communication is not None and not isinstance(communication, GradientCommunication):
        raise invalid("communication", communication, "a GradientCommunication or None")
    if communication is None or communication.is_keras_default:
        _settings.pop(strategy, None)
        return
    keras_compat.route_keras_gradient_sum(sum_gradients)
    _settings[strategy] = communication


def gradient_communication(strategy=None) -> GradientCommunication:
    """The setting of `strategy` (default: the current one); Keras's path when none was set."""
    import tensorflow as tf

    strategy = check_strategy("strategy", strategy) or tf.distribute.get_strategy()
    return _settings.get(strategy, GradientCommunication())


def sum_gradients(gradients: list, communication: GradientCommunication | None = None) -> list:
    """The gradients summed across replicas and workers, in replica context (None entries stay None).

    In a local step of periodic synchronisation (`periodic_sync.PeriodicSync`) nothing is
    summed: each replica keeps its own gradient, times the replica count that Keras divided
    its loss by.

    `communication` defaults to the current strategy's setting. Outside a strategy, or with
    one replica, the gradients come back as they are.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:
        raise ValueError("sum_gradients must be called in a replica context (inside strategy.run or a train step)")
    present = [index for index, gradient in enumerate(gradients) if gradient is not None]
    if context.num_replicas_in_sync == 1 or not present:
        return list(gradients)
    if local_steps_active():  # periodic sync: each replica steps on its own batch's mean loss
        return [_scaled(gradient, context.num_replicas_in_sync) for gradient in gradients]
    communication = communication if communication is not None else gradient_communication()
    values = [gradients[index] for index in present]
    if communication.is_keras_default:  # Keras's path: one all-reduce, in Keras's order
        buckets = [list(range(len(values)))]
    else:
        buckets = bucket_plan([_size_in_bytes(value, communication) for value in values], communication.bucket_bytes)
    summed = list(gradients)
    for bucket in buckets:
        sent = [_compressed(values[i], communication) for i in bucket]
        received = context.all_reduce(tf.distribute.ReduceOp.SUM, sent)
        for i, value in zip(bucket, received):
            summed[present[i]] = _decompressed(value, values[i], communication)
    return summed


def _scaled(gradient, replicas: int):
    """R g_r: Keras divided each replica's loss by R, and a local step needs its own batch's mean."""
    import tensorflow as tf

    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * tf.cast(replicas, gradient.dtype), gradient.indices,
                                gradient.dense_shape)  # fmt: skip
    return gradient * tf.cast(replicas, gradient.dtype)


def _compresses(value, communication) -> bool:
    import tensorflow as tf

    return not isinstance(value, tf.IndexedSlices) and _travels_compressed(value.dtype.name, communication)


def _size_in_bytes(value, communication) -> int:
    import tensorflow as tf

    if isinstance(value, tf.IndexedSlices):  # sent as it is: its values and indices
        return (value.values.shape.num_elements() or 0) * value.dtype.size
    return (value.shape.num_elements() or 0) * _wire_itemsize(value.dtype.name, value.dtype.size, communication)


def _compressed(value, communication):
    import tensorflow as tf

    if not _compresses(value, communication):
        return value
    if communication.predivide_factor != 1.0:
        value = value / tf.cast(communication.predivide_factor, value.dtype)
    return tf.cast(value, communication.compression)


def _decompressed(value, original, communication):
    import tensorflow as tf

    if not _compresses(original, communication):
        return value
    value = tf.cast(value, original.dtype)
    if communication.predivide_factor != 1.0:
        value = value * tf.cast(communication.predivide_factor, original.dtype)
    return value
