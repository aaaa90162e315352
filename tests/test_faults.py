"""The fault suite: what a hostile but fair user does to a run, its data and the command line.

Each test is one fault (or a parametrised family) from the numbered items of the robustness issue:
(1) divergence never reaches a checkpoint, (2) run folders are locked and never silently replaced,
(3) data scripts never write into their source and leave no stale files, (4) resume refuses other
experiments, (5) non-finite and nonsensical values are refused, (6) labels and images are checked,
(8) method options are typed; plus the errors a user can act on and the behaviours that already
held (kill-and-resume equality, refused pickles). A test that passes is a fault survived; every
fault that touches existing data checks that nothing was lost (file hashes before and after).

``test_zz_figures`` (last in the file) prints ``faults tried / survived / data lost``; run
``pytest tests/test_faults.py -q -s`` to see them (CONTRIBUTING.md records the latest).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _script_helpers import load_script
from _train_helpers import tiny_trainer

from coremtl_lite.cli import main
from coremtl_lite.config import Config, ConfigError, get_config
from coremtl_lite.train import CheckpointError, load_checkpoint, save_checkpoint
from coremtl_lite.train.checkpoint import NonFiniteStateError
from coremtl_lite.train.run_dir import RunDirError, RunLock, preflight

ROOT = Path(__file__).resolve().parents[1]
#: the ci profile made smaller still: a command takes seconds
SMALL = [
    "--profile",
    "ci",
    "data.image_size=16",
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "optim.epochs=1",
    "model.architecture=vanilla",
    "model.grounding=none",
    "data.tasks=segmentation,depth",
    "data.eval_domains=source",
]

#: one entry per fault that passed: (fault id, data lost?)
OUTCOMES: list[tuple[str, bool]] = []


def survived(request, lost: bool = False) -> None:
    OUTCOMES.append((request.node.name, lost))


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_intact(request, before: dict[str, str], folder: Path, keep: tuple[str, ...] | None = None) -> None:
    """Every file of ``before`` (or of ``keep``) is still there, byte for byte; records a loss otherwise."""
    now = hashes(folder)
    names = keep if keep is not None else tuple(before)
    lost = [n for n in names if now.get(n) != before.get(n)]
    if lost:
        OUTCOMES.append((request.node.name, True))
    assert not lost, f"data lost: {lost}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch CLI run (last.pt, best.pt, history.json, results.json, config.json)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *SMALL, f"train.out_dir={out}"]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


# ============================================================== 1. divergence never reaches a checkpoint
class _Blow:
    """A callback that multiplies one weight by ``factor`` on global step ``at`` (after the optimiser step)."""

    def __init__(self, at: int, factor: float):
        self.at, self.factor = at, factor

    def on_step_end(self, trainer, record):
        if record["step"] == self.at:
            with torch.no_grad():
                next(trainer.model.parameters()).mul_(self.factor)


@pytest.mark.parametrize("factor", [1e29, float("nan"), float("inf")], ids=["1e29", "nan", "inf"])
def test_1_divergence_on_the_last_step_of_an_epoch_keeps_last_and_best(request, tmp_path, factor):
    tr = tiny_trainer(tmp_path, callbacks=[_Blow(at=7, factor=factor)])  # step 7 = the last step of epoch 2
    tr.fit(stop_at_epoch=1)
    before = hashes(tmp_path)
    with pytest.raises(NonFiniteStateError, match="diverged"):
        tr.fit()
    assert_intact(request, before, tmp_path, keep=("last.pt", "best.pt"))
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(tmp_path / name)
        assert state["epoch"] == 1 and all(
            torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
        )
    survived(request)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_1_a_non_finite_validation_metric_never_becomes_best(request, tmp_path, bad):
    tr = tiny_trainer(tmp_path, "optim.epochs=3", "optim.lr=0.02")
    evaluate = tr.evaluate

    def poisoned(*args, **kwargs):
        out = evaluate(*args, **kwargs)
        if kwargs.get("split") == "val" and tr.epoch >= 2:
            out["val"]["depth"]["abs_err"] = bad  # the remaining metrics still give a finite score
        return out

    tr.evaluate = poisoned
    tr.fit()
    assert tr.best_epoch == 1 and load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    survived(request)


def test_1_save_checkpoint_refuses_non_finite_weights(request, tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(3)}, "epoch": 1})
    before = hashes(tmp_path)
    for bad in (float("nan"), 1e20):
        with pytest.raises(NonFiniteStateError, match="c.pt"):
            save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.tensor([1.0, bad])}, "epoch": 2})
    assert_intact(request, before, tmp_path)
    survived(request)


# ================================================================== 2. run folders: refusal and lock
def test_2_a_new_run_into_a_finished_run_is_refused(request, run_copy, capsys):
    before = hashes(run_copy)
    assert main(["train", *SMALL, f"train.out_dir={run_copy}"]) == 2
    err = capsys.readouterr()
    assert "already holds a run" in err.err and "--resume" in err.err and "--overwrite" in err.err
    assert "training" not in err.out  # refused before anything started
    assert_intact(request, before, run_copy)
    survived(request)


def test_2_overwrite_replaces_the_run_and_its_old_files(request, run_copy):
    (run_copy / "best.pt").write_bytes(b"an old best.pt that must not survive into the new run")
    assert main(["train", *SMALL, "train.seed=1", f"train.out_dir={run_copy}", "--overwrite"]) == 0
    assert load_checkpoint(run_copy / "best.pt")["epoch"] == 1  # the new run's own best.pt
    assert json.loads((run_copy / "config.json").read_text())["train"]["seed"] == 1
    survived(request)


def test_2_overwrite_without_checkpoints_leaves_no_old_files(request, run_copy):
    assert (
        main(["train", *SMALL, "train.checkpoint_every=0", f"train.out_dir={run_copy}", "--overwrite"]) == 0
    )
    assert not (run_copy / "last.pt").exists() and not (run_copy / "best.pt").exists()  # no mix of two runs
    assert (run_copy / "results.json").is_file() and not (run_copy / ".lock").exists()
    survived(request)


def test_2_python_api_refuses_with_overwrite_false(request, tmp_path):
    tiny_trainer(tmp_path).fit(stop_at_epoch=1)
    before = hashes(tmp_path)
    with pytest.raises(RunDirError, match="already holds a run"):
        tiny_trainer(tmp_path).fit(overwrite=False)
    assert_intact(request, before, tmp_path)
    survived(request)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder", ["live", "other_host"])
def test_2_a_run_folder_in_use_is_refused(request, tmp_path, holder):
    tr = tiny_trainer(tmp_path)
    host = __import__("socket").gethostname() if holder == "live" else "elsewhere.example"
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": host, "started": "now"}))
    with pytest.raises(RunDirError, match=f"in use by process {os.getppid()}"):
        tr.fit()
    assert not (tmp_path / "last.pt").exists()
    survived(request)


@pytest.mark.parametrize("lock", ["dead_pid", "garbage", "empty"])
def test_2_a_stale_lock_does_not_block(request, tmp_path, lock):
    text = {
        "dead_pid": json.dumps({"pid": _dead_pid(), "host": __import__("socket").gethostname()}),
        "garbage": "{half a lock",
        "empty": "",
    }[lock]
    (tmp_path / ".lock").write_text(text)
    tr = tiny_trainer(tmp_path)
    tr.fit(stop_at_epoch=1)
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / ".lock").exists()  # taken over, then released
    survived(request)


def test_2_two_runs_at_once_cannot_share_a_folder(request, tmp_path):
    """A second process finds the first one's lock (the first is paused inside its run by a callback)."""
    first = RunLock(tmp_path).acquire()
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT / "tests")!r})
        from _train_helpers import tiny_trainer
        from coremtl_lite.train.run_dir import RunDirError
        try:
            tiny_trainer({str(tmp_path)!r}).fit()
        except RunDirError as err:
            print("REFUSED", err)
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    first.release()
    assert "REFUSED" in out.stdout and str(os.getpid()) in out.stdout, out.stderr[-2000:]
    assert not (tmp_path / "last.pt").exists()
    survived(request)


