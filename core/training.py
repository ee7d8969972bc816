"""One training run, from a config to a finished run store: :func:`train`.

``selective-sharing train --help`` (or ``python -m selective_sharing.core.train --help``) for
the command line. The pieces a run goes through live in modules named for them: the run
directory and its manifest (:mod:`~.rundir`), a baseline's partition phase
(:mod:`~.baselines`), the loop (:mod:`~.trainer`), the activation snapshot
(:mod:`~.activations`) and the final evaluation (:mod:`~.evaluation`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import store
from .activations import write_activations
from .baselines import baseline_partition
from .branched import BranchedModel
from .checkpoint import load_checkpoint
from .config import RunConfig
from .devices import check_compile, resolve_device
from .distributed import (
    DistInfo,
    agree,
    barrier,
    current,
    failure_message,
    init_from_env,
    launched,
    peers,
    rank_device,
    terminate_raises,
)
from .evaluation import finish_run
from .rundir import describe_defaults, load_data, open_run
from .trainer import Trainer, TrainingError, event_steps

__all__ = ["Trainer", "TrainingError", "event_steps", "main", "train"]


def train(config: RunConfig, *, data: Any = None, model: BranchedModel | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          callbacks: Sequence[Any] = ()) -> Path:
    """Train one run and write its store; return the run directory.

    Parameters
    ----------
    config : RunConfig
        Built with :func:`selective_sharing.core.config.make_config`; already validated.
    data : MTLData, optional
        Custom data (e.g. from ``selective_sharing.datasets.from_arrays``) instead of the
        registered dataset ``config.data.name``.
    model : BranchedModel, optional
        Your own trunk and estimator template (one head per task, one estimator each) instead of
        the built-in ``config.model``; trained by the same loop, with the same store, resume and
        metrics. Reload it afterwards with ``load_model(run_dir, model=...)``. Not for ``stl``.
    resume : bool
        Continue from ``config.out``'s checkpoint; gives the same events and metrics as an
        uninterrupted run, in a process with any thread count: the run's intra-op thread count
        is recorded in the manifest and used again.
    overwrite : bool
        Delete the run already in ``config.out`` (its manifest, events, history, metrics,
        activations and checkpoint; other files stay) and train it again. Without it, an
        existing run is an error that names both options. Not together with ``resume``.
    progress : bool
        A progress bar on stderr (off when stderr is not a terminal).
    callbacks : objects with an optional ``on_event(trainer, result)`` method.
        Called after each grouping event, once its event file and checkpoint are on disk (the
        store writes run on a background thread; with callbacks the loop waits for them at
        every event, without callbacks it never waits).

    Notes
    -----
    Process state that training changes (torch's thread count and global RNG) is restored when
    the call returns, so runs in one process do not influence each other.

    Started by ``torchrun --nproc_per_node=N`` (or in processes of an initialized
    ``torch.distributed`` group), every process trains one share of each global batch in
    ``DistributedDataParallel`` and rank 0 alone writes the store (see
    :mod:`~selective_sharing.core.distributed`); the manifest records the world size, and a
    resume needs the same one.
    """
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other: resume continues "
                         f"the run in {config.out}, overwrite deletes it; pass one of them")
    device = resolve_device(config.train.device)  # an absent device fails before anything
    check_compile(config.train.compile, device)  # so does a backend that cannot run here
    joins = launched() and not current().active  # started by torchrun: join its process group
    if joins:
        info, device = init_from_env(device)
    else:
        info = current()
        device = rank_device(device, info)
    try:
        return _train(config, data, model, resume, progress, callbacks, device, info,
                      overwrite=overwrite)
    finally:
        if joins:
            torch.distributed.destroy_process_group()


def _train(config: RunConfig, data: Any, model: BranchedModel | None, resume: bool,
           progress: bool, callbacks: Sequence[Any], device: torch.device, info: DistInfo,
           overwrite: bool = False) -> Path:
    data = load_data(config, data)
    config = _defaults_for(config, data)
    if progress and info.is_main:
        world = f" x {info.world} processes ({info.backend})" if info.active else ""
        print(f"{config.data.name}/{config.method}/seed{config.seed}: "
              f"{describe_defaults(config, device)}{world}", file=sys.stderr)
    run_dir = Path(config.out)
    threads_before = torch.get_num_threads()
    with contextlib.ExitStack() as held, torch.random.fork_rng(devices=[]):
        # rank 0 locks and opens the store; the others learn the outcome (or its error)
        status, threads = agree(info, lambda: open_run(config, data, model, resume, device,
                                                       info, held, overwrite))
        if status == "complete":
            return run_dir  # --resume of a finished run: nothing to do
        peer_list = peers(info)
        # the SIGTERM handler stays in place while a failure is recorded: torchrun's SIGTERM,
        # sent when another rank has died, would otherwise kill this rank (default action)
        # between a collective's error and the manifest's "failed"
        with terminate_raises(info) as sigterm:
            try:
                torch.set_num_threads(threads)
                _fit_run(config, data, model, resume, progress, callbacks, run_dir, info)
            except BaseException as err:
                sigterm.hold()
                if info.is_main:
                    message = (failure_message(err, info, peer_list) if info.active
                               else f"{type(err).__name__}: {err}")
                    try:
                        store.update_manifest(run_dir, status="failed", error=message)
                    except Exception as note:  # e.g. disk full: keep the original error on top
                        err.add_note(f"(could not mark {run_dir} as failed either: {note})")
                raise
            finally:
                torch.set_num_threads(threads_before)
    return run_dir


def _fit_run(config: RunConfig, data: Any, model: BranchedModel | None, resume: bool,
             progress: bool, callbacks: Sequence[Any], run_dir: Path, info: DistInfo) -> None:
    """Decide a baseline's partition, train, snapshot the activations and evaluate (rank 0
    writes; the other ranks of a data-parallel run wait for it)."""
    partition, phase = baseline_partition(config, data, run_dir, progress, model)
    trainer = Trainer(config, data, callbacks, assignment=partition, model=model,
                      run_dir=run_dir)
    if resume and trainer.paths.checkpoint.exists():
        trainer.load_state_dict(load_checkpoint(trainer.paths.checkpoint))
    else:  # a new run, or one killed before its first checkpoint: train from step 0
        trainer.counters.update(phase)
    try:
        trainer.fit(progress and info.is_main)
        trainer.flush()  # the queued store writes land before anything else is written
        if info.is_main:  # rank 0 evaluates and writes; the others wait for it
            write_activations(trainer, "final")
            finish_run(trainer)
        barrier(info)
    except BaseException as err:  # the writes still queued are finished, the first error kept
        trainer.sharing.close(err)
        raise
    # a user's model keeps no hook of this run; the background writer is drained and stopped
    trainer.sharing.close()


def _defaults_for(config: RunConfig, data: Any) -> RunConfig:
    """The config with the defaults of the data's input kind, when ``make_config`` could not
    know it: a dataset without a registered profile built with the vector defaults whose data
    turn out to be images gets the image defaults, with the same overrides on top."""
    if config.defaults_from != "generic_vector" or data.input_kind != "image":
        return config
    from .config import make_config

    return make_config(config.data.name, config.method, config.seed, config.profile,
                       overrides=config.overrides, out=config.out, input_kind="image")


def main(argv: Sequence[str] | None = None) -> None:
    """``selective-sharing-train`` / ``python -m selective_sharing.core.train``: the ``train``
    command (:mod:`~.cli`, imported only here so that the library never loads the command)."""
    from .cli import main as cli_main

    cli_main(argv)
