"""The one seam between the training loop and a multi-task method.

The trainer computes per-task losses ``{name: L_t}`` (plus, for CORE-MTL, one already-weighted
``extra_loss`` = lambda_rec L_rec + lambda_ind L_ind + lambda_cfa L_CFA, Eq. 16) and hands them to
``method.backward(...)``, which must leave gradients in every parameter's ``.grad``. The trainer
never looks at a method's name. Two families:

* :class:`Weighting` -- scalarises: d = grad of sum_t w_t L_t (EW, UW, DWA, RLW, STCH, ...).
* :class:`Aggregator` -- aggregates the Jacobian J (rows: grad L_t) of the task losses on the shared
  parameters (default) or on the shared representation (``on_features=True``, MGDA-UB style)
  into one update direction (MGDA, PCGrad, CAGrad, ...). This is the class 𝒜 of paper Def. 2.1.

Optional hooks: :meth:`Method.parameters` (learnable weights the optimiser must update, e.g. UW's
log-variances), :meth:`Method.on_epoch_end`, :meth:`Method.step_logs` (per-term values of the last
backward, e.g. MT-CRL's regularisers and their gradient shares), and ``state_dict``/``load_state_dict``
for exact resume.

Held-out (bi-level) hook, generic so the trainer never branches on a name: a method whose class
attribute ``uses_validation_batch`` is True (MOML) wants one held-out batch per training step. The
trainer then calls, once per step and *before* the step's own forward/backward::

    logs = method.meta_step(loss_fn, train_batch, val_batch, params)

* ``loss_fn(batch) -> {task: scalar loss}`` evaluates the model *as it currently is* on a batch
  (a closure over the model and the objective, with autograd enabled);
  ``loss_fn(batch, return_outputs=True)`` returns ``(task_losses, model_outputs)`` instead, for methods
  that need the shared ``features`` of the held-out batch (DANN);
* ``train_batch`` is the step's training batch, ``val_batch`` a batch from a held-out split (the
  validation split, or a held-out slice of the training data: the trainer's choice);
* ``params`` is the list of the model's trainable parameters.

``meta_step`` may perturb ``params`` temporarily (a look-ahead step) but must restore their values
and leave every ``.grad`` as it found it; it updates only the method's own state (e.g. the task
weights) and returns floats worth logging. The regular ``method.backward(...)`` follows as usual.

``build_method`` also accepts ``"torchjd:<AggregatorName>"`` (e.g. ``"torchjd:UPGrad"``): any
aggregator of the installed torchjd, run through the :class:`Aggregator` seam.

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


class Method(nn.Module):
    """Base class: turns per-task losses into parameter gradients."""

    #: short registry name, set by :func:`register`
    name: str = "method"
    #: True when the method needs :meth:`meta_step` with a held-out batch each step (module docstring)
    uses_validation_batch: bool = False

    def __init__(self, task_names: Sequence[str]):
        super().__init__()
        if not task_names:
            raise ValueError(f"{type(self).__name__} needs at least one task")
        self.task_names = list(task_names)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def backward(
        self,
        losses: dict[str, Tensor],
        *,
        shared_params: Sequence[Tensor],
        features: Tensor | None = None,
        extra_loss: Tensor | None = None,
    ) -> dict[str, float]:
        """Fill ``.grad`` of all parameters; return scalars worth logging (e.g. the task weights)."""
        raise NotImplementedError  # abstract

    def on_epoch_end(self, stats: dict[str, float]) -> None:
        """Called by the trainer after each epoch with the mean training loss per task."""

    def step_logs(self) -> dict[str, float]:
        """Per-term values recorded during the last :meth:`backward` (e.g. each regulariser's value and
        its share of the gradient), read by the trainer every log step; empty by default."""
        return {}

    def meta_step(
        self,
        loss_fn: Callable[[dict], dict[str, Tensor]],
        train_batch: dict,
        val_batch: dict,
        params: Sequence[Tensor],
    ) -> dict[str, float]:
        """Bi-level hook, called only when ``uses_validation_batch`` is True (see the module docstring)."""
        return {}

    def _ordered(self, losses: dict[str, Tensor]) -> Tensor:
        missing = [t for t in self.task_names if t not in losses]
        if missing:
            raise KeyError(f"{type(self).__name__}: losses lack tasks {missing}; got {sorted(losses)}")
        return torch.stack([losses[t] for t in self.task_names])

    def _weight_logs(self, w: Tensor) -> dict[str, float]:
        """``{"weight/<task>": w_t}`` of the task weights ``w`` (``(T,)``), read back from the device at once."""
        return dict(zip((f"weight/{t}" for t in self.task_names), w.detach().double().tolist()))


class Weighting(Method):
    """Scalarising methods: back-propagate ``combine(losses) + extra_loss``."""

    def combine(self, losses: Tensor) -> Tensor:
        """Map the ``(T,)`` vector of task losses to the scalar to minimise."""
        return (self.weights(losses) * losses).sum()

    def weights(self, losses: Tensor) -> Tensor:
        """``(T,)`` task weights for this step (no gradient flows through them unless intended)."""
        raise NotImplementedError  # abstract

    def backward(self, losses, *, shared_params, features=None, extra_loss=None):
        vec = self._ordered(losses)
        total = self.combine(vec)
        if extra_loss is not None:
            total = total + extra_loss
        total.backward()
        with torch.no_grad():
            w = self.weights(vec.detach())
        return self._weight_logs(w)


class Aggregator(Method):
    """Jacobian methods: J has one row per task, ``aggregate(J)`` gives the update direction.

    The update on the shared parameters (or representation) becomes ``aggregate(J)`` while every
    task-specific parameter still receives the plain gradient of ``sum_t L_t``, and the extra
    (CORE-MTL) loss adds its own gradient everywhere. Implemented with one backward pass of
    ``sum_t L_t + extra`` plus a correction ``aggregate(J) - sum_t J_t`` injected at the shared
    tensors, so the trainer stays method-agnostic.
    """

    def __init__(self, task_names: Sequence[str], on_features: bool = False):
        super().__init__(task_names)
        self.on_features = on_features

    def aggregate(self, jacobian: Tensor) -> Tensor:
        """``(T, P)`` Jacobian -> ``(P,)`` update direction."""
        raise NotImplementedError  # abstract

    def backward(self, losses, *, shared_params, features=None, extra_loss=None):
        vec = self._ordered(losses)
        if self.on_features:
            if features is None:
                raise ValueError(f"{type(self).__name__}(on_features=True) needs the model's shared features")
            targets = [features]
        else:
            targets = [p for p in shared_params if p.requires_grad]
        jacobian = jacobian_of(vec, targets)
        direction = self.aggregate(jacobian)
        correction = direction - jacobian.sum(dim=0)
        total = vec.sum() if extra_loss is None else vec.sum() + extra_loss
        torch.autograd.backward([total, *targets], [None, *unflatten_like(correction, targets)])
        return self.log_info(jacobian, direction)

    def log_info(self, jacobian: Tensor, direction: Tensor) -> dict[str, float]:
        return {"grad/direction_norm": float(direction.norm())}


def jacobian_of(losses: Tensor, targets: Sequence[Tensor]) -> Tensor:
    """``(T, P)`` matrix whose row t is the flattened gradient of ``losses[t]`` w.r.t. ``targets``."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(t) if g is None else g).reshape(-1).float()
                    for g, t in zip(grads, targets)
                ]
            )
        )
    return torch.stack(rows)