def test_2_an_unwritable_out_dir_fails_before_training(request, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["train", *SMALL, f"train.out_dir={blocker / 'run'}"]) == 2
    io = capsys.readouterr()
    assert "not writable" in io.err and "a_file" in io.err and "Traceback" not in io.err
    assert "training" not in io.out
    survived(request)


def test_2_temp_files_of_a_killed_write_are_removed_by_the_next_run(request, tmp_path):
    tr = tiny_trainer(tmp_path)
    tr.fit(stop_at_epoch=1)
    (tmp_path / ".last.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".history.json.abc.tmp").write_bytes(b"{")
    tiny_trainer(tmp_path).fit(resume=True)
    assert not list(tmp_path.glob(".*.tmp"))
    survived(request)


# ============================================================ 3. data scripts and their source folders
def _city(root: Path, n=(3, 2), hw=(8, 16), label="label_7", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), n):
        for sub in ("image", label, "depth"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            np.save(root / split / "image" / f"{i}.npy", rng.random((*hw, 3), dtype=np.float32))
            np.save(root / split / label / f"{i}.npy", rng.integers(-1, 7, hw).astype(np.float32))
            np.save(root / split / "depth" / f"{i}.npy", rng.random((*hw, 1), dtype=np.float32))
    return root


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
@pytest.mark.parametrize("script", ["prepare_colored_cityscapes", "prepare_cityscapes_c"])
def test_3_a_script_never_writes_into_its_source(request, tmp_path, script, where):
    src = _city(tmp_path / "cityscapes")
    before = hashes(src)
    out = {"same": src, "inside": src / "train", "parent": tmp_path}[where]
    mod = load_script(script)
    with pytest.raises(mod.PrepareError, match="overlaps the source"):
        mod.prepare(src, out, force=True, quiet=True)
    assert_intact(request, before, src)
    assert hashes(src) == before  # not even a new file
    survived(request)


def test_3_prepare_mtan_and_celeba_refuse_their_source(request, tmp_path):
    src = _city(tmp_path / "raw")
    before = hashes(src)
    with pytest.raises(load_script("prepare_mtan").PrepareError, match="overlaps"):
        load_script("prepare_mtan").prepare(
            "cityscapes", src, src, force=True, strict_counts=False, quiet=True
        )
    with pytest.raises(load_script("prepare_celeba").PrepareError, match="overlaps"):
        load_script("prepare_celeba").prepare(src, src / "out", force=True, verify=False, quiet=True)
    assert_intact(request, before, src)
    survived(request)


def _gta_raw(src: Path, n: int = 10) -> Path:
    from PIL import Image

    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)).save(
            src / "images" / f"{k:05d}.png"
        )
        Image.fromarray(rng.integers(0, 34, (8, 16)).astype(np.uint8)).save(src / "labels" / f"{k:05d}.png")
    return src


