"""Work split between replicas: each computes a share of a list of results, then every replica has them all.

When to use it: a step computes, identically on every replica, something expensive per variable
(Muon's Newton-Schulz orthogonalisation of each matrix). Splitting it, each of R replicas
computes about 1/R of the work and the replicas exchange the results:

    owner(i)  = the replica that computes item i (`balanced_assignment`: largest cost first,
                each to the least loaded replica; the same on every worker)
    r_i       = sum over replicas q of (f_i() if q == owner(i) else 0)      (one all-reduce)

Adding zeros is exact, so every replica gets the owner's r_i bit for bit. The exchange costs one
all-reduce of the results' size (2 (R - 1) / R of it per replica with a ring), against the work
saved: worth it when the per-item work is large compared to moving its result (matrices of
hundreds of rows and more), not for small ones. The assignment is fixed when the step is
traced, from the items' costs, so every worker issues the same collective.

Where it differs from the author's distributed Muon (github.com/KellerJordan/Muon): that one
assigns matrices round-robin in order of size and exchanges the updated weights with an
all-gather per group of R matrices; here each item goes to the least loaded replica and the
results travel in one all-reduce of zero-padded values.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf


def balanced_assignment(costs: Sequence[float], replicas: int) -> list[int]:
    """The replica (0 to `replicas` - 1) that computes each item: largest cost first, to the least
    loaded replica (ties: the lower item index, then the lower replica). Deterministic."""
    loads = [0.0] * replicas
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        replica = min(range(replicas), key=lambda r: (loads[r], r))
        owners[index] = replica
        loads[replica] += costs[index]
    return owners


def computed_once_and_shared(functions: Sequence[Callable], specs: Sequence[tf.TensorSpec],
                             costs: Sequence[float]) -> list:  # fmt: skip
    """[functions[i]() for each i], each computed by one replica and received by all (replica context).

    `specs[i]` is the shape and dtype of item i's result (the zeros the other replicas send);
    `costs[i]` its relative cost. Outside a strategy, or with one replica, every function runs here.
    """
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    if replicas == 1:
        return [function() for function in functions]
    owners = balanced_assignment(costs, replicas)
    replica_id = context.replica_id_in_sync_group
    this_replica = tf.get_static_value(replica_id)
    shares = []
    for function, spec, owner in zip(functions, specs, owners):
        zeros = lambda spec=spec: tf.zeros(spec.shape, spec.dtype)  # noqa: E731
        if this_replica is not None:  # known when the step is traced: only the owner builds the work
            shares.append(function() if this_replica == owner else zeros())
        else:
            shares.append(tf.cond(tf.equal(replica_id, owner), function, zeros))
    return context.all_reduce(tf.distribute.ReduceOp.SUM, shares)
