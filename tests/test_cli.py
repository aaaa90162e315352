"""The ``coremtl-lite`` command in the ci profile: help, train, evaluate and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coremtl_lite.cli import DEMO_RUNS, TRIVIAL, main
from coremtl_lite.config import get_config

#: the ci profile made smaller still, so each command takes seconds
SMALL = [
    "data.image_size=16",
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "optim.epochs=1",
]


def test_help_is_clear(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("train", "evaluate", "demo", "section.key=value", "COREMTL_PROFILE", "torchrun"):
        assert word in text
    assert main([]) == 2  # no command: the help, and a usage error code


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("coremtl-lite")
    if not exe.exists():
        pytest.skip("the package is not installed in this environment (pip install -e .)")
    out = subprocess.run([str(exe), "train", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--resume" in out.stdout


def test_bad_override_names_the_nearest_key(capsys):
    assert main(["train", "--profile", "ci", "optim.lrr=0.1"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--profile",
            "ci",
            *SMALL,
            "train.method=ew",
            "model.architecture=vanilla",
            "model.grounding=none",
            "data.tasks=segmentation,depth",
            f"train.out_dir={out}",
        ]
    )
    assert code == 0
    for name in ("last.pt", "best.pt", "history.json", "results.json", "config.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["results"]) == {"source", "target"}
    assert 0.0 <= saved["results"]["source"]["segmentation"]["mIoU"] <= 1.0
    printed = capsys.readouterr().out
    assert "segmentation/mIoU" in printed and "trivial (source)" in printed  # the constants next to the model
    assert set(saved["trivial"]) == {"source", "target"}
    assert (
        saved["trivial"]["source"] == saved["trivial"]["target"]
    )  # constants: the same labels in both domains

    # the same run from its config file; --resume finds the finished run and does not train again
    cfg_file = out / "config.json"
    assert main(["train", "--config", str(cfg_file), "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["results"] == saved["results"]

    # evaluate the selected weights on another domain, with itself as the "single-task" reference: Δm = 0
    ev = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                str(out / "best.pt"),
                "--domains",
                "source,colored",
                "--output",
                str(ev),
                "--reference",
                str(out / "results.json"),
            ]
        )
        == 2
    )  # the reference lacks 'colored'
    assert (
        main(
            [
                "evaluate",
                str(out / "best.pt"),
                "--domains",
                "source",
                "--output",
                str(ev),
                "--reference",
                str(out / "results.json"),
            ]
        )
        == 0
    )
    payload = json.loads(ev.read_text())
    assert payload["results"]["source"] == saved["results"]["source"]
    assert payload["trivial"]["source"] == saved["trivial"]["source"] and isinstance(
        payload["below_trivial"], list
    )
    assert payload["delta_m"]["source"] == pytest.approx(0.0, abs=1e-9)
    assert main(["evaluate", str(tmp_path / "nope.pt")]) == 2
    (tmp_path / "list.json").write_text("[1, 2]")  # a reference that is no results file: one error line
    assert main(["evaluate", str(out / "best.pt"), "--reference", str(tmp_path / "list.json")]) == 2
    assert "list.json" in capsys.readouterr().err


def test_config_file_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    cfg = get_config("ci")
    cfg.to_json(tmp_path / "ok.json")
    raw = json.loads((tmp_path / "ok.json").read_text())
    raw["optim"]["nonsense"] = 1
    (tmp_path / "ok.json").write_text(json.dumps(raw))
    assert main(["train", "--config", str(tmp_path / "ok.json")]) == 2
    assert "optim.nonsense" in capsys.readouterr().err


def test_demo_in_ci_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COREMTL_PROFILE", "ci")
    assert main(["demo", "--out", str(tmp_path / "demo"), *SMALL]) == 0
    text = capsys.readouterr().out
    for run in DEMO_RUNS:
        assert run in text
    assert "gap" in text
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "plotly" in report.lower() and "ID / OOD table" in report
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["profile"] == "ci" and list(saved["results"]) == [TRIVIAL, *DEMO_RUNS]
    assert TRIVIAL in text  # the trivial predictors are a row of the printed table
    # the ci profile's tiny models do not beat the constants: every such (domain, task) is flagged
    flagged = {(run, d, t) for run, v in saved["below_trivial"].items() for d, t, _ in v}
    assert flagged  # 2 epochs on 64 scenes of 32 px: some task does not beat its constant
    for run, domain, task in flagged:
        assert f"{run} does not beat the trivial predictor on {domain} {task}" in text
    for row in saved["rows"]:
        assert row["seg mIoU gap"] == pytest.approx(row["seg mIoU (target)"] - row["seg mIoU (source)"])


def test_bench_command_runs_a_suite_and_prints_its_table(tmp_path, capsys):
    from coremtl_lite.cli import main

    code = main(
        [
            "bench",
            "--suites",
            "grounding",
            "--profile",
            "ci",
            "--seeds",
            "0",
            "--out",
            str(tmp_path),
            "optim.epochs=1",
            "data.train_size=16",
            "data.val_size=8",
            "data.test_size=8",
            "loss.perceptual=ssim",
            "train.progress=false",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "## grounding (source)" in out and "| soft |" in out and "| hard |" in out
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "report.html").is_file()


def test_bench_command_names_an_unknown_suite(tmp_path, capsys):
    from coremtl_lite.cli import main

    assert main(["bench", "--suites", "table99", "--profile", "ci", "--out", str(tmp_path)]) == 2
    assert "unknown suite" in capsys.readouterr().err


def test_assignments_command_checks_the_student_versions(capsys):
    from coremtl_lite.cli import main

    assert main(["assignments", "--check"]) == 0