def test_3_gta5_with_a_new_split_leaves_no_stale_files(request, tmp_path):
    mod = load_script("prepare_gta5")
    src, out = _gta_raw(tmp_path / "raw"), tmp_path / "gta5"
    mod.prepare(src, out, height=8, width=16, val_fraction=0.2, seed=0, quiet=True)
    # a new split: without --force the stale files are an error and nothing is written
    before = hashes(out)
    with pytest.raises(mod.PrepareError, match="earlier run"):
        mod.prepare(src, out, height=8, width=16, val_fraction=0.4, seed=1, quiet=True)
    assert_intact(request, before, out)
    mod.prepare(src, out, height=8, width=16, val_fraction=0.4, seed=1, force=True, quiet=True)
    train = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "train" / "image").glob("*.npy")}
    val = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "val" / "image").glob("*.npy")}
    assert len(train) == 6 and len(val) == 4 and not train & val  # no validation image left in train
    from coremtl_lite.data.real import GTA5

    assert len(GTA5(out, "train")) == 6 and len(GTA5(out, "val")) == 4
    survived(request)


@pytest.mark.parametrize("fraction", [1.0, 2.0, -0.5, 0.0])
def test_5_gta5_refuses_a_nonsensical_val_fraction(request, tmp_path, fraction):
    mod = load_script("prepare_gta5")
    src = _gta_raw(tmp_path / "raw", n=3)
    assert (
        mod.main(
            ["--src", str(src), "--out", str(tmp_path / "out"), "--val-fraction", str(fraction), "--quiet"]
        )
        == 1
    )
    assert not (tmp_path / "out").exists()
    survived(request)


