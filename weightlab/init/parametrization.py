"""abc-parametrizations: SP, NTK, μP and mean-field, relative to a base width.

Yang & Hu 2021 ("Tensor Programs IV", Sec. 3, Def. 3.1) write every layer's weight as
``W = n^{-a} w``, ``w ~ N(0, n^{-2b})``, trained with learning rate ``η n^{-c}``. weightlab
writes each rule relative to the model's standard (SP) initialization and a *base*
width (as ``mup`` does, Yang et al. 2021, "Tensor Programs V", App. B / Table 3): with
``m = n / n_base`` the tensor's width multiplier,

- ``a``: forward multiplier ``m^{-a}`` (on the layer's input, so its bias is unscaled);
- ``b``: the stored weight is the SP init times ``m^{-b}``, applied once;
- ``c_sgd`` / ``c_adam``: learning rate ``η · m^{-c}`` under SGD / Adam.

``m`` is the fan-in multiplier for hidden and output weights and the fan-out multiplier
for input weights; a bias is rescaled with its layer's fan-in multiplier and its learning
rate uses its own (fan-out) multiplier; other width-sized vectors use their own. The
symmetry ``(a, b, c_sgd, c_adam) -> (a + θ, b - θ, c_sgd - 2θ, c_adam - θ)`` leaves the
function computed at every step unchanged (TP IV, Eq. 5; under Adam exactly when ε = 0,
as ε does not scale); :meth:`ABC.folded` uses it to move every multiplier into the
weights and learning rates, so a parametrized plain MLP keeps the population fast path.

Presets (:data:`PRESETS`): ``sp`` (all zero), ``ntk`` (hidden and output ``a = ½``,
``b = -½``; SGD lr unscaled; Adam lr × ``m^{-1}`` for hidden weights and × ``m^{-½}`` for
the other width-sized tensors, so under Adam, too, the function moves O(1) while features
move O(m^{-½}): the kernel regime), ``mup`` (``mup`` 1.0.0's placement: ``MuReadout`` divides the readout input
by ``m``, ``set_base_shapes`` multiplies readout weights and hidden/readout biases by
``√m`` once; ``MuSGD`` multiplies the lr of vector-like tensors by ``m``; ``MuAdam``
divides the hidden lr by ``m``), ``mup-table`` (TP IV's table form, ``a_1 = -½``,
``a_{L+1} = ½``, ``b = ½``, ``c = 0`` for SGD: abc-equivalent to ``mup``), and ``mf``
(mean field: for one hidden layer μP *is* the mean-field parametrization, TP IV Sec. 5,
so ``mf`` uses μP's rules).

The multipliers are non-persistent buffers on the modules read by a forward pre-hook,
and the rules plus base shapes are a JSON record (:class:`Record`) saved beside the
weights; nothing lives on parameter objects, so the parametrization survives
``copy.deepcopy``, ``torch.func.stack_module_state``, FSDP-style parameter replacement,
and save -> load. The record says whether the stored weights are already scaled, so
applying it to a loaded checkpoint twice equals once; rescaling a model that was
already parametrized (a marker attribute, kept by ``copy.deepcopy``) is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from weightlab.errors import ConfigError, RunFileError
from weightlab.init.base_shapes import BaseShapes, Dims
from weightlab.train.config import ParamGroup

KINDS = ("input.weight", "hidden.weight", "output.weight", "bias", "vector")
MULT_BUFFER = "wl_input_mult"  # non-persistent buffer read by the forward pre-hook
APPLIED = "_wl_parametrized"  # plain attribute on the model: its weights carry the scaling
FORMAT = 1


@dataclass(frozen=True)
class Rule:
    """One tensor kind's exponents: multiplier ``m^{-a}``, init ``× m^{-b}``, lr ``×
    m^{-c}`` (SGD, Adam)."""

    a: float = 0.0
    b: float = 0.0
    c_sgd: float = 0.0
    c_adam: float = 0.0

    def shifted(self, theta: float) -> Rule:
        """The abc-symmetry (TP IV Eq. 5): the same function at every step."""
        return Rule(self.a + theta, self.b - theta, self.c_sgd - 2 * theta, self.c_adam - theta)


@dataclass(frozen=True)
class ABC:
    """A parametrization: a :class:`Rule` per kind in :data:`KINDS` (missing = zeros)."""

    name: str
    rules: Mapping[str, Rule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = set(self.rules) - set(KINDS)
        if bad:
            raise ConfigError(f"unknown tensor kinds {sorted(bad)}; use {', '.join(KINDS)}")
        for k in ("bias", "vector"):
            if self.rule(k).a != 0:
                raise ConfigError(f"a {k} multiplier (a != 0) is not supported; shift b and c")

    def rule(self, kind: str) -> Rule:
        return self.rules.get(kind, Rule())

    def folded(self) -> ABC:
        """The abc-equivalent form with every forward multiplier 1 (``a = 0``)."""
        return ABC(self.name + "-folded", {k: r.shifted(-r.a) for k, r in self.rules.items()})

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "rules": {k: [r.a, r.b, r.c_sgd, r.c_adam] for k, r in self.rules.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ABC:
        rules = d.get("rules", {})
        if not isinstance(rules, Mapping):
            raise ConfigError("parametrization rules must be {kind: [a, b, c_sgd, c_adam]}")
        return cls(
            str(d.get("name", "custom")), {k: Rule(*map(float, v)) for k, v in rules.items()}
        )


_MUP = {
    "input.weight": Rule(0, 0, -1, 0),
    "hidden.weight": Rule(0, 0, 0, 1),
    "output.weight": Rule(1, -0.5, -1, 0),
    "bias": Rule(0, -0.5, -1, 0),
    "vector": Rule(0, 0, -1, 0),
}
PRESETS: dict[str, ABC] = {
    "sp": ABC("sp", {}),
    "ntk": ABC(
        "ntk",
        {
            "input.weight": Rule(0, 0, 0, 0.5),
            "hidden.weight": Rule(0.5, -0.5, 0, 1),
            "output.weight": Rule(0.5, -0.5, 0, 0.5),
            "bias": Rule(0, 0, 0, 0.5),
            "vector": Rule(0, 0, 0, 0.5),
        },
    ),
    "mup": ABC("mup", _MUP),
    "mup-table": ABC(
        "mup-table",
        {
            **_MUP,
            "input.weight": _MUP["input.weight"].shifted(-0.5),
            "output.weight": _MUP["output.weight"].shifted(-0.5),
        },
    ),
    "mf": ABC("mf", _MUP),
}


def get_parametrization(scheme: str | ABC) -> ABC:
    """A preset by name (``sp``, ``ntk``, ``mup``, ``mup-table``, ``mf``; ``NAME-folded``
    for the a = 0 form) or an :class:`ABC` itself."""
    if isinstance(scheme, ABC):
        return scheme
    base = scheme.removesuffix("-folded")
    if base not in PRESETS:
        raise ConfigError(
            f"unknown parametrization {scheme!r}; choose one of: {', '.join(PRESETS)} "
            "(or NAME-folded)"
        )
    p = PRESETS[base]
    return p.folded() if scheme.endswith("-folded") else p


@dataclass(frozen=True)
class TensorPlan:
    """How one parameter is parametrized: its kind, multiplier ``m`` for ``b`` and for
    ``c``, and the resulting forward multiplier, init scale and lr multipliers."""

    kind: str
    m_init: float
    m_lr: float
    forward: float
    init: float
    lr_sgd: float
    lr_adam: float


def _layer_mult(d: Dims) -> tuple[str, float]:
    out_m, in_m = d.mults[0], d.mults[1]
    if out_m is not None and in_m is not None:
        return "hidden.weight", in_m
    if in_m is not None:
        return "output.weight", in_m
    if out_m is not None:
        return "input.weight", out_m
    return "fixed", 1.0


def plan(
    model: nn.Module, scheme: str | ABC, base_shapes: BaseShapes | None
) -> dict[str, TensorPlan]:
    """Per parameter name, its :class:`TensorPlan`. μP-like schemes without base shapes,
    or base shapes that do not match ``model``, are a :class:`ConfigError`."""
    abc = get_parametrization(scheme)
    if base_shapes is None:
        if abc.rules:
            raise ConfigError(
                f"parametrization {abc.name!r} needs base shapes; pass base_shapes="
                "BaseShapes.infer(base_model, delta_model) or BaseShapes.declare({...})"
            )
        base_shapes = BaseShapes({n: (None,) * p.dim() for n, p in model.named_parameters()})
    dims = base_shapes.check(model)
    modules = dict(model.named_modules())
    out: dict[str, TensorPlan] = {}
    for name, d in dims.items():
        owner, _, leaf = name.rpartition(".")
        mod = modules.get(owner)
        layer = isinstance(mod, nn.Linear | nn.modules.conv._ConvNd)
        if layer and leaf == "weight":
            kind, m = _layer_mult(d)
            m_init = m_lr = m
        elif layer and leaf == "bias":
            kind = "bias"
            own = d.mults[0]
            m_lr = 1.0 if own is None else own
            wk, m_init = _layer_mult(dims[owner + ".weight"])
            m_init = m_init if wk in ("hidden.weight", "output.weight") else 1.0
        else:
            if d.ninf > 1:
                raise ConfigError(
                    f"{name!r} has {d.ninf} width dimensions but is not a Linear/Conv weight; "
                    "abc-parametrizations here cover Linear/Conv weights and vectors"
                )
            kind = "vector" if d.ninf == 1 else "fixed"
            m_init = m_lr = next((x for x in d.mults if x is not None), 1.0)
        r = abc.rule(kind) if kind != "fixed" else Rule()
        out[name] = TensorPlan(
            kind,
            m_init,
            m_lr,
            forward=m_init ** (-r.a),
            init=m_init ** (-r.b),
            lr_sgd=m_lr ** (-r.c_sgd),
            lr_adam=m_lr ** (-r.c_adam),
        )
    return out


def _scale_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0] * getattr(module, MULT_BUFFER), *args[1:])


@dataclass(frozen=True)
class Record:
    """What is saved beside the weights (``*.parametrization.json``): the scheme's rules,
    the base shapes, and whether the stored weights already carry the init scaling."""

    abc: ABC
    base_shapes: BaseShapes | None
    weights_scaled: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "parametrization": self.abc.to_dict(),
            "base_shapes": None if self.base_shapes is None else self.base_shapes.to_dict(),
            "weights_scaled": self.weights_scaled,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Record:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise RunFileError(f"not a weightlab parametrization record (format {FORMAT})")
        bs = d.get("base_shapes")
        try:
            return cls(
                ABC.from_dict(d["parametrization"]),  # type: ignore[arg-type]
                None if bs is None else BaseShapes.from_dict(bs),  # type: ignore[arg-type]
                bool(d.get("weights_scaled", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RunFileError(
                f"malformed parametrization record ({type(e).__name__}: {e}); "
                "save it with weightlab.init.parametrization.save"
            ) from None

    def save(self, path: str | Path) -> Path:
        from weightlab.runs.files import atomic_write_bytes

        p = Path(path)
        atomic_write_bytes(p, json.dumps(self.to_dict(), indent=1, sort_keys=True).encode())
        return p

    @classmethod
    def load(cls, path: str | Path) -> Record:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise RunFileError(f"cannot read parametrization record {path}: {e}") from None


def parametrize(
    model: nn.Module,
    scheme: str | ABC | Record = "mup",
    base_shapes: BaseShapes | None = None,
    *,
    scaled: bool = False,
) -> Record:
    """Apply ``scheme`` to ``model`` in place: forward multipliers (a pre-hook reading a
    non-persistent buffer per layer) and, unless ``scaled``, the init scaling ``m^{-b}``
    of the stored weights. Returns the :class:`Record` to save beside the weights (its
    ``weights_scaled`` is True). Applying a record whose weights are scaled (as after
    :func:`load`) only sets the multipliers, so applying it twice equals once.

    Raises:
        ConfigError: μP (any non-SP rule) without base shapes; base shapes that do not
            match the model; rescaling a model this process already parametrized.
    """
    if isinstance(scheme, Record):
        rec = scheme
        abc, base_shapes, scaled = rec.abc, rec.base_shapes, rec.weights_scaled
    else:
        abc = get_parametrization(scheme)
    plans = plan(model, abc, base_shapes)
    if not scaled and getattr(model, APPLIED, False):
        raise ConfigError(
            "this model is already parametrized (its weights are scaled); re-apply the "
            "Record that parametrize/load returned, or pass scaled=True"
        )
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    with torch.no_grad():
        if not scaled:
            for n, tp in plans.items():
                if tp.init != 1.0:
                    params[n].mul_(tp.init)
        for n, tp in plans.items():
            owner, _, leaf = n.rpartition(".")
            if leaf != "weight" or tp.kind == "bias":
                continue
            mod = modules[owner]
            has = MULT_BUFFER in mod._buffers
            if tp.forward == 1.0 and not has:
                continue
            value = torch.tensor(tp.forward, dtype=params[n].dtype, device=params[n].device)
            if has:
                setattr(mod, MULT_BUFFER, value)
            else:
                mod.register_buffer(MULT_BUFFER, value, persistent=False)
                mod.register_forward_pre_hook(_scale_input)
    object.__setattr__(model, APPLIED, True)  # survives copy.deepcopy; not in state_dict
    return Record(abc, base_shapes, True)


def lr_groups(model: nn.Module, record: Record, optimizer: str = "adam") -> tuple[ParamGroup, ...]:
    """Per-parameter lr multipliers as :class:`~weightlab.train.ParamGroup` (exact names)
    for ``OptimConfig(groups=...)``: ``m^{-c_sgd}`` for ``sgd``, ``m^{-c_adam}`` for
    ``adam`` / ``adamw`` (``MuSGD`` / ``MuAdam``'s rules for ``mup``); weight decay gets
    the inverse multiplier, as ``mup`` does, so lr × wd does not change with width."""
    if optimizer not in ("sgd", "adam", "adamw"):
        raise ConfigError(f"lr rules exist for sgd, adam and adamw, not {optimizer!r}")
    plans = plan(model, record.abc, record.base_shapes)
    out = []
    for n, tp in plans.items():
        mult = tp.lr_sgd if optimizer == "sgd" else tp.lr_adam
        if mult != 1.0:
            out.append(ParamGroup((n,), lr_mult=mult, wd_mult=1.0 / mult))
    return tuple(out)


def lr_multipliers(model: nn.Module, record: Record, optimizer: str = "adam") -> dict[str, float]:
    """``{name: lr multiplier}`` for every parameter (see :func:`lr_groups`)."""
    plans = plan(model, record.abc, record.base_shapes)
    return {n: (tp.lr_sgd if optimizer == "sgd" else tp.lr_adam) for n, tp in plans.items()}


def record_path(weights: str | Path) -> Path:
    """The record's file beside ``weights``: ``model.pt`` -> ``model.parametrization.json``."""
    p = Path(weights)
    return p.with_name(p.stem + ".parametrization.json")


def save(model: nn.Module, path: str | Path, record: Record) -> Path:
    """Save the state dict to ``path`` (safetensors, atomically) and the record beside it
    (weights marked scaled)."""
    from weightlab.runs.files import save_tensors

    save_tensors(Path(path), dict(model.state_dict()))
    replace(record, weights_scaled=True).save(record_path(path))
    return Path(path)


def load(model: nn.Module, path: str | Path) -> Record:
    """Load weights saved by :func:`save` into ``model`` and re-apply the record's
    multipliers without rescaling (the weights are already scaled)."""
    rp = record_path(path)
    if not rp.exists():
        raise RunFileError(
            f"{rp} is missing; save weights with weightlab.init.parametrization.save"
        )
    from weightlab.runs.files import load_tensors

    rec = Record.load(rp)
    state = load_tensors(Path(path))  # safetensors: nothing is unpickled
    model.load_state_dict(state)
    return parametrize(model, rec)
