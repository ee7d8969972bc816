"""Figure 6, the activation-region study, from activation snapshots only (no torch).

    python reproduce/figure6.py RUN_DIRS... --out figures/ [--embedding umap|pca]

Give runs of several methods on the same dataset and seed (e.g. stl, mtl and ss_similarity on
mnist_context); globs and folders of runs work too. Writes ``figure6.png``/``.pdf`` (UMAP of
the shared representation coloured by each task's label; per-group saliency heatmaps; the
numbers), ``figure6.csv`` (per run and task: saliency share inside the region the task needs,
its chance level, kNN label consistency, linear-probe score) and ``figure6_summary.csv`` (mean
over tasks per run), and prints the summary. Runtime: about 30 s on 2 CPU cores with UMAP
(mostly its first import), a few seconds with PCA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from selective_sharing.analysis import find_runs, summarize_figure6, write_figure6


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories, globs or folders of runs")
    p.add_argument("--out", type=Path, default=Path("figures"), help="output folder")
    p.add_argument("--embedding", choices=("umap", "pca"), default="umap")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument("--name", default="figure6", help="base name of the written files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    runs = find_runs(args.runs)
    if not runs:
        print(f"no runs found in {args.runs}", file=sys.stderr)
        return 2
    paths = write_figure6(
        runs, args.out, embedding=args.embedding, formats=args.formats, name=args.name
    )
    summary = summarize_figure6(pd.read_csv(paths["csv"][0]))
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(summary.to_string(index=False))
    for path in paths["figure"] + paths["csv"]:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
