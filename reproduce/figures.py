"""Per-run figures from a run store alone (no torch): grouping timeline, a distance heatmap with
its dendrogram and a factor-space scatter per event, learning curves, parameter count, and a
threshold sweep (number of groups against the threshold, by counterfactual replay), and the
per-task loss around each event.

    python reproduce/figures.py RUN_DIR --out figures/ [--embedding pca|umap] [--max-events N]
    python reproduce/figures.py runs/mnist_context/ss_similarity/seed0 --readme

Writes PNG and PDF files into ``--out`` and prints the exact-replay verdict and each written
path. ``--readme`` instead writes only the README's figure, the loss jump after the first
event's ``merge=average`` (``reproduce/readme_figures/post_merge_loss.png``, under 150 KB).
Runtime: a few seconds per event on 2 CPU cores (UMAP adds about 20 s of first import).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selective_sharing.analysis import (
    draw_run_figures,
    load_run,
    plot_loss_around_event,
    replay,
    save_figure,
)

README_FIGURES = Path(__file__).resolve().parent / "readme_figures"
README_DPI = 110  # keeps post_merge_loss.png under 150 KB


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a run directory (holding manifest.json)")
    p.add_argument("--out", type=Path, default=Path("figures"), help="output folder")
    p.add_argument(
        "--embedding",
        choices=("pca", "umap"),
        default="pca",
        help="2-D embedding of the factor-space scatter",
    )
    p.add_argument(
        "--max-events",
        type=int,
        default=None,
        help="draw the per-event figures of at most this many events",
    )
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument(
        "--readme",
        action="store_true",
        help=f"write only the README figure (loss around event 0) into {README_FIGURES}",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tree = load_run(args.run_dir, activations=False)
    if args.readme:
        fig = plot_loss_around_event(tree, event=0)
        for path in save_figure(fig, README_FIGURES, "post_merge_loss", ["png"], dpi=README_DPI):
            print(f"{path} ({path.stat().st_size / 1e3:.0f} KB)")
        return 0
    report = replay(tree)
    verdict = "exact" if report.matched else "MISMATCH"
    print(f"replay: {verdict} ({len(report.events)} events, {report.seconds:.3f} s)")
    for event in report.events:
        if not event.matched:
            print(f"  event {event.index} differs in {', '.join(event.mismatched)}")
    paths = draw_run_figures(
        tree, args.out, formats=args.formats, embedding=args.embedding, max_events=args.max_events
    )
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
