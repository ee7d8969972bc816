"""The planted-group generator family (GENERATED data) and reproduce/calibration.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reproduce_scripts import load_script
from scipy.stats import norm
from selective_sharing.datasets import DatasetError, MTLData
from selective_sharing.datasets.planted import GENERATORS, planted

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(GENERATORS)
#: A sample statistic of either version may sit this many standard errors from the population
#: value; the two versions' statistics therefore differ by at most Z * sqrt(2) * SE.
Z = 5.0


def _arrays(d: MTLData) -> list[np.ndarray]:
    return [d.x_train, d.y_train, d.m_train, d.x_test, d.y_test, d.m_test]


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed(name):
    for structured in (True, False):
        a, b = planted(name, 3, structured), planted(name, 3, structured)
        for x, y in zip(_arrays(a), _arrays(b)):
            np.testing.assert_array_equal(x, y)
        assert a.provenance == b.provenance
        other = planted(name, 4, structured)
        assert not np.array_equal(a.y_train, other.y_train)
    assert GENERATORS[name](3).provenance == planted(name, 3).provenance


@pytest.mark.parametrize("name", NAMES)
def test_valid_data_with_documented_shapes_types_and_groups(name):
    data = planted(name, 0)
    knobs = data.provenance["knobs"]
    sizes, kind = knobs["group_sizes"], knobs["task_type"]
    n_tasks, d = sum(sizes), knobs["n_features"]
    assert data.validate() is data and data.name == f"planted_{name}"
    own = knobs["inputs"] == "own"
    n_train = knobs["n_train"] * (n_tasks if own else 1)
    n_test = knobs["n_test"] * (n_tasks if own else 1)
    assert data.x_train.shape == (n_train, d) and data.x_test.shape == (n_test, d)
    assert data.y_train.shape == data.m_train.shape == (n_train, n_tasks)
    assert data.y_test.shape == data.m_test.shape == (n_test, n_tasks)
    assert data.x_train.dtype == data.y_train.dtype == np.float32 and data.m_train.dtype == bool
    np.testing.assert_array_equal(data.groups, np.repeat(np.arange(len(sizes)), sizes))
    assert [t.type for t in data.tasks] == [kind] * n_tasks
    for m in (data.m_train, data.m_test):
        if own:  # one dataset per task: each row labelled for its task only, task-major
            assert (m.sum(axis=1) == 1).all()
            assert (np.diff(m.argmax(axis=1)) >= 0).all()
        else:
            assert m.all()
    labelled = data.y_train[data.m_train]
    if kind == "binary":
        assert set(np.unique(labelled)) == {0.0, 1.0}
    if kind == "multiclass":
        k = knobs["n_classes"]
        assert all(t.n_classes == k for t in data.tasks)
        assert set(np.unique(labelled)) == set(range(k))
    assert (data.y_train[~data.m_train] == 0).all()
    prov = data.provenance
    assert prov["variant"] == "synthetic" and prov["generator"] == name and prov["seed"] == 0
    assert prov["description"].startswith("GENERATED") and name in prov["description"]
    assert json.loads(json.dumps(prov)) == prov  # plain JSON: it goes into every manifest


@pytest.mark.parametrize("name", NAMES)
def test_structure_free_version_only_removes_the_sharing(name):
    s, f = planted(name, 1), planted(name, 1, structured=False)
    n_tasks = s.n_tasks
    np.testing.assert_array_equal(f.groups, np.arange(n_tasks))
    assert np.unique(f.groups).size == n_tasks and np.unique(s.groups).size < n_tasks
    assert f.provenance["structured"] is False and "structure-free" in f.provenance["description"]
    # Same inputs, masks, scales and biases: the population target distribution of every task
    # depends on these only (its directions are orthonormal and the inputs isotropic).
    for a, b in [(s.x_train, f.x_train), (s.x_test, f.x_test), (s.m_train, f.m_train),
                 (s.extras["task_scales"], f.extras["task_scales"]),
                 (s.extras["task_biases"], f.extras["task_biases"])]:
        np.testing.assert_array_equal(a, b)
    for data in (s, f):  # orthonormal directions: U_t x ~ N(0, I_K) in both versions
        u = data.extras["true_directions"].astype(np.float64)
        gram = np.einsum("tkd,tjd->tkj", u, u)
        np.testing.assert_allclose(gram, np.broadcast_to(np.eye(u.shape[1]), gram.shape),
                                   atol=1e-5)
    # ... and they do differ: no two structure-free tasks share one (first directions).
    first = f.extras["true_directions"][:, 0].astype(np.float64)
    cos = np.abs(first @ first.T)
    assert cos[~np.eye(n_tasks, dtype=bool)].max() < 0.9
    _same_marginals(s, f)


def _same_marginals(s: MTLData, f: MTLData) -> None:
    """Per task, the sample statistics of the two versions agree within Z * sqrt(2) standard
    errors of their common population value (module constant Z; the two samples share inputs
    and noise, which only correlates them positively, so sqrt(2) SE bounds the difference's
    SE). Regression: mean (SE sd / sqrt(n)) and variance (SE var * sqrt(2 / (n - 1)), Gaussian
    targets). Binary and multiclass: each class frequency (SE sqrt(p (1 - p) / n)); p for the
    SE is the larger of the two sample frequencies, at least 1 / n."""
    knobs = s.provenance["knobs"]
    kind, noise = knobs["task_type"], knobs["noise"]
    scales, biases = s.extras["task_scales"], s.extras["task_biases"]
    for t in range(s.n_tasks):
        ys, yf = (d.y_train[d.m_train[:, t], t].astype(np.float64) for d in (s, f))
        n = ys.size
        bound = Z * np.sqrt(2.0)
        if kind == "regression":
            var = scales[t] ** 2 * (1 + noise ** 2)
            assert abs(ys.mean() - yf.mean()) <= bound * np.sqrt(var / n), t
            assert abs(ys.var() - yf.var()) <= bound * var * np.sqrt(2 / (n - 1)), t
            # and both near the population values the docstring states
            for y in (ys, yf):
                assert abs(y.mean() - biases[t, 0]) <= Z * np.sqrt(var / n)
        else:
            k = max(knobs["n_classes"], 2)
            for c in range(k):
                ps, pf = (ys == c).mean(), (yf == c).mean()
                p = max(ps, pf, 1 / n)
                assert abs(ps - pf) <= bound * np.sqrt(p * (1 - p) / n), (t, c)
            if kind == "binary":
                pop = noise + (1 - 2 * noise) * norm.cdf(biases[t, 0])
                for y in (ys, yf):
                    assert abs(y.mean() - pop) <= Z * np.sqrt(pop * (1 - pop) / n)


def test_the_issues_case():
    """24 binary tasks in 5 groups of uneven sizes, every task labelled on every sample, label
    noise."""
    data = planted("issue_binary_uneven", 0)
    assert data.n_tasks == 24 and {t.type for t in data.tasks} == {"binary"}
    sizes = np.bincount(data.groups)
    assert sizes.size == 5 and sizes.sum() == 24 and len(set(sizes.tolist())) > 1
    assert data.m_train.all() and data.m_test.all()
    assert data.provenance["knobs"]["noise"] > 0
    # the flips are there: no task is a clean threshold of its own direction
    u, b = data.extras["true_directions"][:, 0], data.extras["task_biases"][:, 0]
    clean = (data.x_train @ u.T + b) > 0
    flipped = (clean != data.y_train.astype(bool)).mean()
    assert 0.07 < flipped < 0.13  # noise 0.1 over 800 x 24 labels


def test_bad_knobs_and_names_fail_naming_them():
    with pytest.raises(DatasetError, match="unknown planted generator 'nope'"):
        planted("nope", 0)
    with pytest.raises(DatasetError, match=r"invalid noise=1.5"):
        planted("issue_binary_uneven", 0, noise=1.5)
    with pytest.raises(DatasetError, match=r"group_sizes=\(\)"):
        planted("own_regression_equal", 0, group_sizes=())
    with pytest.raises(DatasetError, match=r"invalid block=6"):
        planted("shared_regression_subspace", 0, block=6)


def test_family_covers_the_kinds():
    kinds = [planted(n, 0).provenance["knobs"] for n in NAMES]
    assert len(NAMES) >= 4
    assert {k["inputs"] for k in kinds} == {"shared", "own"}
    assert {k["task_type"] for k in kinds} == {"regression", "binary", "multiclass"}
    assert {len(set(k["group_sizes"])) == 1 for k in kinds} == {True, False}
    assert len({k["noise"] for k in kinds}) >= 2
    assert any(k["inputs"] == "own" and k["task_type"] == "regression" for k in kinds)


# --- reproduce/calibration.py: the linear-fit reference (no training) --------------------------


def _calibration_module():
    return load_script("calibration")


def test_task_coefficients_are_each_tasks_own_least_squares_fit():
    cal = _calibration_module()
    data = planted("own_regression_equal", seed=0)
    w = cal.task_coefficients(data)
    assert w.shape == (data.n_tasks, data.x_train.shape[1])
    for t in (0, 7, data.n_tasks - 1):
        m = data.m_train[:, t].astype(bool)
        x = np.c_[data.x_train[m].astype(np.float64), np.ones(m.sum())]
        expected = np.linalg.lstsq(x, data.y_train[m, t].astype(np.float64), rcond=None)[0][:-1]
        np.testing.assert_allclose(w[t], expected, rtol=1e-6, atol=1e-8)
    multi = planted("shared_multiclass_equal", seed=0)
    assert cal.task_coefficients(multi).shape == (multi.n_tasks, 3 * multi.x_train.shape[1])


def test_linear_reference_finds_planted_direction_groups_and_reports_them():
    """On a direction-sharing generator the per-task fits hold the groups (ARI 1), and their
    best cut separates far better than on the structure-free version; the report's section
    prints these rows."""
    cal = _calibration_module()
    rows = cal.reference_rows(["own_regression_equal"], [0])
    by = {r["version"]: r for r in rows}
    assert set(by) == {"structured", "free"}
    assert by["structured"]["ari"] == pytest.approx(1.0)
    assert by["structured"]["groups_found"] == 4
    assert by["structured"]["silhouette"] > by["free"]["silhouette"] + 0.3
    assert by["free"]["n_tasks"] == 20
    text = "\n".join(cal._reference(rows, [], ["own_regression_equal"]))
    line = next(x for x in text.splitlines() if x.startswith("| own_regression_equal |"))
    assert line.split(" | ")[1:3] == ["1.00", "1/1 (100%)"]
    assert f"{by['free']['silhouette']:.3f}" in line
    assert "linear fits 1/1 (100%)" in text


# --- reproduce/calibration.py, end to end ------------------------------------------------------


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibration")
    cmd = [sys.executable, str(ROOT / "reproduce" / "calibration.py"), "--quick",
           "--generators", "own_regression_equal", "--seeds", "0", "--runs", str(tmp / "runs"),
           "--out", str(tmp / "results"), "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, cmd


@pytest.mark.slow  # trains 2 runs end to end (~30 s on 2 cores)
def test_calibration_table_equals_the_stores(calibration):
    from selective_sharing.core import store

    tmp, _ = calibration
    md = (tmp / "results" / "calibration.md").read_text()
    rows = list(csv.DictReader((tmp / "results" / "calibration.csv").open()))
    assert "GENERATED" in md and {r["version"] for r in rows} == {"structured", "free"}
    assert all(r["data"] == "GENERATED (variant synthetic)" for r in rows)
    assert len(rows) == 2  # one event per run with the defaults
    reference = list(csv.DictReader((tmp / "results" / "calibration_reference.csv").open()))
    assert [(r["generator"], r["version"], r["seed"]) for r in reference] == [
        ("own_regression_equal", "structured", "0"), ("own_regression_equal", "free", "0")]
    assert "## Reference: the same cut on per-task linear fits (no gradients)" in md
    for r in rows:
        run = tmp / "runs" / "own_regression_equal" / r["version"] / "seed0"
        assert Path(r["run"]) == run
        metrics = store.read_metrics(run)
        partition = metrics["partition"].values
        assert int(r["groups_found"]) == np.unique(partition).size
        assert (r["merged"] == "True") == (np.unique(partition).size < partition.size)
        assert float(r["ari"]) == pytest.approx(float(metrics["adjusted_rand_index"]), abs=1e-6)
        events = store.list_events(run)
        ev = store.read_event(events[0])
        chosen = ev.attrs["chosen_distance"]
        sil = float(ev["silhouettes"].sel(distance=chosen))
        assert r["chosen_distance"] == chosen and int(r["step"]) == int(ev.attrs["step"])
        assert float(r["silhouette"]) == pytest.approx(sil, abs=1e-6)
        assert f"{sil:.3f}{chosen[0]}" in md  # the silhouette cell of the event table
        if r["version"] == "structured":
            ari = float(metrics["adjusted_rand_index"])
            line = next(x for x in md.splitlines() if x.startswith("| own_regression_equal | own"))
            assert line.split(" | ")[2] == f"{ari:.2f}"
            target = next(x for x in md.splitlines() if x.startswith("| structured (gen"))
            assert f"ARI >= 0.9 | >= 90% | {int(ari >= 0.9)}/1" in target
            assert target.endswith("**met** |" if ari >= 0.9 else "**missed** |")
        else:
            merged = np.unique(partition).size < partition.size
            target = next(x for x in md.splitlines() if x.startswith("| structure-free runs"))
            assert f"| <= 5% | {int(merged)}/1" in target
            assert target.endswith("**missed** |" if merged else "**met** |")


@pytest.mark.slow
def test_calibration_report_rebuilds_identically_from_the_stores(calibration):
    tmp, cmd = calibration
    files = ("calibration.md", "calibration.csv", "calibration_reference.csv")
    before = [(tmp / "results" / f).read_text() for f in files]
    again = [*cmd[:cmd.index("--out") + 1], str(tmp / "again"), "--report-only"]
    proc = subprocess.run(again, capture_output=True, text=True, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = [(tmp / "again" / f).read_text() for f in files]
    assert after == before
