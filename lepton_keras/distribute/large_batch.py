"""Scaling a training recipe from the global batch it was tuned at to a larger one.

Adding workers multiplies the global batch B. A recipe tuned at B0 then needs three changes
(k = B / B0):

1. **The learning rate.** The linear rule lr(B) = lr0 k (Goyal et al. 2017) holds for SGD and
   LARS, whose step is proportional to the gradient. For Adam-like optimizers, whose step is
   normalised by the gradient's second moment, the square-root rule lr(B) = lr0 sqrt(k) keeps
   the noise of the update the same (Malladi et al. 2022; You et al. 2019 scale LAMB so).
   "none" keeps lr0. Both rules assume the gradient's noise dominates the step, which holds
   only below a critical batch: past it a larger batch hardly lowers the noise further, and
   the optimal rate stops growing (Shallue et al. 2018; McCandlish et al. 2018). Given that
   batch B_crit, the rules use

       k = min(B, B_crit) / B0.

   McCandlish et al.'s optimal SGD rate, eps_max / (1 + B_crit / B), saturates smoothly; the
   limit here is a hard one, because the smooth form also lowered the rate below B_crit and
   trained worse there (benchmarks/README.md, the large-batch probes).
2. **The warmup.** With k times fewer steps per epoch, a warmup of a fixed number of epochs is
   k times fewer steps, just when a k (or sqrt k) times larger rate needs more of them. The
   warmup here grows by `warmup_epochs_per_doubling` epochs for every doubling of the batch:

       warmup_epochs(B) = warmup_epochs0 + warmup_epochs_per_doubling * log2(B / B0)    (B >= B0)

   (past the critical batch too), capped at `max_warmup_fraction` of the run.
3. **The optimizer.** Past `layerwise_from_batch`, an Adam-like optimizer becomes LAMB (Adam
   with a layer-wise trust ratio, You et al. 2019; Keras's `Lamb`) and momentum SGD becomes
   LARS (You et al. 2017): each layer's step is bounded relative to its weights, so the layer
   with the largest gradient no longer sets the rate for all of them. Biases (and
   normalisation parameters) are excluded from weight decay, as both papers do.

`scale_recipe` applies the three; each rule is also a small pure function.

Example:
    >>> scaled = scale_recipe(learning_rate=4e-3, base_batch_size=128, batch_size=2048,
    ...                       optimizer="adabelief", warmup_epochs=7.5, epochs=30)
    >>> round(scaled.learning_rate, 6), scaled.optimizer, scaled.warmup_epochs
    (0.016, 'lamb', 11.5)

References: Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
arXiv:1706.02677; You, Gitman and Ginsburg 2017, "Large Batch Training of Convolutional
Networks", arXiv:1708.03888; You et al. 2019, "Large Batch Optimization for Deep Learning:
Training BERT in 76 minutes", arXiv:1904.00962; Malladi et al. 2022, "On the SDEs and Scaling
Rules for Adaptive Gradient Algorithms", arXiv:2205.10287; Shallue et al. 2018, "Measuring the
Effects of Data Parallelism on Neural Network Training", arXiv:1811.03600; McCandlish et al.
2018, "An Empirical Model of Large-Batch Training", arXiv:1812.06162.
"""

from __future__ import annotations

import dataclasses
import math

from lepton_keras.validation import check_choice, check_int, check_non_negative, check_positive, check_string

LEARNING_RATE_RULES = ("linear", "sqrt", "none")
# Optimizers whose step is normalised per coordinate (sqrt rule, LAMB past the threshold).
ADAPTIVE_OPTIMIZERS = frozenset({
    "adam", "adamw", "adabelief", "radam", "nadam", "adamax", "yogi", "lamb", "lion", "adan", "ademamix",
    "novograd", "madgrad", "fused_adam",
})  # fmt: skip
# Optimizers whose step is proportional to the gradient (linear rule, LARS past the threshold).
SGD_OPTIMIZERS = frozenset({"sgd", "lars"})


