"""Typed, frozen run configuration, validated before any training (STYLE: scikit-learn).

One dataclass per concern: the data, the model, the optimisation, the gradient capture
(``SharingConfig``) and the pure decision rule (``GroupingConfig``, in ``core.grouping``).
A bad value fails when the config is built, naming the field, the value and the allowed values:
each section declares what its fields accept in ``CONSTRAINTS`` (``core.grouping.constraints``),
checked in that dict's order by its ``__post_init__`` (the first bad field is the one reported).
Pure: no torch import, so analysis/ can rebuild configs from a manifest.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ..datasets.registry import PROFILES  # one list of profiles: the loaders' own
from .grouping.config import ConfigError, GroupingConfig
from .grouping.constraints import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    AllOf,
    Constraint,
    Interval,
    Nullable,
    Options,
    PositiveInts,
    Satisfies,
    check,
    check_fields,
    invalid,
)
from .grouping.sketch import KINDS as SKETCH_KINDS  # one list of kinds: the sketch's own
from .methods import METHODS, method_spec  # what each method means; METHODS: their names

SIGNALS: tuple[str, ...] = ("first_layer", "all_params")
MERGE_MODES: tuple[str, ...] = ("average", "best", "first")
BRANCH_INITS: tuple[str, ...] = ("identical", "independent")
TRUNKS: tuple[str, ...] = ("builtin", "resnet18")
AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")  # core.devices resolves them
WIDTHS = PositiveInts()


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

    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "trunk_hidden": PositiveInts(falsy_ok=True), "conv_channels": WIDTHS,
        "estimator_hidden": AllOf((WIDTHS, Satisfies(bool, "at least one layer width"))),
        "representation_dim": POSITIVE_INT, "branch_init": Options(BRANCH_INITS),
        "trunk": Options(TRUNKS),
        "trunk_weights": Nullable(Satisfies(lambda v: isinstance(v, str),
                                            "a path to a local weights file"))}

    def __post_init__(self) -> None:
        check_fields(self, self.CONSTRAINTS)
        if self.trunk_weights is not None and self.trunk != "resnet18":
            raise invalid("trunk_weights", self.trunk_weights, "None unless trunk='resnet18'")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. ``batch_size=None`` means full batch. Adam.

    ``device``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps``; an absent device fails before training. ``amp``: autocast in ``bf16`` or ``fp16``
    (with a GradScaler) for the forward pass and the loss; parameters, gradients and the
    captured window stay fp32. ``num_workers``: DataLoader worker processes for streamed
    datasets (in-memory data is indexed directly). ``merge_warmup``: after an event that merged
    estimators, the learning rate restarts from ``lr / (merge_warmup + 1)`` and rises linearly
    back to ``lr`` over that many steps (0, the default: no warm-up; Adam's moments are mapped
    with the weights either way). ``compile``: ``none`` (default) or a ``torch.compile``
    backend (``inductor``, ``aot_eager``, ...) that the model's trunk is compiled with, in place
    (``trunk.compile(backend=...)``): the trunk is where image models spend their time, while
    the estimators and heads stay eager (which estimators a batch runs depends on its labels,
    and a merge changes their shapes).
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
    merge_warmup: int = 0
    compile: str = "none"

    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "steps": POSITIVE_INT, "batch_size": Nullable(POSITIVE_INT),
        "lr": Interval(float, 0, 10, closed="neither", text="a learning rate in (0, 10)"),
        "weight_decay": NON_NEGATIVE_FLOAT, "rank_mse_weight": NON_NEGATIVE_FLOAT,
        "eval_batch_size": POSITIVE_INT, "threads": Nullable(POSITIVE_INT),
        "device": Satisfies(lambda v: isinstance(v, str) and bool(DEVICE_PATTERN.match(v)),
                            "one of auto, cpu, cuda, cuda:N, mps"),
        "amp": Options(AMP_MODES), "num_workers": NON_NEGATIVE_INT,
        "merge_warmup": NON_NEGATIVE_INT,
        "compile": Satisfies(lambda v: isinstance(v, str) and bool(v.strip()),
                             "none, or a torch.compile backend such as inductor or aot_eager")}

    def __post_init__(self) -> None:
        check_fields(self, self.CONSTRAINTS)


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

    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "signal": Options(SIGNALS), "warmup_steps": POSITIVE_INT,
        "regroup_every": NON_NEGATIVE_INT, "max_events": Nullable(POSITIVE_INT),
        "window_bins": POSITIVE_INT, "sketch_dim": POSITIVE_INT,
        "sketch_kind": Options(SKETCH_KINDS), "merge": Options(MERGE_MODES)}

    def __post_init__(self) -> None:
        check_fields(self, self.CONSTRAINTS)


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

    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "n_groups": Nullable(POSITIVE_INT), "group_sizes": Nullable(WIDTHS),
        "affinity_every": POSITIVE_INT, "affinity_steps": Nullable(POSITIVE_INT),
        "exhaustive_max_tasks": NON_NEGATIVE_INT}

    def __post_init__(self) -> None:
        check_fields(self, self.CONSTRAINTS)


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

    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "method": Options(METHODS), "profile": Options(PROFILES), "seed": NON_NEGATIVE_INT,
        "probe_size": POSITIVE_INT}

    def __post_init__(self) -> None:
        check_fields(self, self.CONSTRAINTS)
        sh = self.sharing
        if sh.regroup_every == 0 and sh.max_events not in (None, 1):
            raise invalid("max_events", sh.max_events, "None or 1 when regroup_every=0")
        if self.is_selective and sh.warmup_steps >= self.train.steps:
            raise invalid("warmup_steps", sh.warmup_steps,
                          f"smaller than train.steps={self.train.steps}, or no event ever fires")
        g = self.grouping
        if g.null == "permutation" and g.distance == "auto":
            # The test sees the chosen distance only, not the choice between the candidates:
            # with auto, 12/30 structure-free calibration runs merged (cosine: 0/30). Replays
            # may still ask for it (analysis counterfactuals build a GroupingConfig only).
            raise ConfigError(
                "invalid grouping.null='permutation' with grouping.distance='auto': the "
                "permutation null is calibrated for one fixed distance (with 'auto' it merged "
                "12 of 30 structure-free calibration runs, with 'cosine' none); set "
                "grouping.distance=cosine (or another single distance)")

    @property
    def is_selective(self) -> bool:
        """The method regroups tasks during training (its spec names a grouping strategy)."""
        return method_spec(self.method).is_selective

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
            raise invalid("--set section", section, f"one of {sorted(SECTIONS)}{did_you_mean(key)}")
        if section == "data" and name not in {f.name for f in fields(DataConfig)}:
            return "data.options", name  # data.NAME: a loader option, even if a section has NAME
        return section, name
    if key in _known_keys():  # a top-level field (the others are "section.field")
        return "", key
    owners = [s for s, cls in SECTIONS.items() if key in {f.name for f in fields(cls)}]
    if len(owners) == 1:
        return owners[0], key
    if key not in {"name"} and not owners:
        # Unknown plain keys are dataset options (e.g. noise, samples_per_task).
        return "data.options", key
    raise invalid("--set key", key, f"qualified with its section, one of {owners}")


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

    check("profile", profile, RunConfig.CONSTRAINTS["profile"])
    check("method", method, RunConfig.CONSTRAINTS["method"])
    if input_kind not in (None, "vector", "image"):
        raise invalid("input_kind", input_kind, "None, 'vector' or 'image'")
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for section, values in profile_defaults(dataset, profile, input_kind).items():
        sections[section].update(values)
    sections["data"]["name"] = dataset
    options = dict(sections["data"].pop("options", {}))
    top: dict[str, Any] = {"method": method, "seed": seed, "profile": profile,
                           "defaults_from": defaults_name(dataset, input_kind),
                           "overrides": dict(overrides or {})}
    sections["grouping"]["seed"] = seed
    if method_spec(method).is_selective:
        sections["grouping"]["strategy"] = method_spec(method).strategy
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


_NOT_A_VALUE = type("NotAValue", (), {"__repr__": lambda self: "?"})()


def _allowed(cls: type, name: str, value: Any) -> str:
    """What field ``name`` of ``cls`` accepts, in the words of its own validation: what its
    constraint says a value no field accepts must be (the error message's "must be ...")."""
    try:  # KeyError: no constraint; TypeError: one that cannot look at it (Names iterates it)
        found = getattr(cls, "CONSTRAINTS", {})[name].problem(_NOT_A_VALUE)
    except (KeyError, TypeError):
        found = None
    return found or ("any value of its type" if value is None else f"a {type(value).__name__}")


def describe_keys(dataset: str = "synthetic", method: str = "ss_similarity",
                  profile: str = "quick", overrides: dict[str, Any] | None = None
                  ) -> list[tuple[str, Any, str]]:
    """``(key, value, allowed)`` for every ``--set`` key of a run of ``method`` on ``dataset``:
    the profile's value (with ``overrides``), and what the key accepts. Dataset options
    (``data.NAME``) come from the loader's signature."""
    config = make_config(dataset, method, 0, profile, overrides)
    rows: list[tuple[str, Any, str]] = [
        (key, getattr(config, key), "a directory" if key == "out" else _allowed(RunConfig, key, 0))
        for key in _known_keys() if "." not in key]
    for section, cls in SECTIONS.items():
        current = getattr(config, section)
        for f in fields(cls):
            value = getattr(current, f.name)
            if section == "data" and f.name == "options":
                continue
            paths = ("data_root", "trunk_weights", "reference_run")
            allowed = "a path or null" if f.name in paths else _allowed(cls, f.name, value)
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


__all__ = ["METHODS", "BaselineConfig", "ConfigError", "DataConfig", "GroupingConfig",
           "ModelConfig", "RunConfig", "SharingConfig", "TrainConfig", "config_from_dict",
           "describe_keys", "did_you_mean", "make_config"]
