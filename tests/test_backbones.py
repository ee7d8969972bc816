"""core/backbones.py: the optional torchvision ResNet-18 trunk (the ``vision`` extra)."""

from __future__ import annotations

import builtins
import sys

import pytest
import torch
from selective_sharing.core.backbones import resnet18_trunk
from selective_sharing.core.branched import BranchedModel
from torch import nn

try:  # like pytest.importorskip, but a torchvision built for another torch (RuntimeError on
    import torchvision  # import, e.g. a CUDA wheel beside a CPU torch) skips too
except (ImportError, RuntimeError):
    torchvision = None
needs_torchvision = pytest.mark.skipif(
    torchvision is None, reason="torchvision is not installed or does not load with this torch")


@pytest.fixture(autouse=True)
def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("resnet18_trunk must never download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("error", [ImportError("No module named 'torchvision'"),
                                   RuntimeError("operator torchvision::nms does not exist")])
def test_without_a_usable_torchvision_the_error_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "torchvision" or name.startswith("torchvision."):
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError) as info:
        resnet18_trunk()
    if isinstance(error, ImportError):
        assert str(info.value) == (
            "model.trunk='resnet18' needs torchvision: pip install 'selective-sharing[vision]' "
            "(or pip install torchvision matching your torch)")
    else:
        assert torch.__version__ in str(info.value) and "torchvision::nms" in str(info.value)
    assert info.value.__cause__ is error


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_invalid_in_channels_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="in_channels"):
        resnet18_trunk(in_channels=bad)  # type: ignore[arg-type]


@needs_torchvision
@pytest.mark.parametrize("size", [32, 64])
def test_representation_is_512_wide_on_small_images(size: int) -> None:
    torch.manual_seed(0)
    trunk = resnet18_trunk()
    assert trunk.out_features == 512 and isinstance(trunk.fc, nn.Identity)
    x = torch.randn(3, 3, size, size)
    z = trunk(x)
    assert z.shape == (3, 512) and z.dtype == torch.float32
    assert torch.isfinite(z).all()
    assert not torch.allclose(z[0], z[1])  # the samples' representations differ
    trunk.eval()
    assert trunk(x[:1]).shape == (1, 512)  # a single image in eval mode


@needs_torchvision
def test_one_input_channel() -> None:
    trunk = resnet18_trunk(in_channels=1)
    conv = trunk.conv1
    assert conv.weight.shape == (64, 1, 7, 7) and conv.bias is None
    assert (conv.stride, conv.padding) == ((2, 2), (3, 3))
    z = trunk(torch.randn(2, 1, 32, 32))
    assert z.shape == (2, 512) and torch.isfinite(z).all()


@needs_torchvision
@pytest.mark.parametrize("source", ["torchvision", "trunk"])
def test_weights_round_trip_from_a_local_state_dict(tmp_path, source: str) -> None:
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None) if source == "torchvision" \
        else resnet18_trunk()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "r18.pt"
    torch.save(saved, path)
    torch.manual_seed(2)  # a different random init, overwritten by the file
    trunk = resnet18_trunk(weights=path)
    assert torch.equal(trunk.conv1.weight, saved["conv1.weight"])
    got = trunk.state_dict()
    assert set(got) == {k for k in saved if not k.startswith("fc.")}
    assert all(torch.equal(got[k], saved[k]) for k in got)
    assert torch.equal(resnet18_trunk(weights=str(path)).layer4[1].bn2.running_var,
                       saved["layer4.1.bn2.running_var"])


@needs_torchvision
def test_missing_weights_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "nowhere" / "r18.pt"
    with pytest.raises(FileNotFoundError) as info:
        resnet18_trunk(weights=path)
    assert str(path) in str(info.value) and "torch.save" in str(info.value)


@needs_torchvision
def test_unreadable_weights_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read") as info:
        resnet18_trunk(weights=path)
    assert str(path) in str(info.value)


@needs_torchvision
def test_wrong_shapes_and_keys_are_named(tmp_path) -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:  # a 3-channel file for a 1-channel trunk
        resnet18_trunk(in_channels=1, weights=path)
    assert "conv1.weight (64, 3, 7, 7) != (64, 1, 7, 7)" in str(info.value)
    assert str(path) in str(info.value)

    bad = dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight \(64, 64, 1, 1\)"):
        resnet18_trunk(weights=path)

    odd = {k: v for k, v in state.items() if not k.startswith("layer4.1.")}
    odd["head.weight"] = torch.zeros(2, 2)
    torch.save(odd, path)
    with pytest.raises(ValueError) as info:
        resnet18_trunk(weights=path)
    message = str(info.value)
    assert "missing keys: layer4.1." in message and "(+" in message  # first 5 named, then a count
    assert "unexpected keys: head.weight" in message

    torch.save({"state_dict": state, "epoch": torch.tensor(3)}, path)  # a checkpoint, not a state
    with pytest.raises(ValueError, match="not a state_dict of tensors.*checkpoint"):
        resnet18_trunk(weights=path)


@needs_torchvision
def test_branched_model_on_a_resnet18_trunk() -> None:
    torch.manual_seed(0)
    model = BranchedModel(trunk=resnet18_trunk(),
                          estimator=nn.Sequential(nn.Linear(512, 32), nn.ReLU()), heads=[1, 1, 2])
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 3, 2) and torch.isfinite(out).all()
    out.square().mean().backward()
    grad = model.signal_parameter().grad
    assert grad is not None and grad.shape == (3, 32, 512)
    assert grad.abs().sum() > 0
    trunk_grad = model.trunk.conv1.weight.grad
    assert trunk_grad is not None and trunk_grad.abs().sum() > 0


@needs_torchvision
def test_resnet18_trunk_trains_a_celeba_run_and_reloads(tmp_path) -> None:
    import numpy as np
    from selective_sharing.core import load_model, make_config, predict, store, train
    from selective_sharing.datasets import load_dataset, write_celeba_fixture

    root = write_celeba_fixture(tmp_path / "celeba", n_images=30)
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    config = make_config("celeba", "ss_similarity", overrides={
        "root": str(root), "image_size": 32, "trunk": "resnet18", "trunk_weights": str(weights),
        "train.steps": 6, "warmup_steps": 3, "batch_size": 8, "num_workers": 0},
        out=str(tmp_path / "run"))
    run = train(config, progress=False)
    manifest = store.read_manifest(run)
    assert manifest["config"]["model"]["trunk"] == "resnet18"
    from selective_sharing.core.rundir import describe_defaults

    assert "resnet18" in describe_defaults(config, "cpu")
    weights.unlink()  # reloading needs the checkpoint only
    model = load_model(run)
    assert model.trunk.out_features == 512
    assert model.estimators.param("0.weight").shape[-1] == 512
    data = load_dataset("celeba", root=root, image_size=32)
    x = data.inputs("test", range(len(data.test)))
    assert predict(model, x).shape == (len(data.test), 40, 1)
    assert np.isfinite(predict(model, x)).all()


def test_resnet18_trunk_needs_images_and_a_shared_trunk(tmp_path) -> None:
    from selective_sharing.core import make_config, train
    from selective_sharing.core.config import ConfigError

    with pytest.raises(ConfigError, match="invalid trunk_weights='w.pt'.*None unless trunk"):
        make_config("synthetic", overrides={"trunk_weights": "w.pt"})
    config = make_config("synthetic", overrides={"trunk": "resnet18"}, out=str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"needs image inputs \(C, H, W\); this data has inputs "
                                         r"of shape \(\d+,\)"):
        train(config, progress=False)
