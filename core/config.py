"""Typed, frozen run configuration, validated before any training (STYLE: scikit-learn).

One dataclass per concern: the data, the model, the optimisation, the gradient capture
(``SharingConfig``) and the pure decision rule (``GroupingConfig``, in ``core.grouping``).
A bad value fails when the config is built, naming the field, the value and the allowed values.
Pure: no torch import, so analysis/ can rebuild configs from a manifest.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .grouping.config import ConfigError, GroupingConfig, _bad, _is_int, _is_real

METHODS: tuple[str, ...] = ("stl", "mtl", "mtl_full", "ss_similarity", "ss_variance", "ss_kmeans",
                             "random_groups", "cosine_groups", "tag", "oracle")
# Methods that train a fixed partition decided before training starts.
GROUPED_BASELINES: tuple[str, ...] = ("random_groups", "cosine_groups", "tag", "oracle")
PROFILES: tuple[str, ...] = ("quick", "full")
SIGNALS: tuple[str, ...] = ("first_layer", "all_params")
MERGE_MODES: tuple[str, ...] = ("average", "best", "first")
BRANCH_INITS: tuple[str, ...] = ("identical", "independent")
SKETCH_KINDS: tuple[str, ...] = ("auto", "dense", "countsketch")
TRUNKS: tuple[str, ...] = ("builtin", "resnet18")
AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")  # core.devices resolves them


def _positive_int(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if not _is_int(value) or value < (0 if allow_zero else 1):
        raise _bad(name, value, "a non-negative integer" if allow_zero else "a positive integer")


def _widths(name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(_is_int(v) and v >= 1 for v in value):
        raise _bad(name, value, "a tuple of positive integers, e.g. (64, 32)")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _bad(name, value, f"one of {list(allowed)}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where its files are, and loader options (``noise``, ``samples_per_task``...)."""

    name: str = "synthetic"
    data_root: str | None = None
    allow_substitute: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """Shared trunk, per-task branches (estimator + head).

    ``trunk_hidden`` are the MLP trunk's hidden widths before the representation (vector data);
    ``conv_channels`` the CNN trunk's channels (image data); both end in a representation of
    ``representation_dim`` units. ``estimator_hidden`` are the estimator's layer widths: its first
    weight matrix, ``(estimator_hidden[0], representation_dim)``, is the default gradient signal.
    ``branch_init="identical"`` clones one initial estimator and head to every task, which is
    what makes the tasks' gradients comparable.
    ``trunk``: ``builtin`` (the MLP/CNN above) or ``resnet18`` (torchvision's, image data only,
    randomly initialized or from ``trunk_weights``, a local state-dict file; nothing is
    downloaded); its representation has 512 units and ``conv_channels`` /
    ``representation_dim`` are unused.
    """

    trunk: str = "builtin"
    trunk_weights: str | None = None
    trunk_hidden: tuple[int, ...] = ()
    conv_channels: tuple[int, ...] = (16, 32)
    representation_dim: int = 64
    estimator_hidden: tuple[int, ...] = (32, 32)
    branch_init: str = "identical"

    def __post_init__(self) -> None:
        _widths("trunk_hidden", self.trunk_hidden) if self.trunk_hidden else None
        _widths("conv_channels", self.conv_channels)
        _widths("estimator_hidden", self.estimator_hidden)
        if not self.estimator_hidden:
            raise _bad("estimator_hidden", self.estimator_hidden, "at least one layer width")
        _positive_int("representation_dim", self.representation_dim)
        _choice("branch_init", self.branch_init, BRANCH_INITS)
        _choice("trunk", self.trunk, TRUNKS)
        if self.trunk_weights is not None and not isinstance(self.trunk_weights, str):
            raise _bad("trunk_weights", self.trunk_weights, "a path to a local weights file")
        if self.trunk_weights is not None and self.trunk != "resnet18":
            raise _bad("trunk_weights", self.trunk_weights, "None unless trunk='resnet18'")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. ``batch_size=None`` means full batch. Adam.

    ``device``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps``; an absent device fails before training. ``amp``: autocast in ``bf16`` or ``fp16``
    (with a GradScaler) for the forward pass and the loss; parameters, gradients and the
    captured window stay fp32. ``num_workers``: DataLoader worker processes for streamed
    datasets (in-memory data is indexed directly).
    """

    steps: int = 300
    batch_size: int | None = None
    lr: float = 1e-2
    weight_decay: float = 0.0
    rank_mse_weight: float = 0.5
    eval_batch_size: int = 1024
    threads: int | None = None
    device: str = "auto"
    amp: str = "none"
    num_workers: int = 2

    def __post_init__(self) -> None:
        _positive_int("steps", self.steps)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if not (_is_real(self.lr) and 0 < self.lr < 10):
            raise _bad("lr", self.lr, "a learning rate in (0, 10)")
        if not (_is_real(self.weight_decay) and self.weight_decay >= 0):
            raise _bad("weight_decay", self.weight_decay, "a non-negative float")
        if not (_is_real(self.rank_mse_weight) and self.rank_mse_weight >= 0):
            raise _bad("rank_mse_weight", self.rank_mse_weight, "a non-negative float")
        _positive_int("eval_batch_size", self.eval_batch_size)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise _bad("device", self.device, "one of auto, cpu, cuda, cuda:N, mps")
        _choice("amp", self.amp, AMP_MODES)
        _positive_int("num_workers", self.num_workers, allow_zero=True)


@dataclass(frozen=True)
class SharingConfig:
    """Gradient capture and when grouping events happen (README, "What a run does").

    ``warmup_steps``: the first event fires after this many steps. ``regroup_every``: further
    events every so many steps after it (0: a single event). ``window_bins``/``sketch_dim``:
    the trajectory bins stored with each event. ``merge``: how a group's estimator starts.
    """

    signal: str = "first_layer"
    warmup_steps: int = 50
    regroup_every: int = 0
    max_events: int | None = None
    window_bins: int = 32
    sketch_dim: int = 256
    sketch_kind: str = "auto"
    merge: str = "average"

    def __post_init__(self) -> None:
        _choice("signal", self.signal, SIGNALS)
        _positive_int("warmup_steps", self.warmup_steps)
        _positive_int("regroup_every", self.regroup_every, allow_zero=True)
        if self.max_events is not None:
            _positive_int("max_events", self.max_events)
        _positive_int("window_bins", self.window_bins)
        _positive_int("sketch_dim", self.sketch_dim)
        _choice("sketch_kind", self.sketch_kind, SKETCH_KINDS)
        _choice("merge", self.merge, MERGE_MODES)


@dataclass(frozen=True)
class BaselineConfig:
    """Grouping baselines (``random_groups``, ``cosine_groups``, ``tag``, ``oracle``).

    ``n_groups`` / ``group_sizes`` fix the number and sizes of groups to form; when they are
    None they are read from ``reference_run`` (a finished Selective Sharing run on the same data:
    "the same group sizes that the SS run found"). ``affinity_every``: record task affinities
    every so many steps (TAG's protocol: every 10th). ``affinity_steps``: length of the joint
    (mtl) training phase that records them (None: ``train.steps``, as in TAG); the grouped model
    is then trained from scratch for ``train.steps``. ``exhaustive_max_tasks``: ``tag`` picks the
    best partition by exhaustive search up to this many tasks, else by agglomeration.
    """

    n_groups: int | None = None
    group_sizes: tuple[int, ...] | None = None
    reference_run: str | None = None
    affinity_every: int = 10
    affinity_steps: int | None = None
    exhaustive_max_tasks: int = 10

    def __post_init__(self) -> None:
        if self.n_groups is not None:
            _positive_int("n_groups", self.n_groups)
        if self.group_sizes is not None:
            _widths("group_sizes", self.group_sizes)
        _positive_int("affinity_every", self.affinity_every)
        if self.affinity_steps is not None:
            _positive_int("affinity_steps", self.affinity_steps)
        _positive_int("exhaustive_max_tasks", self.exhaustive_max_tasks, allow_zero=True)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
            "sharing": SharingConfig, "grouping": GroupingConfig, "baseline": BaselineConfig}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. Build it with :func:`make_config` (profile defaults + overrides)."""

    method: str = "ss_similarity"
    seed: int = 0
    profile: str = "quick"
    out: str = "runs/run"
    probe_size: int = 128
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    # how make_config built it: the profile whose defaults it starts from (a dataset name,
    # "generic_vector" or "generic_image"), recorded in the manifest; and the overrides applied
    # on top, kept in memory only (train() re-applies them over the image defaults)
    defaults_from: str = ""
    overrides: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("profile", self.profile, PROFILES)
        if not _is_int(self.seed) or self.seed < 0:
            raise _bad("seed", self.seed, "a non-negative integer")
        _positive_int("probe_size", self.probe_size)
        sh = self.sharing
        if sh.regroup_every == 0 and sh.max_events not in (None, 1):
            raise _bad("max_events", sh.max_events, "None or 1 when regroup_every=0")
        if self.is_selective and sh.warmup_steps >= self.train.steps:
            raise _bad("warmup_steps", sh.warmup_steps,
                       f"smaller than train.steps={self.train.steps}, or no event ever fires")

    @property
    def is_selective(self) -> bool:
        return self.method.startswith("ss_")

    def to_dict(self) -> dict[str, Any]:
        """Every field but ``overrides`` (their effect is in the sections), for manifests."""
        out = dataclasses.asdict(self)
        del out["overrides"]
        return out


def _coerce(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, null, true, lists), else the string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def _known_keys() -> list[str]:
    """Every ``section.field`` and top-level field that ``--set`` accepts."""
    top = [f.name for f in fields(RunConfig) if f.name not in SECTIONS
           and f.name not in ("defaults_from", "overrides")]
    return top + [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


def did_you_mean(key: str, known: list[str] | None = None) -> str:
    """`` (did you mean 'train.steps'?)`` for a near miss of a known key, else ``""``."""
    import difflib

    known = _known_keys() if known is None else known
    short = {k.split(".", 1)[-1]: k for k in known}
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75) or [
        short[m] for m in difflib.get_close_matches(key.split(".")[-1], list(short), n=1,
                                                    cutoff=0.75)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _split_key(key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(f"invalid --set section={section!r}: --set section must be one "
                              f"of {sorted(SECTIONS)}{did_you_mean(key)}")
        if section == "data" and name not in {f.name for f in fields(DataConfig)}:
            return "data.options", name  # data.NAME: a loader option, even if a section has NAME
        return section, name
    top = {f.name for f in fields(RunConfig)} - set(SECTIONS) - {"defaults_from", "overrides"}
    if key in top:
        return "", key
    owners = [s for s, cls in SECTIONS.items() if key in {f.name for f in fields(cls)}]
    if len(owners) == 1:
        return owners[0], key
    if key not in {"name"} and not owners:
        # Unknown plain keys are dataset options (e.g. noise, samples_per_task).
        return "data.options", key
    raise _bad("--set key", key, f"qualified with its section, one of {owners}")


def make_config(dataset: str = "synthetic", method: str = "ss_similarity", seed: int = 0,
                profile: str = "quick", overrides: dict[str, Any] | None = None,
                out: str | None = None, input_kind: str | None = None) -> RunConfig:
    """Build and validate a :class:`RunConfig`: the dataset's profile defaults, then overrides.

    Parameters
    ----------
    input_kind : {"vector", "image"}, optional
        For data without a registered profile (your own arrays or datasets): image data gets
        the image defaults (mini-batches of 64, the CNN trunk), anything else the vector ones.
        ``train(config, data=...)`` fills it in from the data when the config was built
        without it.
    overrides : dict
        ``{"distance": "cosine", "train.steps": 100, "noise": 0.5, ...}``. A plain key is looked
        up in every section and must be unique; keys no section knows are dataset options.
        Values may be strings (parsed as JSON where possible, as ``--set`` gives them).
    """
    from .profiles import defaults_name, profile_defaults

    _choice("profile", profile, PROFILES)
    _choice("method", method, METHODS)
    if input_kind not in (None, "vector", "image"):
        raise _bad("input_kind", input_kind, "None, 'vector' or 'image'")
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for section, values in profile_defaults(dataset, profile, input_kind).items():
        sections[section].update(values)
    sections["data"]["name"] = dataset
    options = dict(sections["data"].pop("options", {}))
    top: dict[str, Any] = {"method": method, "seed": seed, "profile": profile,
                           "defaults_from": defaults_name(dataset, input_kind),
                           "overrides": dict(overrides or {})}
    sections["grouping"]["seed"] = seed
    if method.startswith("ss_"):
        sections["grouping"]["strategy"] = method[3:]
    for key, raw in (overrides or {}).items():
        value = _coerce(raw) if isinstance(raw, str) else raw
        section, name = _split_key(key)
        if section == "":
            top[name] = value
        elif section == "data.options":
            options[name] = value
        else:
            known = {f.name for f in fields(SECTIONS[section])}
            if name not in known:
                raise ConfigError(
                    f"invalid --set {key}={value!r}: {section} has no field {name!r}"
                    f"{did_you_mean(key)}; its fields: {sorted(known)} (selective-sharing "
                    "config lists every key)")
            sections[section][name] = value
    top["out"] = out or top.get("out") or f"runs/{dataset}/{method}/seed{seed}"
    built = {s: SECTIONS[s](**kw) for s, kw in sections.items() if s != "data"}
    built["data"] = DataConfig(**sections["data"], options=options)
    return RunConfig(**top, **built)


def _allowed(cls: type, name: str, value: Any) -> str:
    """What field ``name`` of section ``cls`` accepts, in the words of its own validation: the
    section is built with a value no field accepts and the error's "must be ..." is read."""
    sentinel = type("NotAValue", (), {"__repr__": lambda self: "?"})()
    try:
        cls(**{name: sentinel})
    except ConfigError as err:
        text = str(err)
        return text.split(" must be ", 1)[1] if " must be " in text else text
    except Exception:  # noqa: BLE001 - a check that cannot even look at the value
        pass
    return "any value of its type" if value is None else f"a {type(value).__name__}"


def describe_keys(dataset: str = "synthetic", method: str = "ss_similarity",
                  profile: str = "quick", overrides: dict[str, Any] | None = None
                  ) -> list[tuple[str, Any, str]]:
    """``(key, value, allowed)`` for every ``--set`` key of a run of ``method`` on ``dataset``:
    the profile's value (with ``overrides``), and what the key accepts. Dataset options
    (``data.NAME``) come from the loader's signature."""
    config = make_config(dataset, method, 0, profile, overrides)
    rows: list[tuple[str, Any, str]] = [
        ("method", config.method, f"one of {list(METHODS)}"),
        ("seed", config.seed, "a non-negative integer"),
        ("profile", config.profile, f"one of {list(PROFILES)}"),
        ("out", config.out, "a directory"),
        ("probe_size", config.probe_size, "a positive integer"),
    ]
    for section, cls in SECTIONS.items():
        current = getattr(config, section)
        for f in fields(cls):
            value = getattr(current, f.name)
            if section == "data" and f.name == "options":
                continue
            allowed = ("a path or null" if f.name in ("data_root", "trunk_weights",
                                                       "reference_run")
                       else _allowed(cls, f.name, value))
            if f.default is None and "None" not in allowed and "null" not in allowed:
                allowed += ", or null"
            rows.append((f"{section}.{f.name}", value, allowed))
    try:
        from ..datasets import dataset_options

        options = dataset_options(dataset)
    except Exception:  # noqa: BLE001 - user data without a registered loader has no options
        options = {}
    for name, default in options.items():
        value = config.data.options.get(name, default)
        rows.append((f"data.{name}", value, "see the loader's docstring (None: profile default)"))
    return rows


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from :meth:`RunConfig.to_dict` (e.g. a manifest's ``config``)."""
    kw = {k: v for k, v in d.items() if k not in SECTIONS}
    for section, cls in SECTIONS.items():
        values = dict(d.get(section, {}))
        for f in fields(cls):
            if isinstance(values.get(f.name), list):
                values[f.name] = tuple(values[f.name])
        kw[section] = cls(**values)
    return RunConfig(**kw)


__all__ = ["BaselineConfig", "ConfigError", "DataConfig", "GroupingConfig", "ModelConfig", "RunConfig",
           "SharingConfig", "TrainConfig", "METHODS", "make_config", "config_from_dict",
           "describe_keys", "did_you_mean"]