def unflatten_like(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector into tensors shaped (and typed) like ``like``."""
    out, start = [], 0
    for t in like:
        out.append(vector[start : start + t.numel()].view_as(t).to(t.dtype))
        start += t.numel()
    if start != vector.numel():
        raise ValueError(f"vector of {vector.numel()} entries does not match tensors of {start} entries")
    return out


# ---------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a method available by ``name`` in :func:`build_method`."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Names accepted by :func:`build_method` (``torchjd:<Aggregator>`` is accepted too)."""
    return sorted(_REGISTRY)


def build_method(name: str, task_names: Sequence[str], **options) -> Method:
    """Instantiate the method registered as ``name`` for the given tasks.

    ``options`` are checked and typed against the method's constructor (:func:`coerce_options`), so
    JSON / command-line values work: ``{"solver": "frank_wolfe"}``, ``{"preference": "0.3,0.7"}``.
    ``"torchjd:<Name>"`` wraps the torchjd aggregator ``<Name>`` (see ``methods/torchjd_adapter.py``).
    """
    if name.startswith("torchjd:"):
        from coremtl_lite.methods.torchjd_adapter import TorchJDAggregator

        return TorchJDAggregator(task_names, name.split(":", 1)[1], **options)
    return _method_class(name)(task_names, **coerce_options(name, options))


def _method_class(name: str) -> type[Method]:
    if name not in _REGISTRY:
        import difflib

        near = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise KeyError(f"unknown method {name!r}{hint} Available: {', '.join(available())}")
    return _REGISTRY[name]


# ------------------------------------------------------------------------- typed method options
def method_options(name: str) -> dict[str, tuple[str, object]]:
    """``{option: (type, default)}`` of a registered method, read from its constructor's signature.

    A constructor that forwards ``**options`` (e.g. MGDA-UB to MGDA) also takes its parent's options.
    The type is the annotation as written (``"float"``, ``"str"``, ``"Sequence[float] | None"``).
    """
    import inspect

    out: dict[str, tuple[str, object]] = {}
    for cls in _method_class(name).__mro__:
        if cls in (nn.Module, object) or "__init__" not in vars(cls):
            continue
        params = inspect.signature(vars(cls)["__init__"]).parameters.values()
        for p in params:
            if p.name in ("self", "task_names") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
            out.setdefault(p.name, (ann if p.annotation is not p.empty else "", p.default))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return out


def coerce_options(name: str, options: dict[str, object]) -> dict[str, object]:
    """Check ``options`` against :func:`method_options` and convert each to its declared type.

    Raises :class:`coremtl_lite.config.ConfigError` naming the method and the bad key: an unknown
    option (with the nearest valid one), or a value of the wrong type. Numbers must be finite; a list
    of floats may also be given as ``"0.3,0.7"``.
    """
    import difflib
    import math

    from coremtl_lite.config import ConfigError

    known = method_options(name)
    out: dict[str, object] = {}
    for key, value in options.items():
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            valid = ", ".join(known) or "none"
            raise ConfigError(f"method {name!r} has no option {key!r}{hint} (its options: {valid})")
        kind, where = known[key][0].replace(" ", ""), f"method {name!r} option {key!r}"
        if value is None and "None" in kind:
            out[key] = None
        elif kind.startswith("bool"):
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool) and value not in (0, 1):
                raise ConfigError(f"{where} expects true/false, got {value!r}")
            out[key] = bool(value)
        elif kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ConfigError(f"{where} expects an integer, got {value!r}")
            out[key] = int(value)
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{where} expects a finite number, got {value!r}")
            out[key] = float(value)
        elif kind.startswith("str"):
            if not isinstance(value, str):
                raise ConfigError(f"{where} expects a string, got {value!r}")
            out[key] = value
        elif kind.startswith("Sequence[float]"):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            try:
                vals = [float(v) for v in value]  # type: ignore[attr-defined]  # not iterable: TypeError below
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{where} expects a list of numbers, e.g. [0.5, 0.5], got {value!r}"
                ) from None
            if not all(math.isfinite(v) for v in vals) or any(isinstance(v, bool) for v in value):  # type: ignore[attr-defined]
                raise ConfigError(f"{where} expects finite numbers, got {value!r}")
            out[key] = vals
        else:  # an annotation this check does not know: passed on as given
            out[key] = value
    return out


def describe_methods() -> list[dict[str, object]]:
    """One entry per registered method: ``name``, ``family`` (weighting / aggregator / other), ``paper``
    (the reference at the start of its docstring) and ``options`` (:func:`method_options`)."""
    rows = []
    for name in available():
        cls = _REGISTRY[name]
        import re

        text = " ".join((cls.__doc__ or "").split())
        found = re.match(
            r"(.*?\))[:.]", text
        )  # up to the reference in brackets: "PCGrad (Yu et al. 2020, ...)"
        paper = found.group(1) if found else text.split(". ")[0]
        family = (
            "aggregator"
            if issubclass(cls, Aggregator)
            else "weighting"
            if issubclass(cls, Weighting)
            else "other"
        )
        rows.append({"name": name, "family": family, "paper": paper, "options": method_options(name)})
    return rows


@register("ew")
class EqualWeighting(Weighting):
    """Equal weighting (EW): minimise sum_t L_t, every task with weight 1."""

    def weights(self, losses: Tensor) -> Tensor:
        return torch.ones_like(losses)
