"""The run folder (``train.out_dir``): who may write into it, and whether a checkpoint fits the run.

Nothing in a run folder is lost by accident:

* **One run at a time.** :class:`RunLock` creates ``<out_dir>/.lock`` (process id, host, start time)
  with an exclusive create while a run trains there; a second run into the same folder stops with an
  error naming the holder. A lock whose process is gone (a killed run, same host) is stale and is
  taken over; a lock from another host is never guessed about (the message says what to delete).
* **A finished or interrupted run is not replaced by accident.** :func:`existing_run` reports what a
  folder holds; :meth:`RunLock.claim` refuses it unless the caller resumes it or asks to overwrite
  (the command line's ``--resume`` / ``--overwrite``). Overwriting removes the old run's files first,
  so the new run never mixes with the old one's ``best.pt``.
* **Temporary files of a killed write** (``.<name>.*.tmp``) are removed once the lock is held.
* **Resume only into the same experiment.** :func:`resume_mismatch` lists every config field that
  changes a run's numbers and differs between a checkpoint and the current config.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from coremtl_lite.config import Config
from coremtl_lite.train.checkpoint import remove_stale_temp_files

LOCK = ".lock"
#: the files a run writes into its folder (``overwrite`` removes them before a new run starts)
RUN_FILES = ("last.pt", "best.pt", "history.json", "results.json", "config.json")
#: config fields that may differ when resuming: bookkeeping, the test domains, and where it runs
#: (device, channels_last and compile change only the last bits of float arithmetic, like a new machine)
NEUTRAL_FIELDS = frozenset(
    {
        "train.out_dir",
        "train.progress",
        "train.log_every",
        "train.checkpoint_every",
        "train.device",
        "train.channels_last",
        "train.compile",
        "data.num_workers",
        "data.eval_domains",
    }
)


class RunDirError(RuntimeError):
    """The run folder cannot be used: not writable, held by another run, or holding a run to keep."""


def existing_run(folder: str | os.PathLike) -> str | None:
    """A short description of the run in ``folder`` (``"last.pt, best.pt, history.json; 3 epochs done"``), or
    None when it holds none (a ``config.json`` alone is a run that never finished an epoch)."""
    folder = Path(folder)
    found = [
        name for name in ("last.pt", "best.pt", "history.json", "results.json") if (folder / name).is_file()
    ]
    if not found:
        return None
    if "history.json" in found:  # small, written next to every last.pt: the epochs done
        try:
            epochs = len(json.loads((folder / "history.json").read_text())["epochs"])
            return f"{', '.join(found)}; {epochs} epochs done"
        except (OSError, KeyError, TypeError, ValueError):
            pass
    return ", ".join(found)


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove that files can be written there; raise :class:`RunDirError`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"train.out_dir {str(folder)!r} is not writable: {err.strerror or err}") from err
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``<folder>/.lock`` while a run writes into ``folder``; see the module docstring.

    Re-entrant within one process (a notebook that trains twice into one folder, a trainer whose
    ``fit`` is called again); :meth:`release` deletes the file only if this process wrote it.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.held = False

    def acquire(self) -> RunLock:
        check_writable(self.folder)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):  # create exclusively; on a stale lock remove it and try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if (
                    holder is None
                    or self._stale(holder)
                    or holder.get("pid") == me["pid"]
                    and holder.get("host") == me["host"]
                ):
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunDirError(
                    f"run folder {str(self.folder)!r} is in use by process {holder.get('pid')} on "
                    f"{holder.get('host')} (since {holder.get('started')}); choose another train.out_dir, or "
                    f"if that run is dead delete {str(self.path)!r}"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise RunDirError(
            f"cannot lock run folder {str(self.folder)!r} (the lock file {str(self.path)!r} keeps "
            "reappearing; is another run starting there?)"
        )

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # unreadable or half-written by a killed run: stale
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        return holder.get("host") == socket.gethostname() and not _alive(int(holder["pid"]))

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def claim(self, resume: bool, overwrite: bool) -> str | None:
        """Acquire the lock and make the folder ready for a run; return the description of the run found.

        ``resume``: an existing run is continued (the caller loads ``last.pt``). ``overwrite``: its files
        are removed. Neither: an existing run is an error (:class:`RunDirError`) and nothing is touched.
        """
        found = existing_run(self.folder)
        if found is not None and not resume and not overwrite:
            raise RunDirError(
                f"train.out_dir {str(self.folder)!r} already holds a run ({found}); pass --resume "
                "(resume=True) to continue it, --overwrite (overwrite=True) to replace it, or choose "
                "another train.out_dir"
            )
        self.acquire()
        try:
            remove_stale_temp_files(self.folder)
            if found is not None and overwrite and not resume:
                for name in RUN_FILES:
                    (self.folder / name).unlink(missing_ok=True)
        except BaseException:
            self.release()
            raise
        return found


def _flatten(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for section, values in cfg.items():
        if isinstance(values, dict):
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        else:
            out[section] = values
    return out


def resume_mismatch(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, now)}`` for every config field that changes the run's numbers and differs.

    Everything counts (the seed fixes the synthetic data too) except :data:`NEUTRAL_FIELDS`; the
    profile name does not count (it only chose defaults). Values are compared as JSON.
    """
    a, b = _flatten(json.loads(json.dumps(saved))), _flatten(json.loads(json.dumps(now)))
    keys = sorted((set(a) | set(b)) - NEUTRAL_FIELDS - {"profile"})
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def describe_mismatch(path: str | os.PathLike, diff: dict[str, tuple[Any, Any]]) -> str:
    """The error message of a refused resume, naming every differing key."""
    items = "; ".join(f"{k}: saved {v[0]!r}, now {v[1]!r}" for k, v in diff.items())
    return (
        f"cannot resume from {str(path)!r}: it was written with different values of {', '.join(diff)} ({items}). "
        "Resume with the saved values (e.g. --config <out_dir>/config.json --resume), or start a new run "
        "with --overwrite or another train.out_dir"
    )


