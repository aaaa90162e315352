"""The one training loop (:class:`Trainer`) and what it is made of.

* :mod:`.trainer` -- the loop: objective -> method.backward -> all-reduce -> clip -> AdamW;
* :mod:`.schedule` -- linear warm-up + cosine decay (Appendix F);
* :mod:`.precision` -- mixed precision on CUDA: autocast dtype, fp16 gradient scaling;
* :mod:`.checkpoint` -- atomic, weights-only checkpoints (never of diverged weights) and RNG state for exact resume;
* :mod:`.run_dir` -- the run folder's lock, refusal of an existing run, resume compatibility, config preflight;
* :mod:`.distributed` -- ``torchrun`` data parallelism (gloo on CPU, nccl on CUDA);
* :mod:`.evaluation` -- task meters over several domains, Δm% (paper §4.1);
* :mod:`.history` -- the per-step / per-epoch metric history.
"""

from coremtl_lite.train.checkpoint import (
    CheckpointError,
    NonFiniteStateError,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)
from coremtl_lite.train.distributed import DistBatchNorm, DistContext, convert_batchnorm
from coremtl_lite.train.evaluation import evaluate_datasets, relative_score
from coremtl_lite.train.history import History
from coremtl_lite.train.run_dir import RunDirError
from coremtl_lite.train.schedule import lr_factor
from coremtl_lite.train.trainer import NonFiniteLossError, Trainer

__all__ = [
    "CheckpointError",
    "DistBatchNorm",
    "DistContext",
    "History",
    "NonFiniteLossError",
    "NonFiniteStateError",
    "RunDirError",
    "Trainer",
    "atomic_write",
    "convert_batchnorm",
    "evaluate_datasets",
    "load_checkpoint",
    "lr_factor",
    "relative_score",
    "save_checkpoint",
]
