"""The built-in networks: the MLP/CNN trunk and the MLP estimator template, assembled into a
:class:`~.branched.BranchedModel` by :func:`build_model` (the harness's model; users bring their
own trunk and template to ``BranchedModel`` directly).

:func:`build_model` draws every initial weight from one generator in the order of earlier
releases (trunk, estimator layers, heads), so a built-in run gives the numbers it always gave.
``stl`` uses a trunk with ``copies = n_tasks``: every task its own trunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .branched import BranchedModel
from .config import ModelConfig
from .estimators import init_stacked_linear, uniform_


class Bank(nn.Module):
    """``k`` stacked linear layers; copy i maps ``(..., in)`` to ``(..., out)``."""

    def __init__(self, k: int, n_in: int, n_out: int, *, identical: bool, gen: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(k, n_out))
        init_stacked_linear(self.weight, self.bias, identical=identical, gen=gen)

    def all(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, k, in) or (B, in) shared -> (B, k, out)."""
        eq = "bi,koi->bko" if x.dim() == 2 else "bki,koi->bko"
        return torch.einsum(eq, x, self.weight) + self.bias

    def one(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return F.linear(x, self.weight[i], self.bias[i])


class Trunk(nn.Module):
    """Shared feature extractor ending in a ReLU representation of ``representation_dim`` units.

    An MLP for vectors, a small CNN (3x3 conv, ReLU, 2x2 max-pool per stage) for images.
    ``copies > 1`` holds independent trunks (for ``stl``), run as grouped convolutions.
    """

    def __init__(self, input_shape: Sequence[int], cfg: ModelConfig, copies: int,
                 gen: torch.Generator):
        super().__init__()
        self.copies = copies
        self.image = len(input_shape) == 3
        self.convs = nn.ParameterList()
        n_in = int(input_shape[0])
        if self.image:
            c, h, w = (int(s) for s in input_shape)
            for ch in cfg.conv_channels:
                wt = torch.empty(copies * ch, c, 3, 3)
                for i in range(copies):
                    uniform_(wt[i * ch:(i + 1) * ch], c * 9, gen)
                self.convs.append(nn.Parameter(wt))
                self.convs.append(nn.Parameter(torch.zeros(copies * ch)))
                c, h, w = ch, h // 2, w // 2
            n_in = c * h * w
        widths = [n_in, *cfg.trunk_hidden, cfg.representation_dim]
        self.layers = nn.ModuleList(
            Bank(copies, a, b, identical=False, gen=gen) for a, b in zip(widths, widths[1:]))

    def _conv(self, x: torch.Tensor, copy: int | None) -> torch.Tensor:
        for i in range(0, len(self.convs), 2):
            w, b, groups = self.convs[i], self.convs[i + 1], self.copies
            if copy is not None:
                ch = w.shape[0] // self.copies
                w, b, groups = w[copy * ch:(copy + 1) * ch], b[copy * ch:(copy + 1) * ch], 1
            elif i == 0 and self.copies > 1:
                x = x.repeat(1, self.copies, 1, 1)
            x = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1, groups=groups)), 2)
        return x

    def all(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, ...) -> representation (B, copies, D)."""
        if self.image:
            x = self._conv(x, None).reshape(x.shape[0], self.copies, -1)
        for layer in self.layers:
            x = F.relu(layer.all(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, ...) -> (B, D) with one copy, (B, copies, D) with several."""
        h = self.all(x)
        return h[:, 0] if self.copies == 1 else h

    def one(self, x: torch.Tensor, copy: int) -> torch.Tensor:
        """Trunk copy ``copy`` on ``x`` (n, ...) -> (n, D)."""
        if self.image:
            x = self._conv(x, copy).flatten(1)
        for layer in self.layers:
            x = F.relu(layer.one(x, copy))
        return x


def estimator_template(representation_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    """The built-in estimator: Linear + ReLU per width of ``hidden``."""
    layers: list[nn.Module] = []
    for a, b in zip([representation_dim, *hidden], hidden):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


def _resnet18(input_shape: Sequence[int], cfg: ModelConfig, copies: int, seed: int
              ) -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 as the trunk (random init drawn under ``seed``, or the weights of
    ``cfg.trunk_weights``), and its representation width."""
    from .backbones import resnet18_trunk

    if len(input_shape) != 3:
        raise ValueError(f"model.trunk='resnet18' needs image inputs (C, H, W); this data has "
                         f"inputs of shape {tuple(input_shape)}: use model.trunk='builtin'")
    if copies > 1:
        raise ValueError("method 'stl' trains one trunk per task, which model.trunk='resnet18' "
                         "does not offer: run stl with model.trunk='builtin'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trunk = resnet18_trunk(int(input_shape[0]), cfg.trunk_weights)
    return trunk, int(trunk.out_features)


def build_model(input_shape: Sequence[int], tasks: Sequence, cfg: ModelConfig,
                assignment: Sequence[int], trunk_copies: int, seed: int) -> BranchedModel:
    """The harness's model: built-in trunk + MLP estimator template in a BranchedModel.

    Parameters
    ----------
    input_shape : tuple
        ``(n_features,)`` or ``(channels, height, width)``.
    tasks : sequence of TaskSpec (or output sizes), length n_tasks
    assignment : sequence of int, length n_tasks
        Initial entity of each task (``range(T)`` for mtl/stl/ss, zeros for mtl_full).
    trunk_copies : int
        1 (shared trunk) or n_entities (``stl``: entity i uses trunk copy i).
    """
    gen = torch.Generator().manual_seed(seed)
    if cfg.trunk == "resnet18":
        trunk, width = _resnet18(input_shape, cfg, trunk_copies, seed)
    else:
        trunk, width = Trunk(input_shape, cfg, trunk_copies, gen), cfg.representation_dim
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own draws are overwritten below
        template = estimator_template(width, cfg.estimator_hidden)
    identical = cfg.branch_init == "identical"
    model = BranchedModel(trunk, template, tasks, branch_init=cfg.branch_init, seed=seed,
                          assignment=assignment)
    # redraw estimators, then heads, from ``gen`` after the trunk: the draws of earlier releases
    stacked = [model.estimators.param(f"{2 * i}.{k}") for i in range(len(cfg.estimator_hidden))
               for k in ("weight", "bias")]
    for weight, bias in [*zip(stacked[::2], stacked[1::2]), (model.head_weight, model.head_bias)]:
        init_stacked_linear(weight, bias, identical=identical, gen=gen)
    return model
