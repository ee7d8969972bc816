"""The command line (issue 15, "errors and discoverability"): one-line errors with exit code 2
(tracebacks with --debug), "did you mean" for --set keys, `selective-sharing config` listing
every key with its value and allowed values, and the explain / replay / reproduce commands."""

from __future__ import annotations

import subprocess
import sys

import pytest
from selective_sharing.core import make_config, train
from selective_sharing.core.cli import cli
from selective_sharing.core.config import ConfigError, describe_keys


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selective_sharing.core.cli", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def _one_clean_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_unknown_dataset_is_one_line(tmp_path):
    line = _one_clean_line(_cli("train", "--dataset", "nosuch", "--out", str(tmp_path / "r")))
    assert "error: DatasetError: unknown dataset 'nosuch'; registered datasets: [" in line
    assert not (tmp_path / "r").exists()


def test_missing_data_root_is_one_line(tmp_path):
    line = _one_clean_line(_cli("train", "--dataset", "school", "--data-root", "/nonexistent",
                                "--out", str(tmp_path / "r")))
    assert "data file 'school.mat' not found at /nonexistent/school.mat" in line


def test_a_near_miss_key_gets_did_you_mean(tmp_path):
    line = _one_clean_line(_cli("train", "--set", "train.step=50", "--out", str(tmp_path / "r")))
    assert "train has no field 'step' (did you mean 'train.steps'?)" in line
    with pytest.raises(ConfigError, match=r"did you mean 'train.steps'\?"):
        make_config("synthetic", overrides={"trian.steps": 5})


def test_debug_shows_the_traceback(tmp_path):
    proc = _cli("train", "--dataset", "nosuch", "--out", str(tmp_path / "r"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "DatasetError: unknown dataset 'nosuch'" in proc.stderr


def test_python_m_train_reports_errors_the_same_way(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "selective_sharing.core.train", "--dataset",
                           "nosuch", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert "unknown dataset 'nosuch'" in _one_clean_line(proc)


def test_config_lists_every_key_with_value_and_allowed_values():
    proc = _cli("config", "--dataset", "school", "--method", "ss_similarity")
    assert proc.returncode == 0, proc.stderr
    rows = describe_keys("school", "ss_similarity")
    listed = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(listed) == {key for key, _, _ in rows}
    assert len(rows) > 50
    assert listed["train.steps"].split("#")[0].split("=")[1].strip() == "60"  # school's profile
    assert "# a positive integer" in listed["train.steps"]
    assert "# a positive integer, or null" in listed["train.batch_size"]
    assert "one of ['cosine', 'subspace', 'auto']" in listed["grouping.distance"]
    assert "one of ['builtin', 'resnet18']" in listed["model.trunk"]
    assert "= 0.75" in listed["data.train_fraction"]  # a loader option, from its signature


def test_explain_and_replay_commands(tmp_path, capsys):
    run = train(make_config("synthetic", overrides={"train.steps": 60, "warmup_steps": 40},
                            out=str(tmp_path / "run")), progress=False)
    cli(["explain", str(run), "task_00", "task_01"])
    out = capsys.readouterr().out
    assert "task_00" in out and "task_01" in out and "merged" in out
    cli(["replay", str(run)])
    assert "exact replay of" in capsys.readouterr().out
    cli(["replay", str(run), "--set", "distance=cosine", "--set", "min_silhouette=0.0"])
    assert "counterfactual {" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        cli(["explain", str(run), "task_00", "no_such_task"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_reproduce_scripts_run_through_the_command():
    proc = _cli("table2", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "--profile" in proc.stdout


def test_train_refuses_an_existing_run_unless_overwrite(tmp_path, capsys):
    args = ["train", "--dataset", "synthetic", "--out", str(tmp_path / "run"), "--no-progress",
            "--set", "train.steps=30", "--set", "warmup_steps=20"]
    cli(args)
    first = (tmp_path / "run" / "manifest.json").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        cli(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: RunDirError: ") and "--overwrite (overwrite=True)" in err
    assert (tmp_path / "run" / "manifest.json").read_text() == first  # refused: nothing lost
    cli([*args, "--overwrite"])
    assert (tmp_path / "run" / "manifest.json").read_text() != first
