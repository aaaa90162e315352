"""The learning-rate schedule of Appendix F: linear warm-up, then cosine decay to ``min_lr_ratio`` x lr.

The schedule is a pure function of the optimisation step, so a resumed run continues it exactly
from the step stored in the checkpoint (no scheduler object to save).
"""

from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate at optimisation step ``step`` (0-based), Appendix F.

    * warm-up, ``step < warmup_steps``: ``(step + 1) / warmup_steps`` -- rises linearly to 1;
    * then cosine decay over the remaining steps:
      ``r + (1 - r) * 0.5 * (1 + cos(pi * p))`` with ``p`` going from 0 (first step after the
      warm-up) to 1 (the last step) and ``r = min_lr_ratio``.

    Steps past ``total_steps`` stay at ``min_lr_ratio``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if warmup_steps < 0 or step < 0:
        raise ValueError(f"step and warmup_steps must be >= 0, got step={step}, warmup_steps={warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    warmup_steps = min(warmup_steps, total_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # linear warm-up (Appendix F)
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 1:
        return 1.0 if step < total_steps else min_lr_ratio
    progress = min(1.0, (step - warmup_steps) / (decay_steps - 1))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (
        1.0 + math.cos(math.pi * progress)
    )  # cosine to r x lr
