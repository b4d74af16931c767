"""Lookahead: slow weights that follow k fast steps of any optimizer.

Zhang, Lucas, Hinton and Ba (2019), "Lookahead Optimizer: k steps forward, 1 step back",
NeurIPS 2019, arXiv:1907.08610.
"""

from __future__ import annotations

import functools
import keras
from keras import ops

from lepton_keras.optimizers.base import scalar, snapshot
from lepton_keras.optimizers.wrapper import OptimizerWrapper
from lepton_keras.validation import check_int, check_unit_interval


def lookahead_update(fast, slow, *, slow_step_size, one_minus_slow_step_size, sync):
    """The Lookahead synchronisation; returns (new_fast, new_slow) without assigning anything.

    When `sync` is true: slow <- slow + alpha (fast - slow), written as the equal
    (1 - alpha) slow + alpha fast so that alpha = 1 gives exactly `fast`; then fast <- slow.
    Otherwise both are returned unchanged. alpha and 1 - alpha are scalars of the weights'
    dtype, computed in double precision.
    """
    moved = one_minus_slow_step_size * slow + slow_step_size * fast
    new_slow = ops.where(sync, moved, slow)
    return ops.where(sync, new_slow, fast), new_slow


@keras.saving.register_keras_serializable(package="lepton_keras")
class Lookahead(OptimizerWrapper):
    """Runs the inner optimizer for k fast steps, then moves slow weights part-way towards them.

    When to use it: around any optimizer (SGD, Adam, RAdam) to make training less sensitive
    to the learning rate and to reduce the variance of the weights at little cost: one
    copy of the weights and one interpolation every k steps. "Ranger" is
    Lookahead(RAdam()).

    With phi the slow weights (set to the weights before the first step) and theta the
    weights the inner optimizer updates (Algorithm 1 of the paper):

        theta_t = inner_update(theta_{t-1}, g_t)                  every step t
        if t mod k == 0:
            phi <- phi + alpha (theta_t - phi)
            theta_t <- phi

    The step count t is the number of weight updates (the innermost optimizer's
    iterations), so inside a GradientAccumulation the period counts updates, not
    micro-batches. With alpha = 1, Lookahead is exactly the inner optimizer.

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config).
        sync_period: k, the number of fast steps between synchronisations, an integer
            >= 1 (default 6, as in the paper's experiments).
        slow_step_size: alpha, in (0, 1] (default 0.5).
        fused_updates: compile the synchronisation with XLA into one kernel per variable
            (default True).
        name: the optimizer's name (default "lookahead").

    Example:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=Lookahead(keras.optimizers.Adam(1e-3), sync_period=5), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Zhang, Lucas, Hinton and Ba (2019), "Lookahead Optimizer: k steps forward, 1 step
        back", arXiv:1907.08610.
    """

    def __init__(self, inner_optimizer, *, sync_period=6, slow_step_size=0.5, name="lookahead", **kwargs):
        sync_period = check_int("sync_period", sync_period, minimum=1)
        slow_step_size = check_unit_interval("slow_step_size", slow_step_size, open_at_zero=True, closed_at_one=True)
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.sync_period = sync_period
        self.slow_step_size = slow_step_size

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._slow_weights = [self.add_variable_from_reference(v, "slow_weight") for v in variables]

    def apply_in_cross_replica(self, distribution, gradients, variables):
        slow_weights = self.slots_of(self._slow_weights, variables)
        counter = self.innermost_optimizer.iterations
        updates_before = snapshot(counter)
        # The slow weights start as the weights before the first update (set here rather
        # than in build, so weights loaded after building the optimizer are the start).
        self.update_each(distribution, functools.partial(_start_slow, first=ops.equal(updates_before, 0)),
                         variables, slow_weights)
        self.apply_inner(distribution, gradients, variables)
        updates = snapshot(counter)
        # An inner GradientAccumulation updates only on some calls: synchronise once per update.
        sync = ops.logical_and(ops.greater(updates, updates_before), ops.equal(updates % self.sync_period, 0))
        synchronise = functools.partial(_synchronise, slow_step_size=self.slow_step_size, sync=sync,
                                        update_in_place=self.update_in_place)
        self.update_each(distribution, synchronise, variables, slow_weights)

    def get_config(self):
        return {**super().get_config(), "sync_period": self.sync_period, "slow_step_size": self.slow_step_size}


def _start_slow(variable, slow, *, first):
    slow.assign(ops.where(first, variable, slow))


def _synchronise(variable, slow, *, slow_step_size, sync, update_in_place):
    alpha, one_minus_alpha = scalar(slow_step_size, slow.dtype), scalar(1.0 - slow_step_size, slow.dtype)
    update_in_place(lookahead_update, (variable, slow), variable, slow, slow_step_size=alpha,
                    one_minus_slow_step_size=one_minus_alpha, sync=sync)
