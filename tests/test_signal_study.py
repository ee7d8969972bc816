"""reproduce/signal_study.py: where the gradient group signal lives (GENERATED data)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reproduce_scripts import load_script
from selective_sharing.datasets.planted import planted

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    return load_script("signal_study")


@pytest.mark.parametrize("generator", ["own_regression_equal", "issue_binary_uneven",
                                       "shared_multiclass_equal"])
def test_label_prior_predicts_each_tasks_training_labels(study, generator):
    data = planted(generator, seed=1)
    for t, (spec, bias) in enumerate(zip(data.tasks, study.label_prior(data))):
        y = np.asarray(data.y_train[data.m_train[:, t].astype(bool), t], dtype=np.float64)
        if spec.type == "regression":
            assert bias == pytest.approx([y.mean()])
        elif spec.type == "binary":
            assert 1 / (1 + np.exp(-bias[0])) == pytest.approx(y.mean())
        else:
            soft = np.exp(bias) / np.exp(bias).sum()
            freq = np.bincount(y.astype(int), minlength=spec.n_classes) / y.size
            np.testing.assert_allclose(soft, freq, rtol=1e-9)
            assert bias.sum() == pytest.approx(0.0, abs=1e-12)


def test_prior_model_is_the_built_in_model_with_prior_head_biases(study):
    from selective_sharing.core import make_config
    from selective_sharing.core.model import build_model
    from selective_sharing.core.training import _defaults_for

    data = planted("issue_binary_uneven", seed=0)
    config = make_config(data.name, "ss_similarity", 0, "quick")
    model = study.prior_model(config, data)
    full = _defaults_for(config, data)
    plain = build_model(data.input_shape, data.tasks, full.model, np.arange(data.n_tasks), 1,
                        seed=0)
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        if name != "head_bias":
            assert torch.equal(a, b), name
    expected = torch.tensor(np.concatenate(study.label_prior(data)), dtype=torch.float32)
    assert torch.equal(model.head_bias[:, 0], expected)


def test_feature_transforms_do_what_they_say(study):
    rng = np.random.default_rng(0)
    summed = rng.normal(size=(12, 6, 8)) + rng.normal(size=(1, 6, 8))  # a common component
    centred = study.centred(summed)
    np.testing.assert_allclose(centred.sum(axis=0), 0.0, atol=1e-12)
    removed = study.dominant_removed(summed)
    unit = summed.reshape(12, -1) / np.linalg.norm(summed.reshape(12, -1), axis=1)[:, None]
    top = np.linalg.svd(unit, full_matrices=False)[2][0]
    np.testing.assert_allclose(removed @ top, 0.0, atol=1e-12)
    white = study.whitened(summed).reshape(12, 6, 8).reshape(-1, 8)
    white = white - white.mean(axis=0)
    np.testing.assert_allclose(white.T @ white / len(white), np.eye(8), atol=1e-8)


def test_cut_of_finds_planted_blocks_and_its_ceiling(study):
    rng = np.random.default_rng(1)
    truth = np.repeat([0, 1, 2], 4)
    centres = rng.normal(size=(3, 30))
    features = centres[truth] + 0.1 * rng.normal(size=(12, 30))
    out = study.cut_of(features, truth)
    assert out["ari"] == 1.0 and out["ceiling"] == 1.0 and out["groups_found"] == 3
    assert out["silhouette"] > 0.8
    noise = study.cut_of(rng.normal(size=(12, 30)), truth)
    assert noise["ceiling"] >= noise["ari"]


@pytest.mark.slow  # trains 4 small runs end to end (~20 s on 2 cores)
def test_signal_study_end_to_end_reads_every_window_from_the_stores(study, tmp_path):
    from selective_sharing.core import store

    cmd = [sys.executable, str(ROOT / "reproduce" / "signal_study.py"), "--generators",
           "own_regression_equal", "--seeds", "0", "--runs", str(tmp_path / "runs"), "--out",
           str(tmp_path / "results")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "results" / "signal_study.csv").open()))
    features = list(dict.fromkeys(r["feature"] for r in rows))
    assert features[:4] == [f"window {k} (steps {40 * k}-{40 * (k + 1)})" for k in range(4)]
    assert features[-2:] == ["first window, head biases at the label prior", study.LINEAR]
    assert "branch outputs on the training inputs, step 160 (not a gradient)" in features
    run = tmp_path / "runs" / "windows" / "own_regression_equal" / "structured" / "seed0"
    events = [store.read_event(p) for p in store.list_events(run)]
    assert [int(e.attrs["step"]) for e in events] == [40, 80, 120, 160]
    assert all(e.attrs["n_entities_after"] == 20 for e in events)  # merging off
    truth = np.asarray(store.read_manifest(run)["true_groups"])
    total = sum(e["summed"].values.astype(np.float64) for e in events).reshape(20, -1)
    row = next(r for r in rows if r["feature"] == "all windows summed"
               and r["version"] == "structured")
    assert float(row["ari"]) == pytest.approx(study.cut_of(total, truth)["ari"])
    outputs = np.load(run / "probe_outputs" / "event_000000.npy")
    data = planted("own_regression_equal", seed=0)
    assert outputs.shape == (20, data.x_train.shape[0])  # one output per training input
    np.testing.assert_allclose(outputs.mean(axis=1), 0.0, atol=1e-4)  # centred over inputs
    row = next(r for r in rows if r["feature"].startswith("branch outputs on the training "
                                                          "inputs, step 40")
               and r["version"] == "structured")
    assert float(row["ari"]) == pytest.approx(
        study.cut_of(outputs.astype(np.float64), truth)["ari"])
    md = (tmp_path / "results" / "signal_study.md").read_text()
    assert "GENERATED" in md and "| window 1 (steps 40-80) |" in md
    again = subprocess.run([*cmd[:-1], str(tmp_path / "again"), "--report-only"],
                           capture_output=True, text=True, cwd=tmp_path, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "again" / "signal_study.md").read_text() == md
