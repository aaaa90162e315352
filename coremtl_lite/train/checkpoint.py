"""Atomic, safe checkpoints and the random-number state that exact resume needs.

A checkpoint is one ``torch.save`` file of tensors and plain containers (dicts, lists, tuples,
numbers, strings) -- no pickled classes or code -- read back with ``torch.load(weights_only=True)``,
which refuses anything else. It is written atomically: to a temporary file in the same folder,
flushed and fsync'ed, then ``os.replace``'d over the old one, so a crash while saving leaves the
previous checkpoint intact; a killed write leaves only a hidden ``.<name>.*.tmp`` file, which the
next run removes (:func:`remove_stale_temp_files`).

Two guards keep a diverged run from destroying good checkpoints (the "nothing lost" rules):
:func:`check_finite_model` refuses to write weights that are not finite (or so large, above
:data:`MAX_ABS_WEIGHT`, that only a divergence produces them), and :func:`check_fields` refuses
checkpoints whose ``epoch``/``step``/``best_epoch`` make no sense for the run.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_VERSION = 1
#: a weight of larger magnitude only comes from a divergence (float32 squares overflow above ~1.8e19)
MAX_ABS_WEIGHT = 1e15
#: the temporary files :func:`atomic_write` creates next to its target: ``.<name>.<random>.tmp``
TEMP_GLOB = ".*.tmp"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the run."""


class NonFiniteStateError(CheckpointError):
    """The weights (or validation metrics) to be saved are not finite: the run diverged."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file_object)`` on a temporary file next to ``path``, fsync it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None:  # disk full, permissions: name the file
            raise OSError(err.errno, f"cannot write {str(path)!r}: {err.strerror}") from err
        raise
    try:  # make the rename itself durable (not possible on every OS/filesystem)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` left in ``folder``; return their paths.

    Call it only while holding the folder (``train/run_dir.py``'s lock), so no live write is removed.
    """
    folder = Path(folder)
    stale = sorted(folder.glob(TEMP_GLOB)) if folder.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def check_finite_model(model_state: dict[str, Any], what: str) -> None:
    """Raise :class:`NonFiniteStateError` when a floating tensor of ``model_state`` holds NaN/inf or a
    magnitude above :data:`MAX_ABS_WEIGHT`; ``what`` names the checkpoint in the message."""
    bad = []
    for name, value in model_state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            peak = float(value.detach().abs().max())
            if not math.isfinite(peak) or peak > MAX_ABS_WEIGHT:
                bad.append(f"{name} (max |w| = {peak:.3g})")
    if bad:
        raise NonFiniteStateError(
            f"refusing to write {what}: the weights diverged ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); the checkpoint on disk is untouched. "
            "Lower optim.lr (or raise optim.warmup_epochs) and start again."
        )


def selectable(score: float, metrics: dict[str, dict[str, float]]) -> bool:
    """Whether a validation pass may become the best epoch: a finite score from finite metrics only."""
    values = [v for task in metrics.values() for v in task.values()]
    return math.isfinite(score) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically save ``state`` (tensors and plain containers only) to ``path``.

    A ``state["model"]`` whose weights are not finite is refused (:func:`check_finite_model`), so a
    diverged run never replaces a good checkpoint.
    """
    if isinstance(state.get("model"), dict):
        check_finite_model(state["model"], f"checkpoint {str(path)!r}")
    payload = {"version": CHECKPOINT_VERSION, **state}
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist"
            if not path.is_dir()
            else f"{str(path)!r} is a folder, not a checkpoint (pass its best.pt or last.pt)"
        )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is another kind of file
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint (not a file written by torch.save); pass the "
            "best.pt or last.pt of a run"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name and the first line only
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"refusing checkpoint {str(path)!r}: it holds pickled objects or code, which "
                f"coremtl_lite never writes ({first})"
            ) from err
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} (truncated or corrupt?): {first}"
        ) from err
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} is not a coremtl_lite checkpoint (version "
            f"{state.get('version') if isinstance(state, dict) else None!r}, "
            f"expected {CHECKPOINT_VERSION})"
        )
    return state


def check_fields(state: dict[str, Any], path: str | os.PathLike, epochs: int) -> None:
    """Refuse a checkpoint whose bookkeeping makes no sense for a run of ``epochs`` epochs.

    ``epoch`` must be an integer in [0, epochs]; ``step`` (full checkpoints) >= 0; ``best_epoch`` -1 (none
    yet) or in [1, epoch]; a ``score`` finite.
    """

    def bad(key: str, why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {str(path)!r} has {key}={state.get(key)!r}: {why}")

    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise bad("epoch", "expected an integer")
    if not 0 <= epoch <= epochs:
        raise bad("epoch", f"expected 0 <= epoch <= optim.epochs = {epochs}")
    if "step" in state and (
        isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0
    ):
        raise bad("step", "expected an integer >= 0")
    if "best_epoch" in state:
        b = state["best_epoch"]
        if isinstance(b, bool) or not isinstance(b, int) or not (b == -1 or 1 <= b <= epoch):
            raise bad("best_epoch", f"expected -1 or an epoch in [1, {epoch}]")
    for key in ("score", "best_score"):
        if key in state and isinstance(state[key], float) and math.isnan(state[key]):
            raise bad(key, "not a number")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) random states, as weights-only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
