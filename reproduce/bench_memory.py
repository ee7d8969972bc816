"""Peak memory against dataset size for streamed image data (README, "GPU and large data").

    python reproduce/bench_memory.py [--sizes 2000 20000] [--image-size 32] [--steps 100]
                                     [--in-memory] [--out results/bench_memory.json]

For each size, writes a generated CelebA fixture directory of that many images (the real
on-disk format; generated pixels, labelled as such) and trains one ``ss_similarity`` run on
*all* its images (profile ``full``: no cap) in a fresh subprocess, with
``num_workers=2`` DataLoader workers. Reports the peak resident set size of the training
process (``VmHWM``) and of its largest worker (``RUSAGE_CHILDREN``), and the difference
between the sizes: the budget is < 150 MB more for 10x the images.

``--in-memory`` adds, for comparison, the same runs on the data decoded whole into arrays
first (the loaders' behaviour before streaming), which is what the budget guards against.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Peak RSS growth allowed for 10x the images (streamed), MB.
BUDGET_MB = 150

CHILD = r"""
import json, resource, sys, time
import numpy as np
from selective_sharing.core import make_config, train
from selective_sharing.core import store
from selective_sharing.datasets import MTLData, load_dataset
root, out, image_size, steps, in_memory = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
over = {"root": root, "image_size": image_size,
        "train.steps": steps, "warmup_steps": steps // 2, "batch_size": 64, "num_workers": 2,
        "train.device": "cpu", "eval_batch_size": 256}
# profile "full": no cap on the images read (quick reads at most 2000 train / 500 test)
config = make_config("celeba", "ss_similarity", 0, profile="full", overrides=over, out=out)
data = None
if in_memory:  # the pre-streaming behaviour: every image decoded into one array
    s = load_dataset("celeba", profile="full", root=root, image_size=image_size)
    data = MTLData(name="celeba", x_train=s.inputs("train", range(len(s.train))),
                   y_train=s.y_train, m_train=s.m_train,
                   x_test=s.inputs("test", range(len(s.test))), y_test=s.y_test,
                   m_test=s.m_test, tasks=s.tasks, provenance=s.provenance,
                   main_metric=s.main_metric)
start = time.perf_counter()
run = train(config, data=data, progress=False)
wall = time.perf_counter() - start
status = open("/proc/self/status").read().split("\n")
hwm = next(int(l.split()[1]) for l in status if l.startswith("VmHWM"))
print(json.dumps({"main_peak_kb": hwm,
                  "workers_peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "wall_s": wall, "n_train": store.read_manifest(run)["dataset"]["n_train"]}))
"""


def measure(root: Path, out: Path, image_size: int, steps: int, in_memory: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(out), str(image_size),
                           str(steps), "1" if in_memory else "0"],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"training run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sizes: list[int], image_size: int = 32, steps: int = 100,
        in_memory: bool = False) -> dict:
    """Peak memory of one streamed training run per size (and in memory, if asked); the
    growth from the smallest to the largest size is ``growth_mb_streamed``."""
    from selective_sharing.datasets import write_celeba_fixture

    rows = []
    with tempfile.TemporaryDirectory(prefix="ss_memory_") as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            root = write_celeba_fixture(Path(tmp) / f"celeba{n}", n_images=n, seed=0)
            print(f"{n} generated images written in {time.perf_counter() - t0:.0f} s", flush=True)
            for mode in ("streamed", "in_memory") if in_memory else ("streamed",):
                r = measure(root, Path(tmp) / f"run_{n}_{mode}", image_size, steps,
                            mode == "in_memory")
                r.update(images=n, mode=mode)
                rows.append(r)
                print(f"{mode:9s} {n:6d} images ({r['n_train']} train): peak RSS main "
                      f"{r['main_peak_kb'] / 1024:.0f} MB, largest worker "
                      f"{r['workers_peak_kb'] / 1024:.0f} MB, {r['wall_s']:.0f} s", flush=True)
    result = {"rows": rows, "image_size": image_size, "steps": steps, "budget_mb": BUDGET_MB,
              "data": "generated CelebA-format fixture images (not real CelebA)"}
    for mode in sorted({r["mode"] for r in rows}):
        sel = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["images"])
        growth = (sel[-1]["main_peak_kb"] - sel[0]["main_peak_kb"]) / 1024
        result[f"growth_mb_{mode}"] = growth
        result["sizes"] = [sel[0]["images"], sel[-1]["images"]]
        print(f"{mode}: peak RSS grows by {growth:.0f} MB from {sel[0]['images']} to "
              f"{sel[-1]['images']} images (budget: < {BUDGET_MB} MB for the streamed path)")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--in-memory", action="store_true", help="also measure arrays decoded whole")
    p.add_argument("--out", default="results/bench_memory.json")
    args = p.parse_args()
    result = run(args.sizes, args.image_size, args.steps, args.in_memory)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
