"""Decision latency of one grouping event (budget: 139 entities in milliseconds; README, "Performance").

Times what a training step pays: ``grouping_event(..., record=False)`` (median of ``repeats``
after one warm-up), which decides without the record-only pooled k-means, on random
``(E, 64, 128)`` summed gradients with planted structure: 5 groups, each a random rank-2 matrix
scaled per entity, plus Gaussian noise. Reports the wall time (median and min), the process CPU
time (median; the event runs on one thread, so on a busy shared machine this is its honest
cost), the groups found and their adjusted Rand index against the planted groups; then, apart,
the CPU time of the complete record (``record=True``, what replay and analysis compute) and of
``complete_record`` (the k-means the store writer adds to a ``record=False`` result, off the
training step).

    python reproduce/bench_decision.py [--strategy similarity] [--repeats 5]

``reproduce/bench.py`` imports :func:`decision_latency` for its decision rows (``cpu_s`` and
``wall_s``: the training step's decision).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from selective_sharing.core.grouping import GroupingConfig, complete_record, grouping_event
from sklearn.metrics import adjusted_rand_score

ENTITIES = (10, 40, 139, 500)


def planted(n_entities: int, seed: int, n_groups: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Summed gradients ``(n_entities, 64, 128)`` float32 and their planted groups."""
    rng = np.random.default_rng(seed)
    bases = rng.standard_normal((n_groups, 64, 2)) @ rng.standard_normal((n_groups, 2, 128))
    truth = np.arange(n_entities) % n_groups
    scale = rng.uniform(0.5, 2.0, (n_entities, 1, 1))
    noise = rng.standard_normal((n_entities, 64, 128))
    return (bases[truth] * scale + 0.5 * noise).astype(np.float32), truth


def time_event(n_entities: int, config: GroupingConfig, repeats: int) -> dict[str, float]:
    """``{wall_s, wall_min_s, cpu_s, record_cpu_s, complete_cpu_s, groups, ari, chosen}`` of one
    event on planted inputs: ``wall_s``/``cpu_s`` time ``record=False`` (the training step),
    ``record_cpu_s`` times ``record=True`` and ``complete_cpu_s`` ``complete_record``. The three
    calls alternate, so a change of the machine's load touches each alike."""
    summed, truth = planted(n_entities, seed=n_entities)
    assignment = np.arange(n_entities)
    lean = grouping_event(summed, assignment, None, config, record=False)  # warm-up
    complete_record(lean)
    wall, cpu, record_cpu, complete_cpu = [], [], [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        lean = grouping_event(summed, assignment, None, config, record=False)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        start_cpu = time.process_time()
        complete_record(lean)
        complete_cpu.append(time.process_time() - start_cpu)
        start_cpu = time.process_time()
        grouping_event(summed, assignment, None, config)
        record_cpu.append(time.process_time() - start_cpu)
    found = lean.assignment_after
    return {
        "wall_s": float(np.median(wall)),
        "wall_min_s": float(min(wall)),
        "cpu_s": float(np.median(cpu)),
        "record_cpu_s": float(np.median(record_cpu)),
        "complete_cpu_s": float(np.median(complete_cpu)),
        "groups": int(found.max()) + 1,
        "ari": float(adjusted_rand_score(truth, found)),
        "chosen": lean.chosen_distance,
    }


def decision_latency(
    entities: tuple[int, ...] = ENTITIES, repeats: int = 5, strategy: str = "similarity"
) -> dict[int, dict[str, float]]:
    """:func:`time_event` for each number of entities."""
    config = GroupingConfig(strategy=strategy)
    return {e: time_event(e, config, repeats) for e in entities}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="similarity")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"strategy={args.strategy}, median of {args.repeats}; decision = record=False (the "
          "training step), record = record=True, complete = complete_record (k-means, off-step)")
    print(f"{'E':>5} {'median ms':>10} {'min ms':>8} {'cpu ms':>8} {'record cpu':>11} "
          f"{'complete cpu':>13} {'groups':>7} {'ARI':>6} chosen")
    for n_entities, r in decision_latency(repeats=args.repeats, strategy=args.strategy).items():
        print(
            f"{n_entities:>5} {1e3 * r['wall_s']:>10.1f} {1e3 * r['wall_min_s']:>8.1f} "
            f"{1e3 * r['cpu_s']:>8.1f} {1e3 * r['record_cpu_s']:>11.1f} "
            f"{1e3 * r['complete_cpu_s']:>13.1f} {r['groups']:>7} {r['ari']:>6.2f} {r['chosen']}"
        )


if __name__ == "__main__":
    main()