# ================================================================== 4. resume refuses other experiments
@pytest.mark.parametrize(
    "change",
    [
        ("train.seed=1",),
        ('train.method_options={"seed": 3}', "train.method=pcgrad"),
        ("optim.epochs=3",),
        ("data.train_size=48", 'loss.task_weights={"depth": 2}'),
    ],
    ids=["seed", "method_options", "epochs", "two_fields"],
)
def test_4_resume_refuses_a_differing_result_changing_field(request, tmp_path, change):
    base = ["train.method=pcgrad"] if "train.method=pcgrad" in change else []
    tiny_trainer(tmp_path, *base).fit(stop_at_epoch=1)
    before = hashes(tmp_path)
    with pytest.raises(CheckpointError) as info:
        tiny_trainer(tmp_path, *change).fit(resume=True)
    for item in change:
        if item != "train.method=pcgrad":
            assert item.split("=")[0] in str(info.value)
    assert_intact(request, before, tmp_path, keep=("last.pt", "best.pt", "config.json", "history.json"))
    survived(request)


def test_4_resume_accepts_fields_that_do_not_change_the_numbers(request, tmp_path):
    tiny_trainer(tmp_path).fit(stop_at_epoch=1)
    tr = tiny_trainer(tmp_path, "train.log_every=3", "train.checkpoint_every=2", "data.eval_domains=source")
    tr.fit(resume=True)
    assert tr.epoch == 2
    survived(request)


# ================================================================ 5. non-finite and nonsensical values
@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=NaN",
        "optim.lr=Infinity",
        "optim.weight_decay=NaN",
        "loss.lambda_cfa=Infinity",
        "loss.lambda_rec=-Infinity",
        'loss.task_weights={"depth": NaN}',
        "optim.min_lr_ratio=NaN",
        "data.m_train=NaN",
    ],
)
def test_5_non_finite_values_are_refused(request, override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        get_config("ci", [override])
    survived(request)


def test_5_non_finite_values_in_a_config_file_are_refused(request, tmp_path, capsys):
    raw = get_config("ci").to_dict()
    raw["optim"]["lr"] = float("nan")
    (tmp_path / "c.json").write_text(json.dumps(raw))  # json writes NaN
    assert main(["train", "--config", str(tmp_path / "c.json")]) == 2
    assert "optim.lr must be a finite number" in capsys.readouterr().err
    survived(request)


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"optim": 5}, "section 'optim' must be a JSON object"),
        ({"optimm": {}}, "did you mean 'optim'"),
        ({"profile": 3}, "'profile' must be a string"),
        ([1, 2], "JSON object"),
    ],
)
def test_5_config_sections_that_are_not_objects_are_refused(request, raw, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_dict(raw)
    survived(request)


@pytest.mark.parametrize("override", ["train.seed=-1", "train.seed=1e30"])
def test_5_an_invalid_seed_is_refused(request, override):
    with pytest.raises(ConfigError, match="train.seed"):
        get_config("ci", [override])
    survived(request)


@pytest.mark.parametrize("value", ["null", "", "  ", "none"])
def test_5_an_empty_out_dir_is_refused(request, value):
    with pytest.raises(ConfigError, match="train.out_dir"):
        get_config("ci", [f"train.out_dir={value}"])
    survived(request)


@pytest.mark.parametrize("epoch", [-5, 10**6])
def test_5_a_checkpoint_with_a_nonsensical_epoch_is_refused(request, run_copy, epoch, capsys):
    state = load_checkpoint(run_copy / "best.pt")
    state["epoch"] = epoch
    save_checkpoint(run_copy / "bad.pt", {k: v for k, v in state.items() if k != "version"})
    assert main(["evaluate", str(run_copy / "bad.pt")]) == 2
    assert f"epoch={epoch}" in capsys.readouterr().err
    last = load_checkpoint(run_copy / "last.pt")
    last["epoch"] = epoch
    save_checkpoint(run_copy / "last.pt", {k: v for k, v in last.items() if k != "version"})
    assert (
        main(["train", "--config", str(run_copy / "config.json"), "--resume", f"train.out_dir={run_copy}"])
        == 2
    )
    assert "epoch" in capsys.readouterr().err
    survived(request)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["data.root=/somewhere"], "data.root='/somewhere' is ignored"),
        (
            ["model.architecture=dual_stream", "model.grounding=none", "loss.lambda_cfa=1"],
            "loss.lambda_cfa=1.0.*ignored",
        ),
        (
            ["model.architecture=vanilla", "model.grounding=soft"],
            "model.grounding='soft'.* ignored: the vanilla model",
        ),
        (
            ["model.architecture=vanilla", "model.grounding=none", "loss.lambda_ind=0.5"],
            "loss.lambda_ind=0.5.*ignored",
        ),
    ],
)
def test_5_harmless_but_ignored_settings_give_one_warning(request, overrides, match):
    warnings = preflight(get_config("ci", overrides))
    assert sum(bool(__import__("re").search(match, w)) for w in warnings) == 1, warnings
    survived(request)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["data.dataset=imagenet"], "unknown data.dataset"),
        (["data.dataset=nyuv2", "data.root=/no/such/folder"], "not a folder"),
        (["train.method=pcgard"], "did you mean 'pcgrad'"),
    ],
)
def test_5_a_bad_dataset_or_method_is_refused_before_anything_starts(
    request, overrides, match, capsys, tmp_path
):
    assert main(["train", *SMALL, *overrides, f"train.out_dir={tmp_path / 'r'}"]) == 2
    io = capsys.readouterr()
    assert __import__("re").search(match, io.err) and "training" not in io.out
    survived(request)


