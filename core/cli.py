"""Command line: ``python -m selective_sharing.core.train --dataset NAME --method NAME ...``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .config import METHODS, PROFILES, ConfigError, make_config


def _parse_set(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"invalid --set {item!r}: expected key=value, e.g. distance=cosine")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m selective_sharing.core.train",
        description="Train one Selective Sharing (or baseline) run and write its run store.")
    p.add_argument("--dataset", default="synthetic", help="registered dataset name")
    p.add_argument("--method", default="ss_similarity", choices=METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/DATASET/METHOD/seedN)")
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set distance=cosine "
                        "--set train.steps=100 --set noise=0.5 (repeatable)")
    p.add_argument("--data-root", default=None, help="folder with school.mat, lenk_data.mat...")
    p.add_argument("--allow-substitute", action="store_true",
                   help="use a labelled substitute when the real data file is missing")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="auto (default: CUDA when available, else CPU), cpu, cuda, cuda:N or mps "
                        "(= --set train.device=DEVICE)")
    p.add_argument("--amp", default=None, choices=("none", "bf16", "fp16"),
                   help="mixed precision: autocast in bf16 or fp16 (= --set train.amp=...)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def summarize(run_dir: str) -> str:
    """One paragraph: groups found, ARI, main metric, parameters."""
    from . import store

    manifest = store.read_manifest(run_dir)
    metrics = store.read_metrics(run_dir)
    names = manifest["task_names"]
    part = [int(v) for v in metrics["partition"].values]
    groups = {}
    for name, g in zip(names, part):
        groups.setdefault(g, []).append(name)
    lines = [f"run: {run_dir}  (dataset variant: {manifest['dataset'].get('variant')})",
             f"groups found ({len(groups)}):"]
    lines += [f"  {g}: {', '.join(members)}" for g, members in sorted(groups.items())]
    if "adjusted_rand_index" in metrics:
        lines.append(f"adjusted Rand index vs true groups: "
                     f"{float(metrics['adjusted_rand_index']):.3f}")
    main = metrics.attrs.get("main_metric")
    lines.append(f"test {main} (mean over tasks): {float(metrics['main']):.4f}")
    lines.append(f"parameters: {int(metrics['n_parameters'])}  "
                 f"wall time: {float(metrics['wall_time_s']):.1f} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        overrides = _parse_set(args.overrides)
        if args.data_root:
            overrides["data.data_root"] = args.data_root
        if args.allow_substitute:
            overrides["data.allow_substitute"] = True
        for key, value in (("train.device", args.device), ("train.amp", args.amp)):
            if value is not None:
                overrides[key] = value
        config = make_config(args.dataset, args.method, args.seed, args.profile, overrides,
                             out=args.out)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    from .devices import DeviceError
    from .train import train

    try:
        run_dir = train(config, resume=args.resume, progress=not args.no_progress)
    except DeviceError as err:  # raised before any training or writing
        sys.exit(f"error: {err}")
    if os.environ.get("RANK", "0") == "0":  # one summary for a torchrun of several processes
        print(summarize(str(run_dir)))