# ------------------------------------------------------------------------------- before a run starts
def preflight(cfg: Config) -> list[str]:
    """Check a whole :class:`~coremtl_lite.config.Config` before anything is built or printed as started.

    Raises :class:`~coremtl_lite.config.ConfigError` for an unknown method or method option, an unknown
    dataset, or a real dataset whose ``data.root`` is not a folder. Returns warnings (one line each) for
    settings that are harmless but ignored: a ``data.root`` for a synthetic dataset, a grounding decoder
    or the extra loss weights of Eq. 16 on a model without the dual streams, reconstruction/CFA weights
    on a dual-stream model without a decoder (``model.grounding=none``).
    """
    from coremtl_lite.config import ConfigError
    from coremtl_lite.data.registry import dataset_entry
    from coremtl_lite.methods.base import build_method

    cfg = cfg.validate()
    tc, dc, mc, lc = cfg.train, cfg.data, cfg.model, cfg.loss
    try:  # cheap: a method only needs the task names to be built (its options are checked here)
        build_method(tc.method, list(dc.tasks), **tc.method_options)
    except KeyError as err:
        raise ConfigError(f"train.method: {err.args[0]}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"train.method_options: {err}") from None
    warnings = []
    try:
        synthetic = dataset_entry(dc.dataset).synthetic
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if synthetic:
        if dc.root:
            warnings.append(
                f"data.root={dc.root!r} is ignored: data.dataset={dc.dataset!r} is synthetic "
                "(generated from train.seed)"
            )
    else:
        if not dc.root:
            raise ConfigError(f"data.root must name the prepared {dc.dataset} folder (see data_scripts/)")
        if not Path(dc.root).is_dir():
            raise ConfigError(
                f"data.root {dc.root!r} is not a folder (prepare {dc.dataset} with data_scripts/)"
            )
    arch = mc.architecture
    extra = [
        f"loss.{k}={getattr(lc, k)}" for k in ("lambda_rec", "lambda_ind", "lambda_cfa") if getattr(lc, k) > 0
    ]
    if arch != "dual_stream":
        unused = ([f"model.grounding={mc.grounding!r}"] if mc.grounding != "none" else []) + extra
        if unused:
            warnings.append(
                f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} ignored: the {arch} model has "
                "no decoder and no extra terms of Eq. 16 (those need the dual-stream model)"
            )
    elif mc.grounding == "none":
        unused = [e for e in extra if not e.startswith("loss.lambda_ind")]
        if unused:
            warnings.append(
                f"{', '.join(unused)} are ignored: reconstruction and CFA need a decoder "
                "(model.grounding=none has none)"
            )
    return warnings
