"""Multi-task methods, one per file, all behind one registry (see :mod:`coremtl_lite.methods.base`).

Scalarising (:class:`Weighting`): ``ew``, ``stl``, ``uw``, ``gradnorm``, ``dwa``, ``rlw``, ``stch``,
``moml`` (bi-level, held-out hook), ``repmtl`` (representation-level saliency regularisers).
Jacobian aggregators (:class:`Aggregator`): ``mgda``, ``mgda_ub``, ``pcgrad``, ``gradvac``,
``cagrad``, ``nash_mtl``, ``imtl_g``, ``aligned_mtl``, ``upgrad``, ``fairgrad``, ``excess_mtl``,
and ``torchjd:<Name>`` for any torchjd aggregator.
Causal / domain-generalisation (held-out hook): ``mtcrl`` (MT-CRL, Hu et al. 2022, on the
MT-CRL model), ``irm`` (IRMv1 penalty per task) and ``dann`` (gradient-reversal domain classifier).

Scale of the shared update (the heads always get their own task's plain gradient): EW, PCGrad and
GradVac sum the task gradients; MGDA, IMTL-G and ExcessMTL use weights summing to one; UPGrad,
CAGrad and Aligned-MTL are mean-based; Nash-MTL is clipped to norm 1; FairGrad's scale follows
from its equation.
"""

from coremtl_lite.methods import (  # noqa: F401  (importing registers the methods)
    aligned_mtl,
    cagrad,
    dann,
    dwa,
    excess_mtl,
    fairgrad,
    gradnorm,
    gradvac,
    imtl_g,
    irm,
    mgda,
    moml,
    mtcrl,
    nash_mtl,
    pcgrad,
    repmtl,
    rlw,
    stch,
    stl,
    upgrad,
    uw,
)
from coremtl_lite.methods.base import (
    Aggregator,
    EqualWeighting,
    Method,
    Weighting,
    available,
    build_method,
    register,
)
from coremtl_lite.methods.stl import single_task_configs

__all__ = [
    "Aggregator",
    "EqualWeighting",
    "Method",
    "Weighting",
    "available",
    "build_method",
    "register",
    "single_task_configs",
]