# ======================================================================= 6. labels and images are checked
def _one(root: Path, sub: str, value) -> Path:
    path = root / "train" / sub / "1.npy"
    np.save(path, value)
    return path


@pytest.mark.parametrize(
    "sub,make,match",
    [
        ("label_7", lambda a: np.full(a.shape, 7.0, np.float32), r"class ids \[7\] outside"),
        ("label_7", lambda a: np.full(a.shape, -2.0, np.float32), r"class ids \[-2\] outside"),
        ("label_7", lambda a: np.full(a.shape, np.nan, np.float32), "NaN"),
        ("label_7", lambda a: np.full(a.shape, 2.5, np.float32), "non-integer"),
        ("label_7", lambda a: np.full(a.shape, "3"), "needs real numbers"),
        ("label_7", lambda a: a.astype(np.complex64), "needs real numbers"),
        ("image", lambda a: np.full(a.shape, 300.0, np.float32), "image values"),
        ("image", lambda a: np.full(a.shape, -0.5, np.float32), "image values"),
        ("image", lambda a: np.full(a.shape, 1.2, np.float32), "image values"),
        ("image", lambda a: np.full(a.shape, np.inf, np.float32), "NaN/inf"),
        ("depth", lambda a: -a, "negative depth"),
        ("depth", lambda a: np.full(a.shape, np.nan, np.float32), "NaN/inf"),
    ],
    ids=[
        "id_eq_classes",
        "id_minus2",
        "nan_label",
        "fractional",
        "string",
        "complex",
        "img_300",
        "img_neg",
        "img_1.2",
        "img_inf",
        "depth_neg",
        "depth_nan",
    ],
)
def test_6_bad_values_are_refused_naming_the_file(request, tmp_path, sub, make, match):
    from coremtl_lite.data.real import Cityscapes

    root = _city(tmp_path / "cityscapes", hw=(128, 256))  # the official size, which prepare_mtan checks
    path = _one(root, sub, make(np.load(root / "train" / sub / "1.npy")))
    ds = Cityscapes(root, "train")
    with pytest.raises(ValueError, match=match) as info:
        ds[1]
    assert str(path) in str(info.value)
    ds[0]  # the good files still load
    # the preparation script refuses the same file before it writes anything
    mod = load_script("prepare_mtan")
    with pytest.raises(mod.PrepareError, match=match):
        mod.prepare("cityscapes", root, tmp_path / "prepared", strict_counts=False, quiet=True)
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").rglob("*.npy"))
    survived(request)


def test_6_normals_out_of_range_are_refused(request, tmp_path):
    from coremtl_lite.data.real import NpyFolder

    folder = tmp_path / "split"
    for sub, arr in (
        ("image", np.zeros((4, 4, 3), np.float32)),
        ("normal", np.full((4, 4, 3), 3.0, np.float32)),
    ):
        (folder / sub).mkdir(parents=True)
        np.save(folder / sub / "0.npy", arr)
    with pytest.raises(ValueError, match=r"normal components.*0\.npy|0\.npy.*normal components"):
        NpyFolder(folder, {"normal": "normal"}, {"normal": {"kind": "normal"}})[0]
    survived(request)


