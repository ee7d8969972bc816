"""Per-dataset defaults for the ``quick`` and ``full`` profiles.

``quick`` finishes on 2 CPU cores in seconds to a minute per run; ``full`` uses the full data
sizes and longer training. Any value can be overridden with ``--set key=value``.
"""

from __future__ import annotations

from typing import Any

_VECTOR_MODEL = {"trunk_hidden": (), "representation_dim": 64, "estimator_hidden": (32, 32)}
_IMAGE_MODEL = {"conv_channels": (16, 32), "representation_dim": 128,
                "estimator_hidden": (64, 32)}

# Section -> values. "data.options" entries are passed to the dataset loader.
_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "synthetic": {
        "model": _VECTOR_MODEL,
        "train": {"steps": 200, "batch_size": None, "lr": 1e-2},
        "sharing": {"warmup_steps": 40},
    },
    "school": {
        "model": _VECTOR_MODEL,
        "train": {"steps": 300, "batch_size": None, "lr": 1e-2},
        "sharing": {"warmup_steps": 60},
    },
    "computer": {
        "model": _VECTOR_MODEL,
        "train": {"steps": 300, "batch_size": None, "lr": 1e-2},
        "sharing": {"warmup_steps": 60},
    },
    "mnist_context": {
        "model": _IMAGE_MODEL,
        "train": {"steps": 300, "batch_size": 64, "lr": 2e-3},
        "sharing": {"warmup_steps": 150},
    },
    "shapes_context": {
        "model": _IMAGE_MODEL,
        "train": {"steps": 300, "batch_size": 64, "lr": 2e-3},
        "sharing": {"warmup_steps": 150},
    },
    "celeba": {
        "model": _IMAGE_MODEL,
        "train": {"steps": 300, "batch_size": 64, "lr": 2e-3},
        "sharing": {"warmup_steps": 150},
    },
    "omniart": {
        "model": _IMAGE_MODEL,
        "train": {"steps": 300, "batch_size": 64, "lr": 2e-3},
        "sharing": {"warmup_steps": 150},
    },
}
_GENERIC = {"model": _VECTOR_MODEL, "train": {"steps": 200, "batch_size": None, "lr": 1e-2},
            "sharing": {"warmup_steps": 40}}
_FULL_SCALE = {"steps": 3, "warmup_steps": 3}


def profile_defaults(dataset: str, profile: str) -> dict[str, dict[str, Any]]:
    """Defaults for ``dataset`` under ``profile`` as ``{section: {field: value}}``.

    Unknown dataset names (user data from ``from_arrays``) get generic vector defaults.
    ``full`` trains three times longer than ``quick`` and asks loaders for full sizes.
    """
    base = _DEFAULTS.get(dataset, _GENERIC)
    out = {section: dict(values) for section, values in base.items()}
    if profile == "full":
        out["train"]["steps"] *= _FULL_SCALE["steps"]
        out["sharing"]["warmup_steps"] *= _FULL_SCALE["warmup_steps"]
    return out