def batch_ratio(base_batch_size: int, batch_size: int, critical_batch_size: int | None = None) -> float:
    """k = min(B, B_crit) / B0: the batch's growth that the rate rules scale by.

    Example:
        >>> batch_ratio(128, 8192), batch_ratio(128, 8192, critical_batch_size=2048)
        (64.0, 16.0)
    """
    base_batch_size = check_int("base_batch_size", base_batch_size, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    critical_batch_size = check_int("critical_batch_size", critical_batch_size, minimum=1, allow_none=True)
    if critical_batch_size is None:
        return batch_size / base_batch_size
    if critical_batch_size < base_batch_size:
        raise ValueError(f"critical_batch_size must be at least base_batch_size ({base_batch_size}), received: "
                         f"{critical_batch_size!r}")  # fmt: skip
    return min(batch_size, critical_batch_size) / base_batch_size


def rule_learning_rate(
    learning_rate: float, base_batch_size: int, batch_size: int, rule: str, *, critical_batch_size: int | None = None
) -> float:  # fmt: skip
    """lr0 k ("linear"), lr0 sqrt(k) ("sqrt") or lr0 ("none"), with k = `batch_ratio(...)`.

    Example:
        >>> rule_learning_rate(0.1, 256, 1024, "sqrt")
        0.2
    """
    learning_rate = check_positive("learning_rate", learning_rate)
    rule = check_choice("rule", rule, LEARNING_RATE_RULES)
    k = batch_ratio(base_batch_size, batch_size, critical_batch_size)
    return learning_rate * {"linear": k, "sqrt": math.sqrt(k), "none": 1.0}[rule]


def grown_warmup_epochs(
    warmup_epochs: float, base_batch_size: int, batch_size: int, *, per_doubling: float, epochs: float,
    max_fraction: float,
) -> float:  # fmt: skip
    """warmup_epochs + per_doubling log2(k) (k = batch_size / base_batch_size), capped at max_fraction epochs.

    The warmup never shrinks: a smaller batch (k < 1), or a cap below `warmup_epochs`, keeps
    `warmup_epochs`.

    Example:
        >>> grown_warmup_epochs(2.0, 256, 8192, per_doubling=1.0, epochs=90, max_fraction=0.5)
        7.0
    """
    warmup_epochs = check_non_negative("warmup_epochs", warmup_epochs)
    base_batch_size = check_int("base_batch_size", base_batch_size, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    per_doubling = check_non_negative("per_doubling", per_doubling)
    epochs = check_positive("epochs", epochs)
    max_fraction = check_positive("max_fraction", max_fraction)
    doublings = max(0.0, math.log2(batch_size / base_batch_size))
    return max(warmup_epochs, min(warmup_epochs + per_doubling * doublings, max_fraction * epochs))


@dataclasses.dataclass(frozen=True)
class ScaledRecipe:
    """What `scale_recipe` derived for the new batch.

    Attributes:
        learning_rate: the (peak) learning rate at `batch_size`.
        warmup_epochs: epochs of warmup (the rising part of a one-cycle schedule).
        optimizer: a `lepton_keras.optimizers.get` name.
        rule: the learning-rate rule applied ("linear", "sqrt" or "none").
        batch_size: the new global batch.
    """

    learning_rate: float
    warmup_epochs: float
    optimizer: str
    rule: str
    batch_size: int


def scale_recipe(
    *,
    learning_rate: float,
    base_batch_size: int,
    batch_size: int,
    optimizer: str,
    warmup_epochs: float,
    epochs: float,
    rule: str | None = None,
    warmup_epochs_per_doubling: float = 1.0,
    max_warmup_fraction: float = 0.5,
    layerwise_from_batch: int | None = 1024,
    critical_batch_size: int | None = None,
) -> ScaledRecipe:
    """The learning rate, warmup and optimizer of a recipe tuned at `base_batch_size`, for `batch_size`.

    Use it when the global batch grows (more workers, or a larger per-replica batch) and the
    model and the number of epochs stay; see the module docstring for the three rules.

    Args:
        learning_rate: the (peak) rate of the recipe at `base_batch_size`.
        base_batch_size: the global batch the recipe was tuned at.
        batch_size: the new global batch.
        optimizer: the recipe's optimizer name ("adam", "adabelief", "sgd", ...).
        warmup_epochs: the recipe's warmup, in epochs.
        epochs: the length of the run, in epochs.
        rule: "linear", "sqrt" or "none" (default None: "sqrt" for adaptive optimizers,
            "linear" for SGD and LARS, "none" for any other).
        warmup_epochs_per_doubling: epochs of warmup added per doubling of the batch (default 1).
        max_warmup_fraction: the warmup's cap, as a fraction of `epochs` (default 0.5).
        layerwise_from_batch: from this batch on, an adaptive optimizer becomes "lamb" and SGD
            "lars" (default 1024; None: never).
        critical_batch_size: the batch past which the rate stops growing (default None: no
            limit); at least `base_batch_size`. Measure it: the batch past which the rule's
            rate trains worse than the rate at a smaller batch.

    Raises:
        ValueError: a bad argument.
    """
    optimizer = check_string("optimizer", optimizer).lower()
    default_rule = "sqrt" if optimizer in ADAPTIVE_OPTIMIZERS else "linear" if optimizer in SGD_OPTIMIZERS else "none"
    rule = default_rule if rule is None else check_choice("rule", rule, LEARNING_RATE_RULES)
    layerwise_from_batch = check_int("layerwise_from_batch", layerwise_from_batch, minimum=1, allow_none=True)
    warmup_epochs_per_doubling = check_non_negative("warmup_epochs_per_doubling", warmup_epochs_per_doubling)
    max_warmup_fraction = check_positive("max_warmup_fraction", max_warmup_fraction)
    if max_warmup_fraction > 1:
        raise ValueError(f"max_warmup_fraction must be in (0, 1], received: {max_warmup_fraction!r}")
    scaled_rate = rule_learning_rate(learning_rate, base_batch_size, batch_size, rule,
                                     critical_batch_size=critical_batch_size)
    warmup = grown_warmup_epochs(
        warmup_epochs, base_batch_size, batch_size, per_doubling=warmup_epochs_per_doubling, epochs=epochs,
        max_fraction=max_warmup_fraction,
    )  # fmt: skip
    if layerwise_from_batch is not None and batch_size >= layerwise_from_batch:
        optimizer = "lamb" if optimizer in ADAPTIVE_OPTIMIZERS else "lars" if optimizer in SGD_OPTIMIZERS else optimizer
    return ScaledRecipe(scaled_rate, warmup, optimizer, rule, batch_size)
