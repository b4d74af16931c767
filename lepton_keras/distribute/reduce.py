"""Cross-replica reductions for code that runs inside a replica (a layer's `call`)."""

from __future__ import annotations

import tensorflow as tf


def global_sum(value):
    """`value` summed over every replica and worker: an all-reduce in a replica context with
    several replicas; the value itself outside a strategy or in a cross-replica context
    (where the whole batch is at hand)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
