"""Simulate a benchmark session on fleets from 2 hosts to 64 hosts x 8 GPUs: the two-tier
scheduler (pytest_inferbench/schedule/policy.py, unchanged) against device-exclusive FIFO and
plain pytest-xdist `--dist load` and `--dist worksteal`. Pure arithmetic on a simulated clock; the decision time is
the real time spent in the policy.

    python benchmarks/scheduler_simulation.py [--items 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

from pytest_inferbench.schedule.simulator import compare

FLEETS = [(2, 1), (4, 2), (8, 4), (16, 8), (64, 8)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{args.items} items (20% CPU, 10% of GPU items need gpu=h200 hosts, lognormal "
          f"durations median 10 s sigma 1, estimates off by a lognormal factor sigma 0.3); "
          f"co-running slowdown +70% per co-runner for `load` and `worksteal`")
    head = (f"{'fleet':>12} {'policy':>9} {'avg completion s':>17} {'makespan s':>11} "
            f"{'co-located':>10} {'misplaced':>9} {'decisions':>9} {'decide s':>9}")
    print(head)
    print("-" * len(head))
    for hosts, gpus in FLEETS:
        t0 = time.perf_counter()
        outcomes = compare(hosts, gpus, args.items, args.seed)
        base = {o.policy: o for o in outcomes}
        for o in outcomes:
            print(f"{f'{hosts}x{gpus}':>12} {o.policy:>9} {o.avg_completion_s:17.1f} "
                  f"{o.makespan_s:11.1f} {o.colocated_pairs:10d} {o.misplaced:9d} "
                  f"{o.decisions:9d} {o.decision_s:9.3f}")
        gain = base["fifo"].avg_completion_s / base["two-tier"].avg_completion_s
        print(f"{'':>12} two-tier vs fifo: {gain:.2f}x better average completion"
              + "".join(f", vs {p}: {base[p].avg_completion_s / base['two-tier'].avg_completion_s:.2f}x"
                        for p in ("load", "worksteal") if p in base)
              + f"  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
