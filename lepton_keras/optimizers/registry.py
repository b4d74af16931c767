"""Optimizers by name: `get("lookahead_radam", learning_rate=1e-3)`, `list_optimizers("ada*")`.

Every lepton_keras optimizer and wrapper, and Keras's own optimizers, are registered with a
one-line description. A name made of wrapper names joined by "_" before an optimizer name
composes them, outermost first: "lookahead_clipping_radam" is
Lookahead(GradientClipping(RAdam())).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import inspect

import keras

from lepton_keras.validation import check_choice, check_learning_rate, check_string, invalid


@dataclasses.dataclass(frozen=True)
class RegistryEntry:
    """One registered optimizer.

    Attributes:
        name: the registry name (lower case; wrapper names have no "_").
        target: "module:Class" of the class, imported on first use.
        description: one line.
        kind: "elementwise" (a per-element update), "layerwise" (per-variable norms),
            "global" (sums over all variables), "keras" (Keras's own) or "wrapper" (wraps
            another optimizer).
        defaults: constructor options the registry passes unless overridden (wrappers
            that need an argument, such as clipping's threshold).
    """

    name: str
    target: str
    description: str
    kind: str
    defaults: dict = dataclasses.field(default_factory=dict)

    @property
    def cls(self):
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


_LEPTON = "lepton_keras.optimizers"
_ENTRIES = [
    RegistryEntry("radam", f"{_LEPTON}.radam:RAdam", "Adam with the variance of the adaptive rate rectified", "elementwise"),
    RegistryEntry("adabelief", f"{_LEPTON}.adabelief:AdaBelief", "Adam scaled by the belief in the gradient (g - m)^2", "elementwise"),
    RegistryEntry("yogi", f"{_LEPTON}.yogi:Yogi", "Adam with an additive, sign-controlled second moment", "elementwise"),
    RegistryEntry("novograd", f"{_LEPTON}.novograd:NovoGrad", "Adam-like with a per-layer second moment of the gradient norm", "layerwise"),
    RegistryEntry("adan", f"{_LEPTON}.adan:Adan", "adaptive Nesterov momentum over gradient differences", "elementwise"),
    RegistryEntry("ademamix", f"{_LEPTON}.ademamix:AdEMAMix", "Adam plus a slow EMA of gradients mixed in", "elementwise"),
    RegistryEntry("madgrad", f"{_LEPTON}.madgrad:MADGRAD", "momentumized, adaptive, dual-averaged gradient method", "elementwise"),
    RegistryEntry("prodigy", f"{_LEPTON}.prodigy:Prodigy", "learning-rate-free Adam that estimates the distance to the solution", "global"),
    RegistryEntry("lars", f"{_LEPTON}.lars:LARS", "momentum SGD with a layer-wise trust ratio for large batches", "layerwise"),
    RegistryEntry("lookahead", f"{_LEPTON}.lookahead:Lookahead", "slow weights that follow k fast steps of any optimizer", "wrapper"),
    RegistryEntry("swa", f"{_LEPTON}.weight_averaging:StochasticWeightAveraging", "equal-weight average of the weights along training", "wrapper"),
    RegistryEntry("ema", f"{_LEPTON}.weight_averaging:ExponentialMovingAverage", "exponential moving average of the weights", "wrapper"),
    RegistryEntry("accumulation", f"{_LEPTON}.gradient_accumulation:GradientAccumulation", "averages the gradients of N micro-batches per update", "wrapper", {"steps": 2}),
    RegistryEntry("clipping", f"{_LEPTON}.gradient_clipping:GradientClipping", "clips the global gradient by value, norm or global norm", "wrapper", {"global_norm": 1.0}),
    RegistryEntry("agc", f"{_LEPTON}.adaptive_gradient_clipping:AdaptiveGradientClipping", "clips each unit's gradient relative to its weight norm", "wrapper"),
    RegistryEntry("centralization", f"{_LEPTON}.gradient_centralization:GradientCentralization", "subtracts the mean from each output unit's gradient", "wrapper"),
    RegistryEntry("fused", f"{_LEPTON}.fused_updates:FusedUpdates", "runs each variable's update of any optimizer as one XLA kernel", "wrapper"),
]
_KERAS = {
    "adadelta": ("Adadelta", "Keras: Adadelta, adaptive rates from running averages of updates"),
    "adafactor": ("Adafactor", "Keras: Adafactor, factored second moments for memory"),
    "adagrad": ("Adagrad", "Keras: Adagrad, per-parameter rates from summed squared gradients"),
    "adam": ("Adam", "Keras: Adam"),
    "adamax": ("Adamax", "Keras: Adamax, Adam with the infinity norm"),
    "adamw": ("AdamW", "Keras: AdamW, Adam with decoupled weight decay"),
    "ftrl": ("Ftrl", "Keras: FTRL-Proximal"),
    "lamb": ("Lamb", "Keras: LAMB, Adam with a layer-wise trust ratio"),
    "lion": ("Lion", "Keras: Lion, sign of an interpolated momentum"),
    "nadam": ("Nadam", "Keras: Nadam, Adam with Nesterov momentum"),
    "rmsprop": ("RMSprop", "Keras: RMSprop"),
    "sgd": ("SGD", "Keras: SGD with optional (Nesterov) momentum"),
}
_ENTRIES += [RegistryEntry(name, f"keras.optimizers:{cls}", text, "keras") for name, (cls, text) in _KERAS.items()]
REGISTRY = {entry.name: entry for entry in _ENTRIES}


def list_optimizers(pattern: str = "*", *, kind: str | None = None) -> list[tuple[str, str]]:
    """(name, one-line description) of every registered optimizer whose name matches the glob `pattern`."""
    pattern = check_string("pattern", pattern)
    if kind is not None:
        kind = check_choice("kind", kind, sorted({entry.kind for entry in _ENTRIES}))
    return [
        (entry.name, entry.description)
        for entry in _ENTRIES
        if fnmatch.fnmatchcase(entry.name, pattern.lower()) and (kind is None or entry.kind == kind)
    ]


def get(identifier, **overrides):
    """An optimizer from a registry name, a serialized config or an instance.

    Args:
        identifier: a name ("radam", "adam", "lookahead_radam"), a config dict as written
            by `keras.optimizers.serialize`, or an optimizer instance (returned as is).
        **overrides: constructor options. For a composed name each option goes to the
            outermost optimizer whose constructor takes it ("sync_period" to Lookahead,
            "learning_rate" to the inner optimizer).

    Raises:
        ValueError: an unknown name (the message lists the close matches), overrides for an
            instance, or an option no optimizer in the composition takes.
    """
    if isinstance(identifier, keras.optimizers.Optimizer):
        if overrides:
            raise ValueError(f"cannot apply options {sorted(overrides)} to an optimizer instance; received {identifier!r}")
        return identifier
    if isinstance(identifier, dict):
        optimizer = keras.optimizers.deserialize(identifier)
        if overrides:
            raise ValueError(f"cannot apply options {sorted(overrides)} to a serialized config")
        return optimizer
    if not isinstance(identifier, str):
        raise invalid("identifier", identifier, "a name, a config dict or an optimizer")
    if "learning_rate" in overrides:  # Keras's own optimizers take any number
        overrides["learning_rate"] = check_learning_rate("learning_rate", overrides["learning_rate"])
    return _build(_parse(identifier), dict(overrides), identifier)


def _parse(name: str) -> list[RegistryEntry]:
    key = name.strip().lower()
    if key in REGISTRY:
        return [REGISTRY[key]]
    wrapper, _, rest = key.partition("_")
    if rest and wrapper in REGISTRY and REGISTRY[wrapper].kind == "wrapper":
        return [REGISTRY[wrapper], *_parse(rest)]
    close = [n for n in REGISTRY if n[:3] == key[:3]] or sorted(REGISTRY)
    raise ValueError(f"unknown optimizer name {name!r}; registered names include {close}")


def _accepts(cls, option: str) -> bool:
    if option in ("self", "inner_optimizer", "args", "kwargs"):
        return False
    # Options a constructor passes on through **kwargs (fused_updates, weight_decay, ...) are its
    # bases' parameters; a wrapper's stop at OptimizerWrapper (Keras's own options are the inner one's).
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        if option in parameters:
            return True
        passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if not passes_on or klass.__name__ == "OptimizerWrapper":
            return False
    return False


def _build(entries: list[RegistryEntry], overrides: dict, full_name: str):
    *wrappers, base = entries
    if base.kind == "wrapper":
        raise ValueError(f"{full_name!r} names a wrapper without an optimizer to wrap, e.g. '{base.name}_adam'")
    per_entry = []
    for entry in entries:
        if entry.kind == "keras":
            options, overrides = overrides, {}
        else:
            options = {o: overrides.pop(o) for o in list(overrides) if _accepts(entry.cls, o)}
        per_entry.append(options or dict(entry.defaults))
    if overrides:
        raise ValueError(f"no optimizer in {full_name!r} takes the options {sorted(overrides)}")
    optimizer = base.cls(**per_entry[-1])
    for entry, options in zip(reversed(wrappers), reversed(per_entry[:-1])):
        optimizer = entry.cls(optimizer, **options)
    return optimizer


class _OptimizerByName:
    """What Keras finds under a registry name: `from_config(options)` is `get(name, **options)`.

    Keras looks a string optimizer up in its public custom-object registry and builds it with
    `from_config`, so `model.compile(optimizer="radam")` and `keras.optimizers.get("radam")`
    build the registry's optimizer, with the registry's defaults.
    """

    def __init__(self, name: str):
        self.name = name

    def from_config(self, config: dict):
        return get(self.name, **config)

    def __repr__(self) -> str:
        return f"<lepton_keras optimizer name {self.name!r}>"


def keras_names() -> list[str]:
    """The names `register_keras_names` gives Keras: every registry name, and each wrapper
    around each optimizer ("lookahead_radam", "ema_adam"). Deeper compositions
    ("lookahead_clipping_radam") are `lepton_keras.optimizers.get`'s only."""
    wrappers = [entry.name for entry in _ENTRIES if entry.kind == "wrapper"]
    optimizers = [entry.name for entry in _ENTRIES if entry.kind != "wrapper"]
    return list(REGISTRY) + [f"{wrapper}_{optimizer}" for wrapper in wrappers for optimizer in optimizers]


def register_keras_names() -> None:
    """Makes every name of `keras_names()` a Keras optimizer identifier (idempotent).

    Uses Keras's public registry (`keras.saving.get_custom_objects()`). The names Keras
    already takes ("adam") stay Keras's (`keras_compat.keras_optimizer_names`); where that
    list cannot be read, no Keras name is registered. A bare wrapper name ("lookahead")
    raises get's error.
    """
    from lepton_keras.distribute.keras_compat import keras_optimizer_names

    keras_takes = keras_optimizer_names()
    custom_objects = keras.saving.get_custom_objects()
    for name in keras_names():
        if REGISTRY.get(name) and REGISTRY[name].kind == "keras" and (keras_takes is None or name in keras_takes):
            continue
        custom_objects.setdefault(name, _OptimizerByName(name))
