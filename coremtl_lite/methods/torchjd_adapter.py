"""Run any torchjd aggregator through this package's :class:`Aggregator` seam: ``torchjd:<Name>``."""

from __future__ import annotations

import inspect

from torch import Tensor

from coremtl_lite.methods.base import Aggregator

#: options filled in when the user gives none (torchjd requires them); kept equal to our defaults
DEFAULT_OPTIONS = {"CAGrad": {"c": 0.5}, "FairGrad": {"alpha": 2.0}}


class TorchJDAggregator(Aggregator):
    """Wrap ``torchjd.aggregation.<Name>(**options)`` (torchjd >= 0.18) as an :class:`Aggregator`.

    ``build_method("torchjd:UPGrad", tasks)`` gives one. Design choice: the torchjd aggregator is
    called on the Jacobian this package already computes (``aggregate(J) = A(J)``), rather than
    using torchjd's training path ``torchjd.autojac.mtl_backward(losses, features=...)`` followed by
    ``jac_to_grad(shared_params, A)``. Both produce the same ``.grad`` (tested on a small model),
    but going through the seam keeps everything else identical between our aggregators and
    torchjd's: ``on_features`` (MGDA-UB style), the CORE-MTL ``extra_loss``, the head gradients and
    the logging, so a comparison isolates the aggregator itself.

    ``n_tasks`` (NashMTL) is filled in from the task list; CAGrad gets ``c=0.5`` and FairGrad
    ``alpha=2.0`` unless given. torchjd's stochastic aggregators (PCGrad, GradVac, ...) draw from
    the global torch RNG, and their internal state is not part of this wrapper's ``state_dict``.
    CAGrad and NashMTL need torchjd's ``cagrad`` / ``nash-mtl`` extras (cvxpy, ecos).
    """

    name = "torchjd"

    def __init__(self, task_names, aggregator: str, on_features: bool = False, **options):
        super().__init__(task_names, on_features=on_features)
        import torchjd.aggregation as agg

        cls = getattr(agg, aggregator, None)
        if not (inspect.isclass(cls) and issubclass(cls, agg.Aggregator)) or inspect.isabstract(cls):
            names = sorted(
                n
                for n in agg.__all__
                if inspect.isclass(getattr(agg, n))
                and issubclass(getattr(agg, n), agg.Aggregator)
                and not inspect.isabstract(getattr(agg, n))
            )
            raise KeyError(f"torchjd has no aggregator {aggregator!r}; available: {', '.join(names)}")
        opts = {**DEFAULT_OPTIONS.get(aggregator, {}), **options}
        if "n_tasks" in inspect.signature(cls).parameters:
            opts.setdefault("n_tasks", self.num_tasks)
        inner = cls(**opts)
        object.__setattr__(self, "inner", inner)  # not a submodule: its lazy state is not checkpointed
        self.name = f"torchjd:{aggregator}"

    def aggregate(self, jacobian: Tensor) -> Tensor:
        return self.__dict__["inner"](jacobian)  # set with object.__setattr__ above (not a submodule)
