"""``train.compile``: the built-in trainer with its model's trunk compiled by ``torch.compile``.

The trunk is compiled in place (``nn.Module.compile``), so parameters, ``state_dict`` keys,
checkpoints and resumes are those of the eager model; the estimators stay eager. Checked on
``synthetic`` (generated data) against the same run uncompiled: a backend that counts the
graphs it is handed (to see that the trunk really went through dynamo) and ``aot_eager``
(dynamo and AOTAutograd with eager kernels) in the default suite, inductor (code generation,
needs a C++ compiler on the CPU) in the slow suite.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import xarray as xr
from selective_sharing.core import ConfigError, load_model, make_config, predict, store
from selective_sharing.core.training import train
from selective_sharing.datasets import load_dataset

SMALL = {"train.steps": 60, "warmup_steps": 20, "regroup_every": 10, "patience": 1,
         "samples_per_task": 40, "train.threads": 1}  # fmt: skip
COUNTING = "selective_sharing_test_counting"
GRAPHS: list[int] = []


def _counting(gm: torch.fx.GraphModule, example_inputs):
    """A dynamo backend that runs the captured graph as it is and counts it."""
    GRAPHS.append(len(gm.graph.nodes))
    return gm.forward


if COUNTING not in torch.compiler.list_backends(exclude_tags=()):
    torch._dynamo.register_backend(compiler_fn=_counting, name=COUNTING)


def _run(tmp_path, name: str, backend: str, **extra):
    cfg = make_config("synthetic", "ss_similarity", 0,
                      overrides={**SMALL, "train.compile": backend, **extra},
                      out=str(tmp_path / name))  # fmt: skip
    return train(cfg, progress=False)


def _events(run) -> list[xr.Dataset]:
    return [store.read_event(p) for p in store.list_events(run)]


def _assert_same_run(a, b, rtol: float) -> None:
    """Same decisions (every event's partition and merges), losses and windows within rtol."""
    ea, eb = _events(a), _events(b)
    assert len(ea) == len(eb) >= 2
    for x, y in zip(ea, eb, strict=True):
        for name in ("assignment_before", "assignment_after", "proposed"):
            np.testing.assert_array_equal(x[name].values, y[name].values, err_msg=name)
        top = float(np.abs(x["summed"].values).max())
        np.testing.assert_allclose(y["summed"].values, x["summed"].values, rtol=0,
                                   atol=rtol * top)  # fmt: skip
    ha, hb = store.read_history(a), store.read_history(b)
    np.testing.assert_array_equal(ha["assignment"].values, hb["assignment"].values)
    np.testing.assert_allclose(hb["loss"].values, ha["loss"].values, rtol=rtol, atol=0)


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    torch._dynamo.reset()
    return _run(tmp_path_factory.mktemp("eager"), "run", "none")


def test_a_compiled_trunk_trains_as_the_eager_one(eager, tmp_path) -> None:
    torch._dynamo.reset()
    GRAPHS.clear()
    counted = _run(tmp_path, "counted", COUNTING)
    assert GRAPHS and all(n > 3 for n in GRAPHS)  # the trunk's graph: input, layers, output
    _assert_same_run(eager, counted, rtol=1e-6)
    aot = _run(tmp_path, "aot", "aot_eager")
    _assert_same_run(eager, aot, rtol=1e-5)
    assert store.read_manifest(aot)["config"]["train"]["compile"] == "aot_eager"
    # the compiled run's model is an ordinary model: same keys, loads and predicts as eager
    a, b = load_model(eager), load_model(aot)
    assert a.state_dict().keys() == b.state_dict().keys()
    x = load_dataset("synthetic", seed=0).x_test[:7]
    np.testing.assert_allclose(predict(aot, x), predict(eager, x), rtol=1e-4, atol=1e-5)


class _Stop(Exception):
    pass


class _StopAfterEvent:
    def on_event(self, trainer, result) -> None:
        if trainer.n_events == 2:
            raise _Stop


def test_a_compiled_run_resumes_to_the_uninterrupted_one(tmp_path) -> None:
    torch._dynamo.reset()
    full = _run(tmp_path, "full", "aot_eager")
    over = {**SMALL, "train.compile": "aot_eager"}
    cfg = make_config("synthetic", "ss_similarity", 0, overrides=over, out=str(tmp_path / "cut"))
    with pytest.raises(_Stop):
        train(cfg, progress=False, callbacks=[_StopAfterEvent()])
    assert len(store.list_events(tmp_path / "cut")) == 2
    train(cfg, progress=False, resume=True)
    for x, y in zip(_events(full), _events(tmp_path / "cut"), strict=True):
        xr.testing.assert_identical(x, y)


def test_resuming_with_another_backend_warns(tmp_path) -> None:
    cut = {**SMALL, "train.compile": "aot_eager"}
    cfg = make_config("synthetic", "ss_similarity", 0, overrides=cut, out=str(tmp_path / "a"))
    with pytest.raises(_Stop):
        train(cfg, progress=False, callbacks=[_StopAfterEvent()])
    eager = make_config("synthetic", "ss_similarity", 0, overrides={**cut, "train.compile": "none"},
                        out=str(tmp_path / "a"))  # fmt: skip
    with pytest.warns(UserWarning, match="train.compile=aot_eager and resumes with "
                                         "train.compile=none"):  # fmt: skip
        train(eager, progress=False, resume=True)
    assert store.read_manifest(tmp_path / "a")["status"] == "complete"


def test_a_backend_that_cannot_run_fails_before_anything_is_written(tmp_path, monkeypatch):
    cfg = make_config("synthetic", "ss_similarity", 0,
                      overrides={**SMALL, "train.compile": "no_such_backend"},
                      out=str(tmp_path / "a"))  # fmt: skip
    with pytest.raises(ValueError, match=r"train.compile='no_such_backend' .* aot_eager"):
        train(cfg, progress=False)
    assert not (tmp_path / "a").exists()
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    cfg = make_config("synthetic", "ss_similarity", 0,
                      overrides={**SMALL, "train.compile": "inductor", "train.device": "cpu"},
                      out=str(tmp_path / "b"))  # fmt: skip
    with pytest.raises(ValueError, match=r"needs a C\+\+ compiler .*train.compile=aot_eager"):
        train(cfg, progress=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="compile"):
        make_config("synthetic", "ss_similarity", 0, overrides={"train.compile": " "})


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("clang++")),
                    reason="inductor on the CPU needs a C++ compiler")  # fmt: skip
def test_an_inductor_compiled_trunk_trains_as_the_eager_one(eager, tmp_path) -> None:
    torch._dynamo.reset()
    compiled = _run(tmp_path, "inductor", "inductor")
    _assert_same_run(eager, compiled, rtol=1e-4)
