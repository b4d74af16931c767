"""Optimizers by name: `get("lookahead_radam", learning_rate=1e-3)`, `list_optimizers("ada*")`.

Every lepton_keras optimizer and wrapper, and Keras's own optimizers, are registered with a
one-line description. A name made of wrapper names joined by "_" before an optimizer name
composes them, outermost first: "lookahead_clipping_radam" is
Lookahead(GradientClipping(RAdam())).
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import functools
import importlib
import inspect

import keras

from lepton_keras.validation import check_choice, check_learning_rate, check_string, invalid


class OptimizerKind(str, enum.Enum):
    """What an optimizer's update reads; `list_optimizers(kind=...)` takes the value ("wrapper").

    A `str` too, so a kind equals its value (`OptimizerKind.WRAPPER == "wrapper"`).
    """

    ELEMENTWISE = "elementwise"  # a per-element update
    LAYERWISE = "layerwise"  # per-variable norms
    GLOBAL = "global"  # sums over all variables
    KERAS = "keras"  # Keras's own
    WRAPPER = "wrapper"  # wraps another optimizer


def _checked_kind(kind) -> OptimizerKind:
    return OptimizerKind(check_choice("kind", kind, sorted(member.value for member in OptimizerKind)))


_KEYWORD_PARAMETERS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclasses.dataclass(frozen=True)
class RegistryEntry:
    """One registered optimizer.

    Attributes:
        name: the registry name (lower case; wrapper names have no "_").
        target: "module:Class" of the class, imported on first use.
        description: one line.
        kind: an `OptimizerKind` (or its value).
        defaults: constructor options the registry passes unless overridden (wrappers
            that need an argument, such as clipping's threshold).
    """

    name: str
    target: str
    description: str
    kind: OptimizerKind
    defaults: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "kind", _checked_kind(self.kind))
        if self.name != self.name.lower() or (self.kind is OptimizerKind.WRAPPER and "_" in self.name):
            raise invalid("name", self.name, 'a lower-case name (without "_" for a wrapper)')

    @functools.cached_property
    def cls(self) -> type:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    @functools.cached_property
    def options(self) -> frozenset[str]:
        """The keyword options the constructor takes, read once from its signature chain.

        Options a constructor passes on through **kwargs are its bases' parameters. A wrapper's
        stop short of keras.optimizers.Optimizer's: Keras's own options (learning_rate,
        weight_decay, ...) are the inner optimizer's. The optimizer a wrapper wraps is the
        registry's to pass, not an option.
        """
        stop = keras.optimizers.Optimizer.__mro__ if self.kind is OptimizerKind.WRAPPER else ()
        options = set()
        for klass in self.cls.__mro__:
            if klass in stop:
                break
            if "__init__" not in vars(klass):
                continue
            parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]  # after self
            options.update(p.name for p in parameters if p.kind in _KEYWORD_PARAMETERS)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
                break
        return frozenset(options - {"inner_optimizer"})


_LEPTON = "lepton_keras.optimizers"
_ENTRIES = [
    RegistryEntry("radam", f"{_LEPTON}.radam:RAdam", "Adam with the variance of the adaptive rate rectified", OptimizerKind.ELEMENTWISE),
    RegistryEntry("adabelief", f"{_LEPTON}.adabelief:AdaBelief", "Adam scaled by the belief in the gradient (g - m)^2", OptimizerKind.ELEMENTWISE),
    RegistryEntry("yogi", f"{_LEPTON}.yogi:Yogi", "Adam with an additive, sign-controlled second moment", OptimizerKind.ELEMENTWISE),
    RegistryEntry("novograd", f"{_LEPTON}.novograd:NovoGrad", "Adam-like with a per-layer second moment of the gradient norm", OptimizerKind.LAYERWISE),
    RegistryEntry("adan", f"{_LEPTON}.adan:Adan", "adaptive Nesterov momentum over gradient differences", OptimizerKind.ELEMENTWISE),
    RegistryEntry("ademamix", f"{_LEPTON}.ademamix:AdEMAMix", "Adam plus a slow EMA of gradients mixed in", OptimizerKind.ELEMENTWISE),
    RegistryEntry("madgrad", f"{_LEPTON}.madgrad:MADGRAD", "momentumized, adaptive, dual-averaged gradient method", OptimizerKind.ELEMENTWISE),
    RegistryEntry("prodigy", f"{_LEPTON}.prodigy:Prodigy", "learning-rate-free Adam that estimates the distance to the solution", OptimizerKind.GLOBAL),
    RegistryEntry("lars", f"{_LEPTON}.lars:LARS", "momentum SGD with a layer-wise trust ratio for large batches", OptimizerKind.LAYERWISE),
    RegistryEntry("soap", f"{_LEPTON}.soap:SOAP", "Adam in the eigenbasis of Shampoo's preconditioner", OptimizerKind.LAYERWISE),
    RegistryEntry("muon", f"{_LEPTON}.muon:Muon", "Nesterov momentum orthogonalised by Newton-Schulz for matrices, AdamW for the rest", OptimizerKind.LAYERWISE),
    RegistryEntry("schedule_free_adamw", f"{_LEPTON}.schedule_free:ScheduleFreeAdamW", "AdamW without a schedule: steps on z, evaluated at their running average", OptimizerKind.ELEMENTWISE),
    RegistryEntry("schedule_free_sgd", f"{_LEPTON}.schedule_free:ScheduleFreeSGD", "SGD without a schedule: steps on z, evaluated at their running average", OptimizerKind.ELEMENTWISE),
    RegistryEntry("adopt", f"{_LEPTON}.adopt:ADOPT", "Adam normalised by the previous second moment; converges with any beta_2", OptimizerKind.ELEMENTWISE),
    RegistryEntry("cautious", f"{_LEPTON}.cautious:Cautious", "masks the update where it disagrees in sign with the gradient", OptimizerKind.WRAPPER),
    RegistryEntry("lookahead", f"{_LEPTON}.lookahead:Lookahead", "slow weights that follow k fast steps of any optimizer", OptimizerKind.WRAPPER),
    RegistryEntry("swa", f"{_LEPTON}.weight_averaging:StochasticWeightAveraging", "equal-weight average of the weights along training", OptimizerKind.WRAPPER),
    RegistryEntry("ema", f"{_LEPTON}.weight_averaging:ExponentialMovingAverage", "exponential moving average of the weights", OptimizerKind.WRAPPER),
    RegistryEntry("accumulation", f"{_LEPTON}.gradient_accumulation:GradientAccumulation", "averages the gradients of N micro-batches per update", OptimizerKind.WRAPPER, {"steps": 2}),
    RegistryEntry("clipping", f"{_LEPTON}.gradient_clipping:GradientClipping", "clips the global gradient by value, norm or global norm", OptimizerKind.WRAPPER, {"global_norm": 1.0}),
    RegistryEntry("agc", f"{_LEPTON}.adaptive_gradient_clipping:AdaptiveGradientClipping", "clips each unit's gradient relative to its weight norm", OptimizerKind.WRAPPER),
    RegistryEntry("centralization", f"{_LEPTON}.gradient_centralization:GradientCentralization", "subtracts the mean from each output unit's gradient", OptimizerKind.WRAPPER),
    RegistryEntry("fused", f"{_LEPTON}.fused_updates:FusedUpdates", "runs each variable's update of any optimizer as one XLA kernel", OptimizerKind.WRAPPER),
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
_ENTRIES += [RegistryEntry(name, f"keras.optimizers:{cls}", text, OptimizerKind.KERAS) for name, (cls, text) in _KERAS.items()]
REGISTRY = {entry.name: entry for entry in _ENTRIES}


def list_optimizers(pattern: str = "*", *, kind: str | None = None) -> list[tuple[str, str]]:
    """(name, one-line description) of every registered optimizer whose name matches the glob `pattern`
    and, given a `kind` ("wrapper" or an `OptimizerKind`), of that kind."""
    pattern = check_string("pattern", pattern)
    if kind is not None:
        kind = _checked_kind(kind)
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
    if rest and wrapper in REGISTRY and REGISTRY[wrapper].kind is OptimizerKind.WRAPPER:
        return [REGISTRY[wrapper], *_parse(rest)]
    close = [n for n in REGISTRY if n[:3] == key[:3]] or sorted(REGISTRY)
    raise ValueError(f"unknown optimizer name {name!r}; registered names include {close}")


def _build(entries: list[RegistryEntry], overrides: dict, full_name: str):
    *wrappers, base = entries
    if base.kind is OptimizerKind.WRAPPER:
        raise ValueError(f"{full_name!r} names a wrapper without an optimizer to wrap, e.g. '{base.name}_adam'")
    per_entry = []
    for entry in entries:
        if entry.kind is OptimizerKind.KERAS:  # the innermost; Keras checks (and names) what it does not take
            options, overrides = overrides, {}
        else:
            options = {o: overrides.pop(o) for o in list(overrides) if o in entry.options}
        per_entry.append(options or dict(entry.defaults))
    if overrides:
        raise ValueError(f"no optimizer in {full_name!r} takes the options {sorted(overrides)}")
    optimizer = base.cls(**per_entry[-1])
    for entry, options in zip(reversed(wrappers), reversed(per_entry[:-1])):
        optimizer = entry.cls(optimizer, **options)
    return optimizer


class _OptimizerByName:
    """What Keras finds under a registry name: building it, or `from_config(options)`, is `get(name, **options)`.

    Keras looks a string optimizer up by name and builds what it finds: with `from_config`
    from its custom-object registry (Keras 3.15), or by calling it from its own table
    (keras-nightly 3.16; `keras_compat.resolve_names`). So `model.compile(optimizer="radam")`
    and `keras.optimizers.get("radam")` build the registry's optimizer, with the registry's
    defaults. One subclass per name (`_by_name`).
    """

    name: str

    def __new__(cls, **options):
        return get(cls.name, **options)

    @classmethod
    def from_config(cls, config: dict):
        return get(cls.name, **config)


def _by_name(name: str) -> type:
    return type(f"OptimizerByName({name})", (_OptimizerByName,), {"name": name})


def keras_names() -> list[str]:
    """The names `register_keras_names` gives Keras: every registry name, and each wrapper
    around each optimizer ("lookahead_radam", "ema_adam"). Deeper compositions
    ("lookahead_clipping_radam") are `lepton_keras.optimizers.get`'s only."""
    wrappers = [entry.name for entry in _ENTRIES if entry.kind is OptimizerKind.WRAPPER]
    optimizers = [entry.name for entry in _ENTRIES if entry.kind is not OptimizerKind.WRAPPER]
    return list(REGISTRY) + [f"{wrapper}_{optimizer}" for wrapper in wrappers for optimizer in optimizers]


def register_keras_names() -> str:
    """Makes every name of `keras_names()`, and each lepton_keras class's registered name
    ("lepton_keras>RAdam"), a Keras optimizer identifier (idempotent); returns how Keras
    resolves them (`keras_compat.resolve_names`: "registry", "table" or "unavailable").

    Uses Keras's public registry (`keras.saving.get_custom_objects()`), and Keras's own table
    where this Keras consults only that (keras-nightly 3.16). The names Keras already takes
    stay Keras's (`keras_compat.keras_optimizer_names`, else its class names lower-cased):
    `compile(optimizer="muon")` is `keras.optimizers.Muon`, as Keras documents, and a saved
    Keras optimizer loads as Keras's (Keras looks its own classes up by lower-cased name, and
    would find a registered "muon" first); `lepton_keras.optimizers.get("muon")`, the class
    and composed names ("lookahead_muon") are ours. A bare wrapper name ("lookahead") raises
    get's error.
    """
    from lepton_keras.distribute.keras_compat import keras_optimizer_names, resolve_names

    keras_takes = keras_optimizer_names()
    if keras_takes is None:
        keras_takes = {name.lower() for name in dir(keras.optimizers)}
    custom_objects = keras.saving.get_custom_objects()
    names = {}
    for name in keras_names():
        if name not in keras_takes:
            names[name] = custom_objects.setdefault(name, _by_name(name))
    for entry in _ENTRIES:
        if entry.kind is not OptimizerKind.KERAS:
            names[keras.saving.get_registered_name(entry.cls)] = entry.cls
    return resolve_names(keras.optimizers.get, keras.optimizers.Adam, names)