@pytest.mark.parametrize(
    "name,match",
    [("7.npy", "outside 0.npy..3.npy: 7.npy"), ("extra.npy", "extra.npy"), ("0.tmp.npy", "0.tmp.npy")],
)
def test_6_an_extra_file_is_reported_as_extra_not_missing(request, tmp_path, name, match):
    from coremtl_lite.data.real import Cityscapes

    root = _city(tmp_path / "cityscapes", n=(3, 2))
    np.save(root / "train" / "image" / name, np.zeros((8, 16, 3), np.float32))
    with pytest.raises(ValueError, match=match) as info:
        Cityscapes(root, "train")
    assert "missing" not in str(info.value)
    (root / "train" / "image" / name).unlink()
    (root / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing data file: .*depth.2\.npy"):
        Cityscapes(root, "train")
    survived(request)


def test_6_celeba_attribute_values_other_than_plus_minus_one_are_refused(request, tmp_path):
    from coremtl_lite.data.real import read_celeba_attributes

    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("1\nA B\n000001.jpg 1 0\n")
    with pytest.raises(ValueError, match="list_attr_celeba.txt.*other than 1 and -1"):
        read_celeba_attributes(path)
    survived(request)


def test_cityscapes_in_libmtl_layout_loads_like_the_mtan_layout(request, tmp_path):
    from coremtl_lite.data import build_splits
    from coremtl_lite.data.real import Cityscapes

    mtan = _city(tmp_path / "mtan" / "cityscapes", label="label_7", seed=3)
    libmtl = _city(tmp_path / "libmtl" / "cityscapes", label="label", seed=3)
    a, b = Cityscapes(mtan, "val")[1], Cityscapes(libmtl, "val")[1]
    assert all(torch.equal(a[k], b[k]) for k in ("image", "segmentation", "depth"))
    cfg = get_config(
        "ci",
        [
            "data.dataset=cityscapes",
            f"data.root={libmtl}",
            "data.tasks=segmentation,depth",
            "data.eval_domains=source",
        ],
    )
    assert len(build_splits(cfg.data, 0).train) == 3
    survived(request)


# ========================================================================== 8. typed method options
@pytest.mark.parametrize(
    "overrides,attr,value",
    [
        (["train.method=mgda", "train.method_options.solver=frank_wolfe"], "solver", "frank_wolfe"),
        (
            ["train.method=aligned_mtl", 'train.method_options={"scale_mode": "median"}'],
            "scale_mode",
            "median",
        ),
        (["train.method=stch", "train.method_options.preference=0.2,0.3,0.5"], "preference", [0.2, 0.3, 0.5]),
        (["train.method=upgrad", "train.method_options.preference=[1, 2, 1]"], "preference", [1.0, 2.0, 1.0]),
        (["train.method=cagrad", "train.method_options.c=0.25"], "c", 0.25),
    ],
)
def test_8_string_and_list_options_reach_the_method(request, tmp_path, overrides, attr, value):
    tr = tiny_trainer(tmp_path, *overrides)
    got = getattr(tr.method, attr)
    got = got.tolist() if hasattr(got, "tolist") else got
    if isinstance(value, list):
        total = sum(value) if attr == "preference" and tr.cfg.train.method == "stch" else None
        assert got == pytest.approx(value) or (total and got == pytest.approx([v / total for v in value]))
    else:
        assert got == value
    survived(request)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            ["train.method=mgda", "train.method_options.solverr=x"],
            r"method 'mgda' has no option 'solverr'.*'solver'",
        ),
        (
            ["train.method=mgda", "train.method_options.solver=3"],
            "method 'mgda' option 'solver' expects a string",
        ),
        (
            ["train.method=cagrad", "train.method_options.c=fast"],
            "method 'cagrad' option 'c' expects a finite number",
        ),
        (
            ["train.method=cagrad", "train.method_options.c=NaN"],
            "method 'cagrad' option 'c' expects a finite number",
        ),
        (["train.method=stch", "train.method_options.preference=a,b"], "method 'stch' option 'preference'"),
        (["train.method=mgda", "train.method_options.solver=simplex"], "mgda"),
    ],
)
def test_8_bad_method_options_name_the_method_and_key(request, overrides, match, capsys, tmp_path):
    assert main(["train", *SMALL, *overrides, f"train.out_dir={tmp_path / 'r'}"]) == 2
    io = capsys.readouterr()
    assert __import__("re").search(match, io.err), io.err
    assert "training" not in io.out and "Traceback" not in io.err
    survived(request)


