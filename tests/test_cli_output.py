"""What the command line prints: the ci profile's label, bars on a terminal, no download, the tutorials copy."""

from __future__ import annotations

import sys

import pytest

from coremtl_lite.cli import CI_LABEL, _terminal_overrides, main

SMALL = [
    "data.image_size=16",
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "optim.epochs=1",
    "loss.perceptual=ssim",
]


def test_ci_profile_is_labelled_a_smoke_test(tmp_path, capsys):
    assert main(["train", "--profile", "ci", *SMALL, f"train.out_dir={tmp_path}"]) == 0
    out = capsys.readouterr()
    assert CI_LABEL in out.out and "smoke test, numbers are not meaningful" in CI_LABEL
    assert "Downloading" not in out.err and "http" not in out.err


def test_progress_bars_on_a_terminal_in_every_profile(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _terminal_overrides(["optim.epochs=1"]) == ["train.progress=true", "optim.epochs=1"]
    # an explicit override comes later, so it wins
    assert _terminal_overrides(["train.progress=false"])[-1] == "train.progress=false"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert _terminal_overrides(["optim.epochs=1"]) == ["optim.epochs=1"]


def test_tutorials_command_copies_the_notebooks(tmp_path, capsys):
    dest = tmp_path / "course"
    assert main(["tutorials", str(dest)]) == 0
    names = {p.name for p in dest.glob("*.ipynb")}
    assert {"01_scm_theory.ipynb", "06_benchmarks.ipynb", "08_ood_dials.ipynb"} <= names
    assert (dest / "assignments" / "README.md").is_file()
    assert len(list((dest / "assignments" / "student").glob("*.ipynb"))) == 4
    assert "copied" in capsys.readouterr().out
    assert main(["tutorials", str(dest)]) == 2  # not empty: refuses without --force
    assert "not empty" in capsys.readouterr().err
    assert main(["tutorials", str(dest), "--force"]) == 0


@pytest.mark.parametrize("argv", [["tutorials", "--help"]])
def test_tutorials_help(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "destination folder" in capsys.readouterr().out
