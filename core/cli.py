"""Command line: ``selective-sharing COMMAND`` (train, config, explain, replay, table2, figures,
figure6) and ``python -m selective_sharing.core.train`` (the train command).

Every error is one line on stderr, ``error: Type: message``, with exit code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .config import METHODS, PROFILES, ConfigError, make_config


def parse_set(items: Sequence[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as a dict of strings (later items win); a malformed item
    raises :class:`ConfigError` naming it. One parser for every command and reproduce/ script."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid --set {item!r}: expected KEY=VALUE, e.g. train.steps=30")
        out[key.strip()] = value.strip()
    return out


def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of one training run (``selective-sharing train`` and
    ``python -m selective_sharing.core.train``)."""
    p.add_argument("--dataset", default="synthetic", help="registered dataset name")
    p.add_argument("--method", default="ss_similarity", choices=METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/DATASET/METHOD/seedN)")
    p.add_argument("--profile", default="quick", choices=PROFILES)
    add_set_option(p, "override a config value, e.g. --set distance=cosine --set train.steps=100 "
                "--set noise=0.5 (repeatable; `selective-sharing config` lists every key)")
    p.add_argument("--data-root", default=None, help="folder with school.mat, lenk_data.mat...")
    p.add_argument("--allow-substitute", action="store_true",
                   help="use a labelled substitute when the real data file is missing")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="auto (default: CUDA when available, else CPU), cpu, cuda, cuda:N or mps "
                        "(= --set train.device=DEVICE)")
    p.add_argument("--amp", default=None, choices=("none", "bf16", "fp16"),
                   help="mixed precision: autocast in bf16 or fp16 (= --set train.amp=...)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out and train it again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def add_set_option(p: argparse.ArgumentParser, text: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option (into ``args.overrides``, a list of strings),
    one spelling for every command and reproduce/ script; ``text`` is its help."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=text)


def _add_debug(p: argparse.ArgumentParser, sub: bool = False) -> None:
    # in a subcommand too (`selective-sharing train ... --debug`); SUPPRESS there, so that the
    # subcommand's default does not overwrite `selective-sharing --debug train ...`
    p.add_argument("--debug", action="store_true", help="show the traceback of an error",
                   **({"default": argparse.SUPPRESS} if sub else {}))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m selective_sharing.core.train",
        description="Train one Selective Sharing (or baseline) run and write its run store.")
    add_train_arguments(p)
    _add_debug(p)
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


def _train_command(args: argparse.Namespace) -> None:
    overrides = parse_set(args.overrides)
    if args.data_root:
        overrides["data.data_root"] = args.data_root
    if args.allow_substitute:
        overrides["data.allow_substitute"] = True
    for key, value in (("train.device", args.device), ("train.amp", args.amp)):
        if value is not None:
            overrides[key] = value
    config = make_config(args.dataset, args.method, args.seed, args.profile, overrides,
                         out=args.out)
    from .training import train

    run_dir = train(config, resume=args.resume, overwrite=args.overwrite,
                    progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # one summary for a torchrun of several processes
        print(summarize(str(run_dir)))


def _config_command(args: argparse.Namespace) -> None:
    from .config import describe_keys

    rows = describe_keys(args.dataset, args.method, args.profile, parse_set(args.overrides))
    width = max(len(k) for k, _, _ in rows)
    print(f"# {args.method} on {args.dataset}, profile {args.profile}: every --set key, its "
          "value, and what it accepts")
    for key, value, allowed in rows:
        shown = "null" if value is None else repr(value)
        print(f"{key:<{width}}  = {shown:<28}  # {allowed}")


def _counterfactual(items: Sequence[str]) -> dict:
    from .config import _coerce

    return {k: _coerce(v) for k, v in parse_set(items).items()}


def _explain_command(args: argparse.Namespace) -> None:
    from ..analysis import explain

    print(explain(args.run, args.task_a, args.task_b, **_counterfactual(args.overrides)).text)


def _replay_command(args: argparse.Namespace) -> None:
    from ..analysis import replay

    print(replay(args.run, chain=not args.no_chain, **_counterfactual(args.overrides)))


def _script_command(args: argparse.Namespace) -> None:
    """``table2`` / ``figures`` / ``figure6``: the scripts of the checkout's ``reproduce/``."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "reproduce" / f"{args.command}.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: `selective-sharing {args.command}` runs the "
                                "reproduce/ scripts of a source checkout (pip install -e .)")
    sys.argv = [str(script), *args.rest]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")


def cli_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selective-sharing",
        description="Selective Sharing: train runs, list the config, explain and replay "
                    "grouping decisions, reproduce the paper's table and figures.")
    _add_debug(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = add_train_arguments(sub.add_parser("train", help="train one run and write its store"))
    c = sub.add_parser("config", help="every --set key with its value and allowed values")
    c.add_argument("--dataset", default="synthetic")
    c.add_argument("--method", default="ss_similarity", choices=METHODS)
    c.add_argument("--profile", default="quick", choices=PROFILES)
    add_set_option(c, "show the config with these overrides applied")
    e = sub.add_parser("explain", help="why two tasks were merged (or not) in a run")
    e.add_argument("run")
    e.add_argument("task_a")
    e.add_argument("task_b")
    add_set_option(e, "explain a counterfactual instead, e.g. --set threshold=0.5")
    r = sub.add_parser("replay", help="recompute a run's decisions, or a counterfactual")
    r.add_argument("run")
    add_set_option(r, "counterfactual decision-rule settings, e.g. --set distance=cosine")
    r.add_argument("--no-chain", action="store_true",
                   help="replay each event from its recorded inputs (counterfactuals only)")
    for parser in (t, c, e, r):
        _add_debug(parser, sub=True)
    for name, text in (("table2", "reproduce Table 2 (reproduce/table2.py)"),
                       ("figures", "the run figures (reproduce/figures.py)"),
                       ("figure6", "Figure 6 (reproduce/figure6.py)")):
        sub.add_parser(name, help=f"{text}; its own options follow", add_help=False)
    return p


COMMANDS = {"train": _train_command, "config": _config_command, "explain": _explain_command,
            "replay": _replay_command, "table2": _script_command, "figures": _script_command,
            "figure6": _script_command}


def _error_line(err: BaseException) -> str:
    """One line: the error's type and its message (which says what to fix)."""
    return "error: " + " ".join(f"{type(err).__name__}: {err}".split())


def _run(command: object, args: argparse.Namespace) -> None:
    """Run a command; an error is one line on stderr and exit code 2 (``--debug``: traceback)."""
    try:
        command(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as err:  # noqa: BLE001 - every error is reported, in one line
        if getattr(args, "debug", False):
            raise
        print(_error_line(err), file=sys.stderr)
        sys.exit(2)


SCRIPTS = ("table2", "figures", "figure6")


def cli(argv: Sequence[str] | None = None) -> None:
    """``selective-sharing COMMAND ...`` (``selective-sharing --help`` lists the commands)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] in SCRIPTS:  # the script parses its own arguments
        cli_parser().parse_args(argv[:first + 1])  # (global options are still checked)
        args = argparse.Namespace(command=argv[first], rest=argv[first + 1:],
                                  debug="--debug" in argv[:first])
    else:
        args = cli_parser().parse_args(argv)
    _run(COMMANDS[args.command], args)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m selective_sharing.core.train``: the ``train`` command."""
    _run(_train_command, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