def test_8_methods_command_lists_every_method_with_options_defaults_and_paper(request, capsys):
    from coremtl_lite.methods import available
    from coremtl_lite.methods.base import method_options

    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for name in available():
        assert f"\n{name} " in f"\n{text}", name
        for key, (_kind, default) in method_options(name).items():
            assert f"    {key}: " in text and repr(default) in text
    assert "Sener & Koltun 2018" in text and "solver: str = 'quadprog'" in text
    survived(request)


# ===================================================================== errors a user can act on
def test_errors_evaluate_a_non_checkpoint_says_so(request, capsys):
    assert main(["evaluate", str(ROOT / "README.md")]) == 2
    err = capsys.readouterr().err
    assert "README.md' is not a checkpoint" in err and len(err.strip().splitlines()) == 1
    survived(request)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"], ids=["empty", "truncated"])
def test_errors_an_unreadable_checkpoint_is_one_line(request, tmp_path, capsys, content):
    (tmp_path / "last.pt").write_bytes(content)
    assert main(["evaluate", str(tmp_path / "last.pt")]) == 2
    err = capsys.readouterr().err
    assert "last.pt" in err and len(err.strip().splitlines()) == 1
    survived(request)


def test_errors_a_bare_key_suggests_its_section(request, capsys):
    assert main(["train", "--profile", "ci", "lr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    survived(request)


def test_errors_overrides_before_and_after_resume(request, run_copy):
    cfg, here = str(run_copy / "config.json"), f"train.out_dir={run_copy}"
    assert (
        main(["train", "--config", cfg, "train.progress=false", "--resume", "train.log_every=5", here]) == 0
    )
    assert main(["train", "--config", cfg, here, "--resume", "--overwrite"]) == 2  # not both
    survived(request)


@pytest.mark.parametrize("failure", ["non_finite", "disk_full", "bad_json"])
def test_errors_known_failures_are_one_error_line_with_status_2(
    request, tmp_path, monkeypatch, capsys, failure
):
    from coremtl_lite.train import NonFiniteLossError, Trainer

    args = ["train", *SMALL, f"train.out_dir={tmp_path / 'r'}"]
    if failure == "non_finite":

        def fit(self, *a, **k):
            raise NonFiniteLossError("non-finite loss at step 3 (epoch 1): loss/depth = [nan]", 3, 0, {})

        monkeypatch.setattr(Trainer, "fit", fit)
    elif failure == "disk_full":
        import errno

        import coremtl_lite.train.checkpoint as ck

        def full(fh, *a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ck.torch, "save", full)
    else:
        (tmp_path / "c.json").write_text('{"optim": {"lr": 1e-3,}}')
        args = ["train", "--config", str(tmp_path / "c.json")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert __import__("re").search(
        {"non_finite": "loss/depth", "disk_full": r"cannot write '.*(best|last)\.pt'", "bad_json": "c.json"}[
            failure
        ],
        err,
    )
    survived(request)


def test_errors_a_bug_keeps_its_traceback(request, tmp_path, monkeypatch):
    from coremtl_lite.train import Trainer

    def fit(self, *a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Trainer, "fit", fit)
    with pytest.raises(ZeroDivisionError):
        main(["train", *SMALL, f"train.out_dir={tmp_path / 'r'}"])
    survived(request)


class _Crash:
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, trainer, record):
        if record["step"] == self.at:
            raise KeyboardInterrupt


def test_errors_the_resume_recipe_works_after_a_crash(request, tmp_path):
    """config.json is there as soon as the run starts; ``--config <out>/config.json --resume`` continues."""
    tr = tiny_trainer(tmp_path, callbacks=[_Crash(at=5)])
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    assert (tmp_path / "config.json").is_file() and not (tmp_path / ".lock").exists()
    cfg = Config.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert cfg == tr.cfg
    survived(request)


# ============================================================= what already held: keep it so
def _straight(tmp_path):
    tr = tiny_trainer(tmp_path)
    tr.fit()
    return {k: v.clone() for k, v in tr.model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("point", ["during_write", "before_rename", "between_last_and_history", "mid_epoch"])
def test_kill_at_a_checkpoint_write_then_resume_is_bit_identical(request, tmp_path, monkeypatch, point):
    import coremtl_lite.train.checkpoint as ck

    want = _straight(tmp_path / "straight")
    run = tmp_path / "run"
    tr = tiny_trainer(run)
    tr.fit(stop_at_epoch=1)
    if point == "during_write":

        def half(obj, fh, *a, **k):
            fh.write(b"PK\x03\x04half")
            raise KeyboardInterrupt

        monkeypatch.setattr(ck.torch, "save", half)
    elif point == "before_rename":
        monkeypatch.setattr(ck.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    elif point == "between_last_and_history":
        real_write = ck.atomic_write

        def write(path, fn):
            if Path(path).name == "history.json":
                raise KeyboardInterrupt
            return real_write(path, fn)

        monkeypatch.setattr("coremtl_lite.train.trainer.atomic_write", write)
    else:
        tr.callbacks.append(_Crash(at=6))
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    monkeypatch.undo()
    resumed = tiny_trainer(run)
    resumed.fit(resume=True)
    assert resumed.epoch == 2 and _same(resumed.model.state_dict(), want)
    assert _same(load_checkpoint(run / "last.pt")["model"], want) and not list(run.glob(".*.tmp"))
    assert len(json.loads((run / "history.json").read_text())["epochs"]) == 2  # history.json caught up too
    survived(request)


def _tiny_run_in_subprocess(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` (with ``tiny_trainer`` imported) in a fresh interpreter with this process's thread count,
    so that the runs compared below share their numerics whatever earlier tests left in this process."""
    code = textwrap.dedent(f"""
        import os, signal, sys; sys.path.insert(0, {str(ROOT / "tests")!r})
        import torch; torch.set_num_threads({torch.get_num_threads()})
        from _train_helpers import tiny_trainer
    """) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_a_real_sigkill_mid_run_then_resume_is_bit_identical(request, tmp_path):
    run, straight = tmp_path / "run", tmp_path / "straight"
    done = _tiny_run_in_subprocess(f"""
        tr = tiny_trainer({str(straight)!r}); tr.fit()
        torch.save(tr.model.state_dict(), {str(tmp_path / "want.pt")!r})
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    proc = _tiny_run_in_subprocess(f"""
        class Kill:
            def on_step_end(self, trainer, record):
                if record["step"] == 6:
                    os.kill(os.getpid(), signal.SIGKILL)
        tiny_trainer({str(run)!r}, callbacks=[Kill()]).fit()
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (run / ".lock").exists()  # the killed run's lock is left behind ...
    resumed = _tiny_run_in_subprocess(f"""
        tr = tiny_trainer({str(run)!r}); tr.fit(resume=True)  # ... and taken over as stale
        torch.save(tr.model.state_dict(), {str(tmp_path / "got.pt")!r})
    """)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    want, got = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("want", "got"))
    assert _same(got, want) and not (run / ".lock").exists()
    survived(request)


def test_refused_pickles_never_run_their_code(request, tmp_path, capfd):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"version": 1, "model": Evil()}, tmp_path / "evil.pt")
    assert main(["evaluate", str(tmp_path / "evil.pt")]) == 2
    io = capfd.readouterr()
    assert "refusing checkpoint" in io.err and "evil.pt" in io.err and "pwned" not in io.out
    survived(request)


# ============================================================================== the figures
def test_zz_figures(request):
    """Print the suite's figures (faults tried = fault tests collected in this file, survived = passed)."""
    tried = sum(
        1
        for item in request.session.items
        if item.path == request.node.path and item.name != request.node.name
    )
    lost = sum(1 for _, was_lost in OUTCOMES if was_lost)
    ok = sum(1 for _, was_lost in OUTCOMES if not was_lost)
    print(f"\nfault suite: {tried} faults tried, {ok} survived, data lost in {lost}")
    assert lost == 0
