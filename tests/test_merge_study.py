"""reproduce/merge_study.py: its plan (every variant a valid config, the paired mtl runs added,
steps scaled for a smoke test), the post-merge dip figures and the verdict. No training, no
torch: milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reproduce_scripts import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("merge_study")


def test_every_variant_is_a_valid_config(study, tmp_path):
    from selective_sharing.core.grid import job_config

    jobs = study.plan(tmp_path, study.DATASETS, study.SEEDS, study.VARIANTS, {})
    assert len(jobs) == len(study.DATASETS) * len(study.SEEDS) * len(study.VARIANTS)
    configs = {(j.dataset, Path(j.run_dir).parent.name, j.seed): job_config(j) for j in jobs}
    mnist = {k[1]: c for k, c in configs.items() if k[0] == "mnist_context" and k[2] == 0}
    shapes = {k[1]: c for k, c in configs.items() if k[0] == "shapes_context" and k[2] == 0}
    assert mnist["ss"].sharing.warmup_steps == 150 and shapes["ss"].sharing.warmup_steps == 200
    assert (mnist["ss_event_early"].sharing.warmup_steps,
            mnist["ss_event_late"].sharing.warmup_steps) == (75, 225)
    assert (shapes["ss_event_early"].sharing.warmup_steps,
            shapes["ss_event_late"].sharing.warmup_steps) == (100, 250)
    assert mnist["ss_merge_best"].sharing.merge == "best"
    assert mnist["ss_regroup_p2"].sharing.regroup_every == 50
    assert mnist["ss_regroup_p2"].grouping.patience == 2
    assert mnist["ss_regroup_p2"].sharing.max_events is None
    assert mnist["mtl_wide"].model.estimator_hidden == (128, 64)
    assert mnist["mtl_long"].train.steps == mnist["ss_long"].train.steps == 450
    assert mnist["ss_long"].sharing.warmup_steps == 150
    assert all(c.train.threads == 1 and c.profile == "quick" for c in configs.values())
    assert {c.method for c in mnist.values()} == {"mtl", "ss_similarity"}


def test_smoke_settings_scale_the_variants(study, tmp_path):
    extra = {"train.steps": "20", "sharing.warmup_steps": "10"}
    by = {Path(j.run_dir).parent.name: j.overrides
          for j in study.plan(tmp_path, ["mnist_context"], [0], study.VARIANTS, extra)}
    assert by["ss"] == extra
    assert by["ss_event_early"]["sharing.warmup_steps"] == 5
    assert by["ss_event_late"]["sharing.warmup_steps"] == 15
    assert by["ss_long"]["train.steps"] == 30
    assert by["ss_regroup_p1"]["sharing.regroup_every"] == 3


def test_loss_dip(study):
    steps = np.arange(100)
    loss = np.full(100, 0.1)
    loss[50:] = 0.1 + 0.7 * np.exp(-np.arange(50) / 5.0)  # a jump at 50, decaying
    dip = study.loss_dip(loss, steps, 50)
    assert dip["pre_loss"] == pytest.approx(0.1)
    assert dip["peak_loss"] == pytest.approx(0.8)
    # first step with 0.1 + 0.7 exp(-k/5) <= 0.2: k >= 5 ln 7 = 9.73
    assert dip["recovery_steps"] == 10 and dip["recovered"]
    never = study.loss_dip(np.r_[np.full(50, 0.1), np.full(50, 1.0)], steps, 50)
    assert not never["recovered"] and never["recovery_steps"] == 50


def test_verdict_needs_every_seed_and_fewer_parameters(study):
    def row(d, s, diff, params=1):
        return {"variant": "ss", "dataset": d, "seed": s, "diff_vs_mtl": diff,
                "parameters": params, "mtl_parameters": 2}

    ok = [row(d, s, 0.001) for d in ("a", "b") for s in (0, 1, 2)]
    assert study.reaches(ok, "ss", ("a", "b"), (0, 1, 2))
    assert not study.reaches(ok[:-1], "ss", ("a", "b"), (0, 1, 2))  # a seed missing
    assert not study.reaches([*ok[:-1], row("b", 2, -0.001)], "ss", ("a", "b"), (0, 1, 2))
    assert not study.reaches([*ok[:-1], row("b", 2, 0.0, params=3)], "ss", ("a", "b"),
                             (0, 1, 2))
