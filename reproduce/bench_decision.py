"""Decision latency of one grouping event (DESIGN section 7: "139 entities in milliseconds").

Times ``grouping_event`` (median of 5 after one warm-up) on random ``(E, 64, 128)`` summed
gradients with planted structure: 5 groups, each a random rank-2 matrix scaled per entity, plus
Gaussian noise. Prints one row per E with the wall time (median and min), the process CPU time (median; the
event runs on one thread, so on a busy shared machine this is the honest cost), the groups found
and their adjusted Rand index against the planted groups.

    python reproduce/bench_decision.py [--strategy similarity] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from selective_sharing.core.grouping import GroupingConfig, grouping_event
from sklearn.metrics import adjusted_rand_score


def planted(n_entities: int, seed: int, n_groups: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Summed gradients ``(n_entities, 64, 128)`` float32 and their planted groups."""
    rng = np.random.default_rng(seed)
    bases = rng.standard_normal((n_groups, 64, 2)) @ rng.standard_normal((n_groups, 2, 128))
    truth = np.arange(n_entities) % n_groups
    scale = rng.uniform(0.5, 2.0, (n_entities, 1, 1))
    noise = rng.standard_normal((n_entities, 64, 128))
    return (bases[truth] * scale + 0.5 * noise).astype(np.float32), truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="similarity")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = GroupingConfig(strategy=args.strategy)
    print(f"strategy={args.strategy} distance={config.distance}, median of {args.repeats}")
    print(f"{'E':>5} {'median ms':>10} {'min ms':>8} {'cpu ms':>8} {'groups':>7} {'ARI':>6} chosen")
    for n_entities in (10, 40, 139, 500):
        summed, truth = planted(n_entities, seed=n_entities)
        assignment = np.arange(n_entities)
        result = grouping_event(summed, assignment, None, config)  # warm-up
        times, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = grouping_event(summed, assignment, None, config)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        found = result.assignment_after
        print(
            f"{n_entities:>5} {1e3 * np.median(times):>10.1f} {1e3 * min(times):>8.1f} "
            f"{1e3 * np.median(cpu):>8.1f} "
            f"{found.max() + 1:>7} {adjusted_rand_score(truth, found):>6.2f} "
            f"{result.chosen_distance}"
        )


if __name__ == "__main__":
    main()
