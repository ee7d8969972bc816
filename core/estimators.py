"""``EstimatorStack``: one estimator template cloned per entity and held *stacked*.

One tensor per template parameter (and buffer) with a leading entity dimension, as
:func:`torch.func.stack_module_state` lays them out. A merge of entities is then one linear map
along that dimension (:meth:`EstimatorStack.merge`), and the gradient signal of every entity is
one tensor (the stacked first weight matrix's gradient, ``(E, H0, D)``). Forward runs every
entity with ``vmap(functional_call)``, or ``einsum`` for plain ``Linear``/``ReLU`` templates
(see :mod:`.branched` for why and the measurements).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

__all__ = ["EstimatorStack", "apply_map", "init_stacked_linear", "output_width", "uniform_"]


def _mangle(name: str) -> str:
    return name.replace(".", "__")


def uniform_(t: torch.Tensor, fan_in: int, gen: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default scale
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=gen)


def init_stacked_linear(weight: torch.Tensor, bias: torch.Tensor, *, identical: bool,
                        gen: torch.Generator) -> None:
    """``nn.Linear``'s default init for stacked ``weight (k, out, in)`` and ``bias (k, out)``,
    drawn from ``gen`` row by row; ``identical``: row 0 drawn and copied to every row."""
    fan_in = weight.shape[-1]
    for i in range(1 if identical else weight.shape[0]):
        uniform_(weight[i], fan_in, gen)
        uniform_(bias[i], fan_in, gen)
    if identical:
        with torch.no_grad():
            weight.copy_(weight[:1].expand_as(weight))
            bias.copy_(bias[:1].expand_as(bias))


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


def _clones(template: nn.Module, n: int, identical: bool, seed: int) -> list[nn.Module]:
    """``n`` deep copies; ``independent``: each re-initialized by its ``reset_parameters`` under
    seed ``seed + i`` (the caller's global RNG is left as it was)."""
    out = [copy.deepcopy(template) for _ in range(n)]
    if not identical:
        with torch.random.fork_rng(devices=[]):
            for i, m in enumerate(out):
                torch.manual_seed(seed + i)
                _reset(m)
    return out


def _is_plain_mlp(template: nn.Module) -> bool:
    """Linear (with bias) layers, each followed by a ReLU or nothing: the einsum fast path."""
    if not isinstance(template, nn.Sequential) or len(template) == 0:
        return False
    prev_linear = False
    for m in template:
        if isinstance(m, nn.Linear) and m.bias is not None:
            prev_linear = True
        elif isinstance(m, nn.ReLU) and prev_linear and not m.inplace:
            prev_linear = False
        else:
            return False
    return True


def output_width(template: nn.Module) -> int:
    """The template's output width H: ``out_features`` (or ``num_features``) of its last layer
    that has one."""
    for m in reversed(list(template.modules())):
        for attr in ("out_features", "num_features", "normalized_shape"):
            if hasattr(m, attr):
                value = getattr(m, attr)
                return int(value[-1] if isinstance(value, (tuple, list)) else value)
    raise ValueError(f"cannot tell the output width of estimator template {type(template).__name__}"
                     ": pass hidden_dim=H to BranchedModel")


class EstimatorStack(nn.Module):
    """``n`` clones of ``template`` as stacked tensors ``(n, *shape)``.

    Parameters
    ----------
    template : nn.Module
        Maps ``(B, D)`` to ``(B, H)``; copied, never modified or registered.
    n : int
        Number of entities.
    identical : bool
        Every clone starts from the template's weights (``branch_init="identical"``) or from its
        own ``reset_parameters()`` draw.
    seed : int
        Seed of the independent draws.
    """

    def __init__(self, template: nn.Module, n: int, *, identical: bool = True, seed: int = 0):
        super().__init__()
        params, buffers = stack_module_state(_clones(template, n, identical, seed))
        self.names = list(params)
        self.buffer_names = list(buffers)
        mangled = [_mangle(k) for k in self.names + self.buffer_names]
        if len(set(mangled)) != len(mangled):
            raise ValueError(f"estimator template parameter names {self.names} collide once '.' "
                             "becomes '__': rename them")
        self.stacked = nn.ParameterDict(
            {_mangle(k): nn.Parameter(v.detach().clone()) for k, v in params.items()})
        self.stacked_buffers = nn.Module()
        for k, v in buffers.items():
            self.stacked_buffers.register_buffer(_mangle(k), v.detach().clone())
        meta = copy.deepcopy(template).to("meta")
        self._template = [meta]  # a list: not a submodule, so its (meta) tensors stay out of
        self.fast = _is_plain_mlp(template)  # parameters(), state_dict() and .to()

    # -- views ---------------------------------------------------------------------------
    def param(self, name: str) -> nn.Parameter:
        """The stacked parameter of template parameter ``name`` (e.g. ``"0.weight"``)."""
        if name not in self.names:
            raise KeyError(f"estimator template has no parameter {name!r}; it has {self.names}")
        return self.stacked[_mangle(name)]

    def params(self) -> dict[str, torch.Tensor]:
        return {k: self.stacked[_mangle(k)] for k in self.names}

    def buffers_(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self.stacked_buffers, _mangle(k)) for k in self.buffer_names}

    @property
    def n(self) -> int:
        return int(self.stacked[_mangle(self.names[0])].shape[0])

    def train(self, mode: bool = True) -> EstimatorStack:
        super().train(mode)
        self._template[0].train(mode)
        return self

    # -- forward -------------------------------------------------------------------------
    def _linear_layers(self) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
        layers, mods = [], list(self._template[0])
        for i, m in enumerate(mods):
            if isinstance(m, nn.Linear):
                relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
                layers.append((self.param(f"{i}.weight"), self.param(f"{i}.bias"), relu))
        return layers

    def _one(self, params: dict, buffers: dict, h: torch.Tensor) -> torch.Tensor:
        return functional_call(self._template[0], (params, buffers), (h,))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Every entity on every sample: ``h`` (B, D) shared, or (B, n, D) per entity -> (B, n, H)."""
        if self.fast:
            z = h
            for w, b, relu in self._linear_layers():
                eq = "bi,koi->bko" if z.dim() == 2 else "bki,koi->bko"
                z = torch.einsum(eq, z, w) + b
                z = F.relu(z) if relu else z
            return z
        in_h = None if h.dim() == 2 else 1
        z = vmap(self._one, in_dims=(0, 0, in_h), randomness="different")(
            self.params(), self.buffers_(), h)
        return z.transpose(0, 1)

    def unbound(self) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """Per-entity views of every tensor, made once: indexing ``weight[e]`` per entity would
        make the backward of every index build a zero gradient the size of the whole stack,
        O(E^2 P) per step (T=40, P=500k: 2.3 s of CPU per layer instead of 0.15 s)."""
        return ({k: v.unbind(0) for k, v in self.params().items()},
                {k: v.unbind(0) for k, v in self.buffers_().items()})

    def forward_one(self, h: torch.Tensor, e: int, unbound: tuple[dict, dict]) -> torch.Tensor:
        """Entity ``e`` alone on ``h`` (n, D) -> (n, H), from :meth:`unbound` views."""
        params, buffers = unbound
        if self.fast:
            z = h
            for i, m in enumerate(self._template[0]):
                if isinstance(m, nn.Linear):
                    z = F.linear(z, params[f"{i}.weight"][e], params[f"{i}.bias"][e])
                else:
                    z = F.relu(z)
            return z
        return self._one({k: v[e] for k, v in params.items()},
                         {k: v[e] for k, v in buffers.items()}, h)

    # -- merging and resizing -----------------------------------------------------------
    @torch.no_grad()
    def merge(self, m: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Apply the (E_after, E_before) map ``m`` to every stacked tensor.

        Each stacked parameter becomes a new ``nn.Parameter`` (a graph of an earlier step that is
        still referenced, such as the last ``loss``, would otherwise hand the next backward
        gradients of the old shape); ``optimizer`` gets the new parameters in the same places of
        its param groups, and its per-parameter state tensors with a leading entity dimension
        (Adam's moments, SGD's momentum buffer) are mapped by the same matrix. Integer buffers
        (BatchNorm's ``num_batches_tracked``) take the value of the member ``m`` weighs most.
        """
        for key, p in list(self.stacked.items()):
            new = nn.Parameter(apply_map(m.to(p.device, p.dtype), p.detach()),
                               requires_grad=p.requires_grad)
            if optimizer is not None:
                _replace_in_optimizer(optimizer, p, new, m)
            self.stacked[key] = new
        pick = m.argmax(dim=1)
        for k in self.buffer_names:
            b = getattr(self.stacked_buffers, _mangle(k))
            new = (apply_map(m.to(b.device, b.dtype), b) if b.is_floating_point()
                   else b[pick.to(b.device)].clone())
            setattr(self.stacked_buffers, _mangle(k), new)

    def resize(self, n: int) -> None:
        """Give every stacked tensor ``n`` entities (uninitialized): before loading a state
        dict saved after merges."""
        for p in self.stacked.values():
            p.data = torch.empty(n, *p.shape[1:], dtype=p.dtype, device=p.device)
        for k in self.buffer_names:
            b = getattr(self.stacked_buffers, _mangle(k))
            setattr(self.stacked_buffers, _mangle(k),
                    torch.empty(n, *b.shape[1:], dtype=b.dtype, device=b.device))


def _replace_in_optimizer(optimizer: torch.optim.Optimizer, old: nn.Parameter,
                          new: nn.Parameter, m: torch.Tensor) -> None:
    """Put ``new`` where ``old`` was in ``optimizer``, with ``old``'s state mapped by ``m``."""
    for group in optimizer.param_groups:
        group["params"] = [new if q is old else q for q in group["params"]]
    state = optimizer.state.pop(old, None)
    if state:
        for key, value in list(state.items()):
            if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == m.shape[1]:
                state[key] = apply_map(m.to(value.device, value.dtype), value)
        optimizer.state[new] = state


def apply_map(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``m`` (E_after, E_before) applied along the leading dimension of ``t`` (E_before, ...)."""
    return (m @ t.reshape(t.shape[0], -1)).reshape(m.shape[0], *t.shape[1:]).contiguous()
